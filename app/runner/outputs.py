"""Stage inputs and outputs: what a stage gets in its environment from the session
(``VC_PARAM_<KEY>``) and from earlier stages (``VC_OUTPUT_<STAGE>_<KEY>``), and the
``::output KEY=VALUE`` lines by which a stage reports an output.

Decisions:

* Values only ever reach a stage as environment variables, never in its command line, so
  no value can be interpreted by the shell: ``$(touch x)`` arrives as those 10 characters.
* An output line is logged like any other line (it is also what the stage said). It is
  recognised at the very start of a line of stdout or stderr: ``::output`` then spaces, the
  key, ``=``, and the value, which is the rest of the line exactly (spaces included, and
  empty allowed). The key is an identifier (letters, digits, ``_``, not starting with a
  digit, at most 64 characters); a line with another key, or without ``=``, is ignored
  with a WARNING in the session log. A value longer than :data:`MAX_OUTPUT_BYTES` (UTF-8)
  is cut to it, with a WARNING. A key reported again replaces its value.
* A stage instance keeps at most :data:`MAX_OUTPUTS` keys (each new key past it is ignored
  with a WARNING): every key becomes a variable of every later stage, and an environment
  has to fit the system's limit for a new process.
* Outputs belong to an attempt: a new attempt (a retry, a re-run after a crash) starts
  without any, and only a COMPLETED stage's outputs reach later stages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from store.names import (
    KEY_RULE,
    MATRIX_PREFIX,
    OUTPUT_PREFIX,
    PARAM_PREFIX,
    is_variable_key,
    output_variable,
    param_text,
    param_variable,
    short_repr,
)

OUTPUT_TAG = "::output"
#: Longest value kept, in bytes of UTF-8: an output is a value to hand on, not a payload.
MAX_OUTPUT_BYTES = 4096
#: Most keys one stage instance may report.
MAX_OUTPUTS = 64


def parse_output_line(text: str) -> tuple[str, str | None] | None:
    """``(key, value)`` of an output line, None for any other line; the value is None when
    the line has no ``=`` (a mistake worth a warning, not a line to take as output). The
    key is not checked here (see :class:`OutputRecorder`)."""
    if not text.startswith(OUTPUT_TAG):
        return None
    rest = text[len(OUTPUT_TAG) :]
    if not rest[:1].isspace():
        return None
    key, sep, value = rest.lstrip().partition("=")
    return (key, value) if sep else (key, None)


def _cut_utf8(value: str, limit: int) -> str:
    data = value.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return value
    return data[:limit].decode("utf-8", "ignore")


class OutputRecorder:
    """The outputs one attempt reports, collected from the output reader thread and
    read by the runner's thread (which stores them)."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self._lock = threading.Lock()
        self._outputs: dict[str, str] = {}
        self._changed = False

    def scan(self, texts: Iterable[str]) -> None:
        """Record the output lines among ``texts`` (one batch of a stage's lines)."""
        for text in texts:
            parsed = parse_output_line(text)
            if parsed is not None:
                self._record(*parsed)

    def _record(self, key: str, value: str | None) -> None:
        if value is None:
            self._warn(
                f"output line ignored: no '=' after {short_repr(key.rstrip())} "
                f"(write {OUTPUT_TAG} KEY=VALUE)"
            )
            return
        if not is_variable_key(key):
            self._warn(f"output line ignored: invalid key {short_repr(key)} (use {KEY_RULE})")
            return
        cut = _cut_utf8(value, MAX_OUTPUT_BYTES)
        if cut != value:
            size = len(value.encode("utf-8", "surrogateescape"))
            self._warn(
                f"output {key} cut to {MAX_OUTPUT_BYTES} bytes (it had {size:,}): an output "
                "is a value to hand on; write large data to a file and output its path"
            )
        with self._lock:
            if key not in self._outputs and len(self._outputs) >= MAX_OUTPUTS:
                self._warn(f"output {key} ignored: a stage keeps at most {MAX_OUTPUTS} outputs")
                return
            self._outputs[key] = cut
            self._changed = True

    def take_changes(self) -> dict[str, str] | None:
        """Every output so far if something changed since the last call, else None."""
        with self._lock:
            if not self._changed:
                return None
            self._changed = False
            return dict(self._outputs)

    def mark_unsaved(self) -> None:
        """The last changes could not be stored: hand them out again next time."""
        with self._lock:
            self._changed = True

    def outputs(self) -> dict[str, str]:
        with self._lock:
            return dict(self._outputs)


def stage_environment(
    base: Mapping[str, str],
    params: Mapping[str, Any],
    outputs: Iterable[tuple[str, Mapping[str, str]]],
) -> dict[str, str]:
    """``base`` without inherited ``VC_PARAM_*``/``VC_OUTPUT_*``/``VC_MATRIX_*`` variables
    (a vc run inside a stage must not see its parent's) and without ``VC_NOTIFY`` (its
    URLs hold secrets a stage has no use for, and a stage printing its environment would
    log them), plus the session's parameters and the outputs of the given stages, in
    order (a later stage's value wins a shared variable)."""
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith((PARAM_PREFIX, OUTPUT_PREFIX, MATRIX_PREFIX)) and k != "VC_NOTIFY"
    }
    for key, value in params.items():
        env[param_variable(key)] = param_text(value)
    for stage, values in outputs:
        for key, value in values.items():
            env[output_variable(stage, key)] = value
    return env
