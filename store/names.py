"""Names users choose that end up somewhere dangerous: ids and stage names become file names
and log paths; parameter and output keys become environment variables of stage processes.

Everything here is plain string work, cheap to import from the managers and the runner.

Environment variables a stage gets (its command line is never built from them):

* ``VC_PARAM_<KEY>``: a parameter of the session, ``KEY`` upper-cased (``day`` ->
  ``VC_PARAM_DAY``). Parameter keys are identifiers (letters, digits, ``_``, not starting
  with a digit), and two keys of one workflow that differ only in case are refused.
* ``VC_OUTPUT_<STAGE>_<KEY>``: an output an earlier stage recorded. Stage names may hold
  ``-`` and ``.``, which no variable name can: ``STAGE`` is the stage name upper-cased with
  every character other than a letter, digit or ``_`` turned into ``_`` (``build-image``
  -> ``VC_OUTPUT_BUILD_IMAGE_<KEY>``). Names that map to the same variable (``a-b`` and
  ``a_b``, or stage ``a`` with key ``b_c`` and stage ``a_b`` with key ``c``) share it, and
  the stage that completed last wins; the session's JSON ``outputs`` keep them apart.
"""

from __future__ import annotations

import re

from store.errors import WorkflowError

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VARIABLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NOT_VARIABLE = re.compile(r"[^A-Z0-9_]")

PARAM_PREFIX = "VC_PARAM_"
OUTPUT_PREFIX = "VC_OUTPUT_"
#: What a parameter or output key may be, for messages.
KEY_RULE = "letters, digits and '_', not starting with a digit, at most 64 characters"


def short_repr(value: str, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


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
    raise WorkflowError(f"invalid {what} {short_repr(value)}: {reason}")


#: Variables vc gives every stage itself (or keeps from it: ``VC_NOTIFY`` holds secrets):
#: a stage's ``env`` naming one would be overridden without a word. So would
#: ``VC_MATRIX_<KEY>`` for a key of the stage's own matrix (:func:`matrix_variable`).
OWN_VARIABLES = ("VC_SESSION_ID", "VC_STAGE", "VC_ATTEMPT", "VC_NOTIFY")
OWN_PREFIXES = (PARAM_PREFIX, OUTPUT_PREFIX)
MATRIX_PREFIX = "VC_MATRIX_"


def is_own_variable(name: str) -> bool:
    """Whether vc sets (or removes) ``name`` in every stage's environment itself."""
    return name in OWN_VARIABLES or name.startswith(OWN_PREFIXES)


def matrix_variable(key: str) -> str:
    """The variable an instance of a matrix stage gets its value of ``key`` in."""
    return MATRIX_PREFIX + key.upper()


def is_variable_key(key: str) -> bool:
    """Whether ``key`` may name a parameter or an output (it becomes part of a variable)."""
    return bool(_VARIABLE_KEY.fullmatch(key))


def param_variable(key: str) -> str:
    return PARAM_PREFIX + key.upper()


def output_variable(stage: str, key: str) -> str:
    return f"{OUTPUT_PREFIX}{_NOT_VARIABLE.sub('_', stage.upper())}_{key.upper()}"


def param_text(value: object) -> str:
    """A parameter value as text, as a stage sees it and messages show it: a bool as
    ``true``/``false``, a float in its shortest exact form (``0.001``), the rest as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


__all__ = [
    "KEY_RULE",
    "OUTPUT_PREFIX",
    "PARAM_PREFIX",
    "is_variable_key",
    "output_variable",
    "param_text",
    "param_variable",
    "short_repr",
    "validate_identifier",
]
