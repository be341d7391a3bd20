"""Workflow definitions: loading, validating and snapshotting the YAML files in ``workflows/``.

Workflow files are written by hand and sometimes come from elsewhere, so this module treats them
as hostile input. The rules, and why:

- A file is refused before parsing when it is over 1 MiB, is not UTF-8, or holds a NUL or other
  control character: nothing legitimate needs them, and each would otherwise surface later as a
  confusing YAML, database or subprocess error.
- YAML is only *composed* (SafeLoader, libyaml when available); values are built here from the
  node graph, so no tag can construct an object and every node keeps its line. Aliases are
  followed while counting nodes, and the walk stops past :data:`MAX_NODES`, so an alias bomb
  ("billion laughs") costs a few milliseconds instead of all the memory of the machine.
- Every problem is one :class:`WorkflowError` whose text is a single line
  ``path:line: key.path: problem`` (list indexes in the key path are 0-based, like JSON paths),
  with user-written text escaped so that it can be printed on a terminal as is.
- String fields take the scalar exactly as written (``run: true`` is the shell's ``true``,
  ``DEBUG: yes`` in ``env`` is ``"yes"``), while number fields refuse YAML booleans (``yes``) and
  quoted numbers: a retry count that is secretly a string is a mistake worth reporting.
- ``null`` (or an empty value) for an optional key means "not set"; merge keys (``<<: *base``)
  are supported so stages can share settings; duplicate keys are errors, not "last one wins".
- Ids and stage names become file names and log paths, so they must pass
  :func:`validate_identifier`. Names and descriptions are stored exactly as given (``[bold]`` is
  just text; the front ends never render user text as markup).
- A few caps exist only so a value can always be snapshotted and handed to the runner:
  durations up to ten years (:data:`MAX_SECONDS`) and up to :data:`MAX_RETRIES` retries.

:meth:`WorkflowDefinition.to_dict` is the snapshot stored on a session. ``from_dict`` re-checks
it with the same rules (a snapshot is data from a database, possibly hand-edited) but ignores
keys it does not know, because on a shared PostgreSQL store a newer ``vc`` on another host may
have written keys this version has never heard of.
"""

from __future__ import annotations

import difflib
import heapq
import math
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

__all__ = [
    "DEFAULT_KILL_TIMEOUT",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "StageDefinition",
    "WorkflowDefinition",
    "WorkflowError",
    "discover_workflows",
    "find_workflow",
    "load_workflow_file",
    "load_workflow_text",
    "validate_identifier",
]

MAX_FILE_BYTES = 1024 * 1024
"""Workflow files (and texts) larger than this are refused without being parsed."""
MAX_NODES = 100_000
"""Most YAML nodes one definition may expand to, aliases followed: the alias-bomb fuse."""
MAX_DEPTH = 64
"""Deepest nesting accepted; a workflow needs about five levels."""
MAX_SECONDS = 10 * 365 * 86400.0
"""Longest duration accepted; far below what timers and ``threading`` can represent."""
MAX_RETRIES = 1000
"""Most retries accepted; more is a loop, not a retry policy."""
DEFAULT_KILL_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL when a stage is aborted or times out (DESIGN §6)."""
WORKFLOW_SUFFIXES = (".yaml", ".yml")
MAX_KNOWN_LISTED = 20
"""How many known names an "unknown workflow/stage" error lists before "and N more"."""

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Everything YAML 1.1 forbids in a stream (PyYAML's Reader rejects the same set); checked
# up front so the error can name the line and the character, for every loader.
_NOT_YAML_TEXT = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_WORKFLOW_KEYS = ("id", "name", "description", "stages")
_STAGE_KEYS = (
    "name",
    "run",
    "timeout",
    "retries",
    "kill_timeout",
    "env",
    "cwd",
    "needs",
    "checklist",
    "description",
)

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MERGE, _MAP, _SEQ = (_TAG + t for t in ("timestamp", "merge", "map", "seq"))
# Tags whose scalars are kept as the text written: dates, and the YAML 1.1 oddities that a
# plain `<<` or `=` resolves to outside a merge (`run: cat <<` must stay a command).
_TEXT_TAGS = (_STR, _TIMESTAMP, _MERGE, _TAG + "value")
# Only its scalar helpers are used (int/float/bool parsing with YAML 1.1 rules); they keep no
# state, so one shared instance is safe across threads.
_SCALARS = SafeConstructor()
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- errors -----------------------------------------------------------------------------------


class WorkflowError(Exception):
    """A workflow definition (or id) that cannot be used, located as precisely as possible.

    ``str(error)`` is the whole user-facing line; ``problem`` is the bare description, for
    callers that place ``path``/``line``/``key`` themselves (a table, JSON output).
    """

    exit_code = 1  # the CLI maps store errors to exit codes through this attribute

    def __init__(
        self,
        problem: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = path
        self.line = line
        self.key = key or None
        super().__init__(self._render())

    def _render(self) -> str:
        parts: list[str] = []
        if self.path is not None:
            location = _printable(self.path)
            parts.append(f"{location}:{self.line}" if self.line is not None else location)
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.key:
            parts.append(_printable(self.key))
        parts.append(_printable(self.problem))
        return ": ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); keep the location across processes (workers).
        return (_rebuild_error, (self.problem, self.path, self.line, self.key))


def _rebuild_error(
    problem: str, path: str | None, line: int | None, key: str | None
) -> WorkflowError:
    return WorkflowError(problem, path=path, line=line, key=key)


def _printable(text: str) -> str:
    """Escape what a terminal would interpret (newlines, ESC, bidi controls …) the way repr()
    does, without quotes, so an error stays one line and shows the text literally."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _short_repr(value: str, limit: int = 60) -> str:
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- identifiers ------------------------------------------------------------------------------


def validate_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is safe as one path component (workflow ids and stage names become
    log file names); otherwise raise :class:`WorkflowError` saying why.

    Allowed: 1 to 128 ASCII letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit,
    without ``..``. The value is shown repr-escaped so control characters are visible.
    """
    if not isinstance(value, str):
        raise WorkflowError(f"invalid {what} {value!r}: expected a string")
    if _IDENTIFIER.fullmatch(value) and ".." not in value:
        return value
    if not value:
        reason = "must not be empty"
    elif len(value) > 128:
        reason = "must be at most 128 characters long"
    elif ".." in value:
        reason = "must not contain '..'"
    elif bad := list(dict.fromkeys(c for c in value if not _IDENTIFIER.fullmatch("a" + c))):
        listed = ", ".join(repr(c) for c in bad[:10]) + (" …" if len(bad) > 10 else "")
        reason = f"may contain only ASCII letters, digits, '.', '_' and '-', not {listed}"
        if "/" in bad or "\\" in bad:
            reason += " (a name, not a path)"
    else:
        reason = "must start with an ASCII letter or digit"
    raise WorkflowError(f"invalid {what} {_short_repr(value)}: {reason}")


# -- definitions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageDefinition:
    """One stage as defined in a workflow file (a task if it has ``run``, else a manual gate)."""

    name: str
    run: str | None = None
    timeout: float | None = None
    retries: int = 0
    kill_timeout: float = DEFAULT_KILL_TIMEOUT
    # hash=False keeps the frozen dataclass hashable despite the dict (equality still uses it).
    env: dict[str, str] = field(default_factory=dict, hash=False)
    cwd: str | None = None
    needs: tuple[str, ...] = ()
    checklist: tuple[str, ...] = ()
    description: str | None = None

    @property
    def stage_type(self) -> Literal["manual", "task"]:
        return "manual" if self.run is None else "task"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able snapshot of this stage (also the stage instance's ``config``)."""
        return {
            "name": self.name,
            "run": self.run,
            "timeout": self.timeout,
            "retries": self.retries,
            "kill_timeout": self.kill_timeout,
            "env": dict(self.env),
            "cwd": self.cwd,
            "needs": list(self.needs),
            "checklist": list(self.checklist),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageDefinition:
        """Rebuild a stage from :meth:`to_dict` output, re-checked with the file rules."""
        checker = _Checker(path=None, strict_keys=False)
        return checker.stage(_from_plain(data, checker), "").definition


@dataclass(frozen=True)
class WorkflowDefinition:
    """A validated workflow: stage names are unique and ``needs`` form no cycle."""

    id: str
    name: str
    description: str | None = None
    stages: tuple[StageDefinition, ...] = ()
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able snapshot stored on a session, so later edits of the file never change
        a session already created. ``path`` is kept as a record of where it came from."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "stages": [s.to_dict() for s in self.stages],
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowDefinition:
        """Rebuild a definition from :meth:`to_dict` output, re-checked with the file rules."""
        checker = _Checker(path=None, strict_keys=False)
        definition = checker.workflow(_from_plain(data, checker), default_id=None)
        path = data.get("path") if isinstance(data, Mapping) else None
        if isinstance(path, str):
            definition = _replace_path(definition, path)
        return definition

    def stage(self, name: str) -> StageDefinition:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def execution_order(self) -> list[str]:
        """Stage names in dependency order; among stages free to run, file order wins (so a
        workflow without ``needs`` runs top to bottom)."""
        index: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            index.setdefault(stage.name, i)
        waiting = [0] * len(self.stages)
        dependents: list[list[int]] = [[] for _ in self.stages]
        for i, stage in enumerate(self.stages):
            for need in dict.fromkeys(stage.needs):
                if need not in index:
                    raise WorkflowError(
                        f"stage {stage.name!r} needs unknown stage {need!r}", path=self.path
                    )
                waiting[i] += 1
                dependents[index[need]].append(i)
        ready = [i for i, count in enumerate(waiting) if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(self.stages[i].name)
            for j in dependents[i]:
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
        if len(order) < len(self.stages):
            cycle = _find_cycle([[index[n] for n in s.needs] for s in self.stages]) or []
            names = " -> ".join(self.stages[i].name for i in cycle)
            raise WorkflowError(f"dependency cycle: {names}", path=self.path)
        return order


def _replace_path(definition: WorkflowDefinition, path: str | None) -> WorkflowDefinition:
    return WorkflowDefinition(
        id=definition.id,
        name=definition.name,
        description=definition.description,
        stages=definition.stages,
        path=path,
    )


def _find_cycle(needs: list[list[int]]) -> list[int] | None:
    """A dependency cycle as stage indexes ``[a, b, …, a]`` (each needs the next), starting at
    its earliest stage in file order; None if there is none. Iterative: a chain of thousands of
    stages must not hit the recursion limit."""
    state = [0] * len(needs)  # 0 unseen, 1 on the current path, 2 done
    for start in range(len(needs)):
        if state[start]:
            continue
        state[start] = 1
        stack: list[tuple[int, int]] = [(start, 0)]
        while stack:
            node, edge = stack[-1]
            if edge < len(needs[node]):
                stack[-1] = (node, edge + 1)
                nxt = needs[node][edge]
                if state[nxt] == 1:
                    path = [n for n, _ in stack]
                    cycle = path[path.index(nxt) :]
                    first = cycle.index(min(cycle))
                    cycle = cycle[first:] + cycle[:first]
                    return [*cycle, cycle[0]]
                if state[nxt] == 0:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                stack.pop()
    return None


# -- the value tree both YAML and snapshots are checked from ----------------------------------


@dataclass(slots=True)
class _Node:
    """A parsed value with the line it came from (None for snapshots).

    Scalars keep ``raw``, the text as written, because string fields use it verbatim.
    """

    kind: Literal["map", "seq", "scalar"]
    line: int | None
    entries: dict[str, tuple[int | None, _Node]] = field(default_factory=dict)  # map
    items: list[_Node] = field(default_factory=list)  # seq
    value: str | int | float | bool | None = None  # scalar
    raw: str = ""  # scalar


class _Budget:
    """The node-count, depth and recursion guards of the builders. YAML is measured first
    (:func:`_measure`), so for YAML this is a second line of defence; snapshots rely on it."""

    def __init__(self, fail: Callable[[int | None, str, str], NoReturn]) -> None:
        self.fail = fail
        self.count = 0
        self.active: set[int] = set()

    def enter(self, obj: object, line: int | None, key: str, depth: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(
                line,
                key,
                f"more than {MAX_NODES:,} values once aliases are expanded; "
                "refusing what looks like an alias bomb",
            )
        if depth > MAX_DEPTH:
            self.fail(line, key, f"nested more than {MAX_DEPTH} levels deep")
        if id(obj) in self.active:
            self.fail(line, key, "recursive alias: a value contains itself")


def _measure(root: Node, fail: Callable[[int | None, str, str], NoReturn]) -> int:
    """How many nodes ``root`` expands to with aliases followed, refusing past
    :data:`MAX_NODES` (alias bomb), :data:`MAX_DEPTH` or a recursive alias.

    Sizes are memoised per node object, so this costs one visit per node *as written*: a
    billion-laughs file is refused in milliseconds instead of after building 100,000 values.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, key: str, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        line = node.start_mark.line + 1
        if depth > MAX_DEPTH:
            fail(line, key, f"nested more than {MAX_DEPTH} levels deep")
        if id(node) in active:
            fail(line, key, "recursive alias: a value contains itself")
        total = 1
        if isinstance(node, SequenceNode | MappingNode):
            active.add(id(node))
            if isinstance(node, SequenceNode):
                children = [(f"{key}[{i}]", child) for i, child in enumerate(node.value)]
            else:
                children = []
                for key_node, value_node in node.value:
                    name = key_node.value if isinstance(key_node, ScalarNode) else "?"
                    children += [(key, key_node), (_sub(key, str(name)), value_node)]
            for child_key, child in children:
                total += size(child, child_key, depth + 1)
                if total > MAX_NODES:
                    fail(
                        line,
                        key,
                        f"more than {MAX_NODES:,} values once aliases are expanded; "
                        "refusing what looks like an alias bomb",
                    )
            active.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root, "", 0)


def _sub(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


class _YamlBuilder:
    """Turns a composed YAML node graph into :class:`_Node` values, following aliases (which
    the composer leaves as shared node objects) under the :class:`_Budget`."""

    def __init__(self, checker: _Checker) -> None:
        self.fail = checker.fail
        self.budget = _Budget(checker.fail)

    def build(self, node: Node, key: str, depth: int = 0) -> _Node:
        line = node.start_mark.line + 1
        self.budget.enter(node, line, key, depth)
        if isinstance(node, ScalarNode):
            return self._scalar(node, line, key)
        self.budget.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._check_tag(node, _SEQ, line, key)
                items = [self.build(n, f"{key}[{i}]", depth + 1) for i, n in enumerate(node.value)]
                return _Node("seq", line, items=items)
            if isinstance(node, MappingNode):
                self._check_tag(node, _MAP, line, key)
                return _Node("map", line, entries=self._entries(node, key, depth))
        finally:
            self.budget.active.discard(id(node))
        self.fail(line, key, f"unsupported YAML node {type(node).__name__}")

    def _check_tag(self, node: Node, expected: str, line: int, key: str) -> None:
        if node.tag != expected:
            self.fail(line, key, f"unsupported YAML tag {node.tag!r}")

    def _entries(
        self, node: MappingNode, key: str, depth: int
    ) -> dict[str, tuple[int | None, _Node]]:
        explicit: dict[str, tuple[int | None, _Node]] = {}
        merged: dict[str, tuple[int | None, _Node]] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                self.budget.enter(key_node, key_line, key, depth + 1)
                self._merge(value_node, key, depth + 1, merged)
                continue
            name = self._key(key_node, key, depth + 1)
            if name in explicit:
                first = explicit[name][0]
                self.fail(key_line, _sub(key, name), f"duplicate key (first at line {first})")
            explicit[name] = (key_line, self.build(value_node, _sub(key, name), depth + 1))
        for name, entry in merged.items():
            explicit.setdefault(name, entry)
        return explicit

    def _merge(
        self, node: Node, key: str, depth: int, into: dict[str, tuple[int | None, _Node]]
    ) -> None:
        # YAML merge keys: `<<: *base` or `<<: [*a, *b]`; explicit keys win, then the first
        # merged mapping that has the key.
        sources = node.value if isinstance(node, SequenceNode) else [node]
        if isinstance(node, SequenceNode):
            self.budget.enter(node, node.start_mark.line + 1, key, depth)
        for source in sources:
            if not isinstance(source, MappingNode):
                line = source.start_mark.line + 1
                self.fail(line, key, "'<<' (merge) expects a mapping or a list of mappings")
            built = self.build(source, key, depth + 1)
            for name, entry in built.entries.items():
                into.setdefault(name, entry)

    def _key(self, node: Node, key: str, depth: int) -> str:
        line = node.start_mark.line + 1
        self.budget.enter(node, line, key, depth)
        if not isinstance(node, ScalarNode):
            self.fail(line, key, "a key must be a plain string, not a list or mapping")
        if node.tag == _NULL:
            self.fail(line, key, "a key must not be empty or null")
        if node.tag not in (*_TEXT_TAGS, _INT, _FLOAT, _BOOL):
            self.fail(line, key, f"unsupported YAML tag {node.tag!r} on a key")
        text: str = node.value
        if "\x00" in text:
            self.fail(line, key, f"NUL character in key {_short_repr(text)}")
        return text

    def _scalar(self, node: ScalarNode, line: int, key: str) -> _Node:
        raw: str = node.value
        tag = node.tag
        value: str | int | float | bool | None
        try:
            if tag in _TEXT_TAGS:
                value = raw
            elif tag == _INT:
                value = _SCALARS.construct_yaml_int(node)
            elif tag == _FLOAT:
                value = _SCALARS.construct_yaml_float(node)
            elif tag == _BOOL:
                value = _SCALARS.construct_yaml_bool(node)
            elif tag == _NULL:
                value = None
            else:
                self.fail(line, key, f"unsupported YAML tag {tag!r}")
        except (ValueError, KeyError, OverflowError):
            kind = tag.rsplit(":", 1)[-1]
            self.fail(line, key, f"invalid or too large {kind} {_short_repr(raw)}")
        if "\x00" in raw:
            self.fail(line, key, "NUL character in a string (from an escape)")
        return _Node("scalar", line, value=value, raw=raw)


def _from_plain(data: object, checker: _Checker) -> _Node:
    """Snapshot data (JSON types) to :class:`_Node`, under the same budget as YAML."""
    budget = _Budget(checker.fail)

    def build(obj: object, key: str, depth: int) -> _Node:
        budget.enter(obj, None, key, depth)
        if isinstance(obj, Mapping):
            budget.active.add(id(obj))
            entries: dict[str, tuple[int | None, _Node]] = {}
            for name, value in obj.items():
                if not isinstance(name, str):
                    checker.fail(None, key, f"a key must be a string, got {name!r}")
                entries[name] = (None, build(value, _sub(key, name), depth + 1))
            budget.active.discard(id(obj))
            return _Node("map", None, entries=entries)
        if isinstance(obj, list | tuple):
            budget.active.add(id(obj))
            items = [build(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(obj)]
            budget.active.discard(id(obj))
            return _Node("seq", None, items=items)
        if obj is None:
            return _Node("scalar", None, value=None, raw="null")
        if isinstance(obj, bool):
            return _Node("scalar", None, value=obj, raw="true" if obj else "false")
        if isinstance(obj, str):
            if "\x00" in obj:
                checker.fail(None, key, "NUL character in a string")
            return _Node("scalar", None, value=obj, raw=obj)
        if isinstance(obj, int | float):
            try:
                raw = repr(obj)
            except ValueError:
                checker.fail(None, key, "integer too large")
            return _Node("scalar", None, value=obj, raw=raw)
        checker.fail(None, key, f"unsupported value of type {type(obj).__name__}")

    return build(data, "", 0)


# -- validation -------------------------------------------------------------------------------


def _describe(node: _Node) -> str:
    if node.kind == "map":
        return "a mapping"
    if node.kind == "seq":
        return "a list"
    if node.value is None:
        return "null"
    if isinstance(node.value, bool):
        return f"a boolean ({node.raw})"
    if isinstance(node.value, str):
        return _short_repr(node.value)
    return node.raw if len(node.raw) <= 40 else node.raw[:40] + "…"


@dataclass(slots=True)
class _CheckedStage:
    definition: StageDefinition
    name_line: int | None
    # (stage name needed, line, key path) per entry of `needs`, for precise errors
    needs: list[tuple[str, int | None, str]]


class _Checker:
    """Validates a :class:`_Node` tree into definitions, failing at the first problem with
    the file, line and key path."""

    def __init__(self, path: str | None, *, strict_keys: bool = True) -> None:
        self.path = path
        self.strict_keys = strict_keys
        self.workflow_id: str | None = None  # known as soon as validated (see find_workflow)

    def fail(self, line: int | None, key: str | None, problem: str) -> NoReturn:
        raise WorkflowError(problem, path=self.path, line=line, key=key)

    # -- field types ----------------------------------------------------------------------

    def mapping(self, node: _Node, key: str, expected: str) -> dict[str, tuple[int | None, _Node]]:
        if node.kind != "map":
            self.fail(node.line, key, f"expected {expected}, got {_describe(node)}")
        return node.entries

    def check_keys(
        self,
        entries: Mapping[str, tuple[int | None, _Node]],
        allowed: tuple[str, ...],
        key: str,
        where: str,
        hint: Callable[[str], str] | None = None,
    ) -> None:
        if not self.strict_keys:
            return
        for name, (line, _value) in entries.items():
            if name not in allowed:
                extra = hint(name) if hint else ""
                self.fail(
                    line,
                    _sub(key, name),
                    f"unknown key {_short_repr(name)}{_suggest(name, allowed)} {where}{extra}; "
                    f"allowed: {', '.join(sorted(allowed))}",
                )

    def string(self, node: _Node, key: str, *, allow_empty: bool = True) -> str | None:
        if node.kind != "scalar":
            self.fail(node.line, key, f"expected a string, got {_describe(node)}")
        if node.value is None:
            return None
        if not allow_empty and not node.raw.strip():
            self.fail(node.line, key, "expected a non-empty string (omit the key instead)")
        return node.raw

    def seconds(self, node: _Node, key: str) -> float | None:
        value = node.value if node.kind == "scalar" else node
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(node.line, key, f"expected a number of seconds > 0, got {_describe(node)}")
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not seconds > 0:  # also refuses NaN
            self.fail(node.line, key, f"expected a number of seconds > 0, got {_describe(node)}")
        if seconds > MAX_SECONDS:  # also refuses infinity
            self.fail(
                node.line,
                key,
                f"expected at most {MAX_SECONDS:.0f} seconds (ten years), got {_describe(node)}",
            )
        return seconds

    def count(self, node: _Node, key: str, *, maximum: int) -> int | None:
        value = node.value if node.kind == "scalar" else node
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(node.line, key, f"expected an integer >= 0, got {_describe(node)}")
        if value > maximum:
            self.fail(node.line, key, f"expected at most {maximum}, got {_describe(node)}")
        return value

    def strings(self, node: _Node, key: str, what: str) -> list[tuple[str, int | None, str]]:
        """A list of strings, or one string standing for a list of one."""
        if node.kind == "scalar":
            if node.value is None:
                return []
            return [(node.raw, node.line, key)]
        if node.kind != "seq":
            self.fail(node.line, key, f"expected {what}, got {_describe(node)}")
        out: list[tuple[str, int | None, str]] = []
        for i, item in enumerate(node.items):
            item_key = f"{key}[{i}]"
            if item.kind != "scalar" or item.value is None:
                self.fail(item.line, item_key, f"expected a string, got {_describe(item)}")
            out.append((item.raw, item.line, item_key))
        return out

    def env(self, node: _Node, key: str) -> dict[str, str]:
        if node.kind == "scalar" and node.value is None:
            return {}
        entries = self.mapping(node, key, "a mapping of NAME: value")
        env: dict[str, str] = {}
        for name, (line, value) in entries.items():
            item_key = _sub(key, name)
            if not name or "=" in name:
                self.fail(line, item_key, f"invalid environment variable name {_short_repr(name)}")
            if value.kind != "scalar" or value.value is None:
                self.fail(
                    value.line,
                    item_key,
                    f"expected a string, number or boolean, got {_describe(value)} "
                    "(write '' for an empty value)",
                )
            env[name] = value.raw
        return env

    def identifier(self, node: _Node, key: str, what: str) -> str:
        value = self.string(node, key)
        if value is None:
            self.fail(node.line, key, f"expected a {what}, got null")
        try:
            return validate_identifier(value, what)
        except WorkflowError as exc:
            self.fail(node.line, key, exc.problem)

    # -- structures -----------------------------------------------------------------------

    def stage(self, node: _Node, key: str) -> _CheckedStage:
        if node.kind == "scalar" and isinstance(node.value, str):
            self.fail(
                node.line,
                key,
                f"expected a stage mapping (name: …, run: …), got {_describe(node)}; "
                f"write '- name: {node.raw}' for a stage named that",
            )
        entries = self.mapping(node, key, "a stage mapping (name: …, run: …)")
        self.check_keys(entries, _STAGE_KEYS, key, "in a stage")
        if "name" not in entries:
            self.fail(node.line, key, "missing required key 'name'")

        def get(name: str) -> _Node | None:
            entry = entries.get(name)
            return None if entry is None else entry[1]

        def sub(name: str) -> str:
            return _sub(key, name)

        name_node = entries["name"][1]
        name = self.identifier(name_node, sub("name"), "stage name")
        run = cwd = description = timeout = retries = kill_timeout = None
        env: dict[str, str] = {}
        needs: list[tuple[str, int | None, str]] = []
        checklist: list[tuple[str, int | None, str]] = []
        if (n := get("run")) is not None:
            run = self.string(n, sub("run"), allow_empty=False)
        if (n := get("timeout")) is not None:
            timeout = self.seconds(n, sub("timeout"))
        if (n := get("retries")) is not None:
            retries = self.count(n, sub("retries"), maximum=MAX_RETRIES)
        if (n := get("kill_timeout")) is not None:
            kill_timeout = self.seconds(n, sub("kill_timeout"))
        if (n := get("env")) is not None:
            env = self.env(n, sub("env"))
        if (n := get("cwd")) is not None:
            cwd = self.string(n, sub("cwd"), allow_empty=False)
        if (n := get("needs")) is not None:
            needs = self.strings(n, sub("needs"), "a stage name or a list of stage names")
        if (n := get("checklist")) is not None:
            checklist = self.strings(n, sub("checklist"), "a list of strings")
        if (n := get("description")) is not None:
            description = self.string(n, sub("description"))
        unique_needs: dict[str, tuple[str, int | None, str]] = {}
        for need in needs:
            unique_needs.setdefault(need[0], need)
        definition = StageDefinition(
            name=name,
            run=run,
            timeout=timeout,
            retries=retries or 0,
            kill_timeout=kill_timeout if kill_timeout is not None else DEFAULT_KILL_TIMEOUT,
            env=env,
            cwd=cwd,
            needs=tuple(unique_needs),
            checklist=tuple(text for text, _line, _key in checklist),
            description=description,
        )
        return _CheckedStage(definition, name_node.line, list(unique_needs.values()))

    def workflow(self, node: _Node, default_id: str | None) -> WorkflowDefinition:
        entries = self.mapping(
            node, "", "a mapping at the top level (id, name, description, stages)"
        )
        self.check_keys(
            entries,
            _WORKFLOW_KEYS,
            "",
            "at the top level",
            hint=lambda k: " (stage keys go under 'stages')" if k in _STAGE_KEYS else "",
        )

        def get(name: str) -> _Node | None:
            entry = entries.get(name)
            return None if entry is None else entry[1]

        id_node = get("id")
        if id_node is not None and not (id_node.kind == "scalar" and id_node.value is None):
            workflow_id = self.identifier(id_node, "id", "workflow id")
        elif default_id is None:
            self.fail(node.line, None, "missing required key 'id'")
        else:
            try:
                workflow_id = validate_identifier(default_id, "workflow id")
            except WorkflowError as exc:
                self.fail(None, "id", f"{exc.problem} (taken from the file name; set 'id:')")
        self.workflow_id = workflow_id

        name = description = None
        if (n := get("name")) is not None:
            name = self.string(n, "name")
        if (n := get("description")) is not None:
            description = self.string(n, "description")

        stages_node = get("stages")
        if stages_node is None:
            self.fail(node.line, None, "missing required key 'stages'")
        if stages_node.kind != "seq":
            self.fail(
                stages_node.line,
                "stages",
                f"expected a list of stages, got {_describe(stages_node)}",
            )
        if not stages_node.items:
            self.fail(stages_node.line, "stages", "expected at least one stage, got none")
        stages = [self.stage(item, f"stages[{i}]") for i, item in enumerate(stages_node.items)]
        self._check_graph(stages)
        return WorkflowDefinition(
            id=workflow_id,
            name=name if name is not None else workflow_id,
            description=description,
            stages=tuple(s.definition for s in stages),
            path=self.path,
        )

    def _check_graph(self, stages: list[_CheckedStage]) -> None:
        index: dict[str, int] = {}
        for i, stage in enumerate(stages):
            name = stage.definition.name
            if name in index:
                first = index[name]
                where = f"stages[{first}]"
                if stages[first].name_line is not None:
                    where += f" at line {stages[first].name_line}"
                self.fail(
                    stage.name_line,
                    f"stages[{i}].name",
                    f"duplicate stage name {name!r}; already used by {where}",
                )
            index[name] = i
        for stage in stages:
            for need, line, key in stage.needs:
                if need == stage.definition.name:
                    self.fail(line, key, f"stage {need!r} needs itself")
                if need not in index:
                    known = ", ".join(list(index)[:MAX_KNOWN_LISTED])
                    if len(index) > MAX_KNOWN_LISTED:
                        known += f" and {len(index) - MAX_KNOWN_LISTED} more"
                    self.fail(
                        line,
                        key,
                        f"unknown stage {_short_repr(need)}{_suggest(need, index)}; "
                        f"stages: {known}",
                    )
        cycle = _find_cycle([[index[n] for n, _l, _k in s.needs] for s in stages])
        if cycle:
            opener, second = stages[cycle[0]], stages[cycle[1]].definition.name
            _need, line, key = next(n for n in opener.needs if n[0] == second)
            names = " -> ".join(stages[i].definition.name for i in cycle)
            self.fail(line, key, f"dependency cycle: {names}")


# -- loading ----------------------------------------------------------------------------------


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "syntax error"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        return (mark.line + 1 if mark is not None else None), f"invalid YAML: {problem}"
    if isinstance(exc, ReaderError):
        return _line_of(text, exc.position), f"invalid YAML: {exc.reason}"
    return None, f"invalid YAML: {exc}"


def _load(
    text: str, path: str | None, default_id: str | None, checker: _Checker | None = None
) -> tuple[WorkflowDefinition, int | None]:
    """The definition and the line of its ``id`` key (None when it defaulted)."""
    checker = checker or _Checker(path)
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        checker.fail(None, None, f"file too large (the limit is {MAX_FILE_BYTES:,} bytes)")
    if text.startswith("\ufeff"):
        text = text[1:]
    bad = _NOT_YAML_TEXT.search(text)
    if bad:
        char = bad.group()
        what = "NUL character" if char == "\x00" else f"control character {char!r}"
        checker.fail(
            _line_of(text, bad.start()),
            None,
            f"{what} in the file; write it as an escape in a double-quoted string",
        )
    loader = _YAML_LOADER(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, text)
        checker.fail(line, None, problem)
    except RecursionError:  # only the pure-Python composer recurses; libyaml caps nesting
        get_mark = getattr(loader, "get_mark", None)
        line = get_mark().line + 1 if callable(get_mark) else None
        checker.fail(line, None, "invalid YAML: nested too deeply")
    finally:
        loader.dispose()
    if root is None:
        checker.fail(None, None, "empty file; expected a mapping with 'stages'")
    _measure(root, checker.fail)  # before building anything: the alias-bomb fuse
    tree = _YamlBuilder(checker).build(root, "")
    definition = checker.workflow(tree, default_id)
    id_entry = tree.entries.get("id")
    return definition, (id_entry[0] if id_entry and id_entry[1].value is not None else None)


def load_workflow_text(
    text: str, *, path: str | None = None, default_id: str | None = None
) -> WorkflowDefinition:
    """Parse and validate one workflow from text; ``path`` is only used in messages and kept
    on the result, ``default_id`` is the id used when the text has none."""
    return _load(text, path, default_id)[0]


def _read_text(path: Path) -> str:
    shown = str(path)

    def fail(problem: str, line: int | None = None) -> NoReturn:
        raise WorkflowError(problem, path=shown, line=line)

    try:
        info = path.stat()
    except FileNotFoundError:
        fail("no such file")
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
    if stat.S_ISDIR(info.st_mode):
        fail("is a directory, not a workflow file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        fail("not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        fail(f"file too large ({info.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        fail(f"file too large (the limit is {MAX_FILE_BYTES:,} bytes)")
    nul = data.find(b"\x00")
    if nul >= 0:
        fail(
            "NUL byte in the file; workflow files must be UTF-8 text",
            data.count(b"\n", 0, nul) + 1,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(
            f"invalid UTF-8 (byte {exc.start}); workflow files must be UTF-8 text",
            data.count(b"\n", 0, exc.start) + 1,
        )


def load_workflow_file(path: Path) -> WorkflowDefinition:
    """Load one workflow file; its ``id`` defaults to the file's stem."""
    return _load(_read_text(path), str(path), path.stem)[0]


@dataclass(slots=True)
class _Scanned:
    path: Path
    workflow_id: str | None  # the id, or the one it was about to get, or None if unknown
    definition: WorkflowDefinition | None = None
    id_line: int | None = None
    error: WorkflowError | None = None


def _scan(directory: Path) -> tuple[list[_Scanned], list[WorkflowError]]:
    """Every workflow file of ``directory`` loaded independently, plus directory errors.

    Dot files are skipped: editors leave lock and backup files there (``.#etl.yaml``)."""
    try:
        files = sorted(
            (
                p
                for p in directory.iterdir()
                if p.suffix in WORKFLOW_SUFFIXES and not p.name.startswith(".") and not p.is_dir()
            ),
            key=lambda p: p.name,
        )
    except FileNotFoundError:
        return [], []
    except NotADirectoryError:
        return [], [WorkflowError("not a directory", path=str(directory))]
    except OSError as exc:
        return [], [WorkflowError(f"cannot list: {exc.strerror or exc}", path=str(directory))]
    scanned: list[_Scanned] = []
    for file in files:
        checker = _Checker(str(file))
        try:
            definition, id_line = _load(_read_text(file), str(file), file.stem, checker)
        except WorkflowError as exc:
            wid = checker.workflow_id
            scanned.append(_Scanned(file, wid, error=exc))
        else:
            scanned.append(_Scanned(file, definition.id, definition, id_line))
    return scanned, []


def discover_workflows(
    directory: Path,
) -> tuple[list[WorkflowDefinition], list[WorkflowError]]:
    """Every workflow in ``directory`` (``*.yaml``, ``*.yml``, by file name) and one error per
    file that cannot be used, so one bad file never hides the others. A missing directory is
    simply empty. When two files share an id, the first (by name) wins and the second is an
    error naming both."""
    scanned, errors = _scan(directory)
    definitions: list[WorkflowDefinition] = []
    owners: dict[str, Path] = {}
    for item in scanned:
        if item.error is not None:
            errors.append(item.error)
        elif item.definition is not None:
            if item.definition.id in owners:
                errors.append(_duplicate_error(item, owners[item.definition.id]))
                continue
            owners[item.definition.id] = item.path
            definitions.append(item.definition)
    return definitions, errors


def _duplicate_error(item: _Scanned, first: Path) -> WorkflowError:
    return WorkflowError(
        f"duplicate workflow id {item.workflow_id!r}: already defined in {first}",
        path=str(item.path),
        line=item.id_line,
        key="id",
    )


def find_workflow(directory: Path, workflow_id: str) -> WorkflowDefinition:
    """The workflow with ``workflow_id`` in ``directory``.

    A file that would define it but is malformed raises its own error rather than "unknown"
    (a file with a syntax error counts as defining its stem). Two files defining it raise the
    duplicate error instead of silently picking one.
    """
    validate_identifier(workflow_id, "workflow id")
    scanned, errors = _scan(directory)
    matches = [
        s
        for s in scanned
        if s.workflow_id == workflow_id or (s.workflow_id is None and s.path.stem == workflow_id)
    ]
    for item in matches:
        if item.error is not None:
            raise item.error
    if len(matches) > 1:
        raise _duplicate_error(matches[1], matches[0].path)
    if matches and matches[0].definition is not None:
        return matches[0].definition
    if errors:
        raise errors[0]
    known = sorted({s.definition.id for s in scanned if s.definition is not None})
    listed = ", ".join(known[:MAX_KNOWN_LISTED]) or "(none)"
    if len(known) > MAX_KNOWN_LISTED:
        listed += f" and {len(known) - MAX_KNOWN_LISTED} more"
    raise WorkflowError(f"unknown workflow {workflow_id!r}; known: {listed}")
