"""The parts every workflow model is made of (the models themselves are in
:mod:`store.definitions`): one pydantic definition that validates workflow files (read
by :mod:`store.workflows`), the snapshots sessions keep, and definitions built in code, and
that documents itself as the JSON Schema ``vc flow schema`` prints.

How the model is written, so that a new key is one field:

- Every model derives from :class:`DefinitionModel`: frozen and hashable; keys it does not know are
  refused with a "did you mean" and the list of allowed keys (in declaration order), except
  in a snapshot, where they are dropped: on a shared store a newer ``vc`` on another host may
  have written keys this version has never heard of. ``null`` for an optional key means
  "not set" (its default).
- A text field is a plain ``str``. A YAML scalar arrives as :class:`YamlScalar`, a ``str``
  holding the text exactly as written, so ``run: true`` is the shell's ``true`` and
  ``DEBUG: yes`` in ``env`` is ``"yes"``. Other fields use the YAML-aware types below
  (:data:`Seconds`, :data:`Flag`, :func:`count_check` …), which take the value YAML gives the
  scalar and refuse quoted numbers and YAML booleans where a number is expected: a retry
  count that is secretly a string is a mistake worth reporting.
- A problem is raised with :func:`problem`, whose text is what the user reads;
  :func:`validate` turns pydantic's errors (its own types and missing keys included) into
  one :class:`~store.errors.WorkflowError` naming the file, line and key.
- Rules that span fields (the stage graph, parameter defaults) are model validators; a
  definition built in code is not graph-checked (``execution_order`` does that).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar

from annotated_types import Gt, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from store.errors import WorkflowError
from store.names import param_text, short_repr, validate_identifier
from store.text import suggest

MAX_SECONDS = 10 * 365 * 86400.0
"""Longest duration accepted; far below what timers and ``threading`` can represent."""
MAX_RETRIES = 1000
"""Most retries accepted; more is a loop, not a retry policy."""
DEFAULT_KILL_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL when a stage is aborted or times out."""
MAX_PARAM_TEXT = 4096
"""Longest parameter value accepted, in characters: it becomes an environment variable."""
MAX_INT = 2**63 - 1
"""Integer parameters are 64-bit, like every tool a stage may hand them to."""
MIN_INT = -(2**63)

ParamType = Literal["str", "int", "float", "bool"]
ParamValue = bool | int | float | str
PARAM_TYPES: tuple[str, ...] = ("str", "int", "float", "bool")
#: A bool parameter's value as text (a command line, the dashboard's form), any case.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
INT_TEXT = re.compile(r"[+-]?[0-9]+")
FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class YamlScalar(str):
    """A YAML scalar: the text as written (``str(self)``) and the value YAML 1.1 gives it
    (``value``: str, int, float or bool; dates and the like stay text)."""

    value: ParamValue

    def __new__(cls, raw: str, value: ParamValue) -> YamlScalar:
        scalar = super().__new__(cls, raw)
        scalar.value = value
        return scalar


def _plain_decimal(raw: str, *, integer: bool) -> bool:
    """Written in digits, a sign, a point and an exponent (not for an integer), without
    the leading zero that makes YAML 1.1 read octal."""
    text = raw.strip()
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        return False
    return bool((INT_TEXT if integer else FLOAT_TEXT).fullmatch(text))


def written_plainly(value: object, *, integer: bool) -> None:
    """Refuse a number written as YAML 1.1 reads what nobody means: ``012`` as 10,
    ``0x10`` as 16, ``1:30`` as 90, ``1_000`` as 1000. Every number of a workflow file
    (a parameter's default, a stage's ``timeout``, ``retries`` …) is checked alike."""
    if isinstance(value, YamlScalar) and not _plain_decimal(str(value), integer=integer):
        raise problem(
            f"write {'the integer' if integer else 'the number'} in plain decimal digits, "
            f"got {describe(value)} (YAML would read it as {param_text(value.value)})"
        )


def typed(value: object) -> object:
    """The value of a YAML scalar as YAML types it; anything else as it is."""
    return value.value if isinstance(value, YamlScalar) else value


def describe(value: object) -> str:
    """What a user wrote, for "expected …, got …" (text repr-escaped and cut short)."""
    if isinstance(value, YamlScalar):
        inner = value.value
        if isinstance(inner, bool):
            return f"a boolean ({value})"
        if isinstance(inner, str):
            return short_repr(inner)
        return str(value) if len(value) <= 40 else value[:40] + "…"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return short_repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**40 else "a huge integer"
    return f"a {type(value).__name__}"


def problem(
    text: str, *at: str | int, on_key: bool = False, **refs: tuple[Any, ...]
) -> PydanticCustomError:
    """The error a validator raises: ``text`` is what the user reads. ``at`` locates it below
    the value being validated (a key of a mapping, an item of a list); ``on_key`` says the
    problem is the key itself (its line is reported). ``{name}`` in ``text`` is replaced by
    the location ``refs[name]`` (a path from the root), with its line when known."""
    return PydanticCustomError(
        "vc", "{problem}", {"problem": text, "at": at, "on_key": on_key, "refs": refs}
    )


# -- field types ------------------------------------------------------------------------------


def _seconds(value: object) -> float:
    number = typed(value)
    expected = f"expected a number of seconds > 0, got {describe(value)}"
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise problem(expected)
    try:
        seconds = float(number)
    except OverflowError:
        seconds = math.inf
    if not seconds > 0:  # also refuses NaN
        raise problem(expected)
    if seconds > MAX_SECONDS:  # also refuses infinity
        raise problem(
            f"expected at most {MAX_SECONDS:.0f} seconds (ten years), got {describe(value)}"
        )
    written_plainly(value, integer=False)
    return seconds


#: A duration in seconds (> 0, at most ten years).
Seconds = Annotated[float, BeforeValidator(_seconds), Gt(0), Le(MAX_SECONDS)]


def count_check(maximum: int) -> Callable[[object], int]:
    """The check of an integer from 0 to ``maximum`` (YAML booleans and quoted numbers
    refused), for ``Annotated[int, BeforeValidator(count_check(N)), Ge(0), Le(N)]``."""

    def check(value: object) -> int:
        number = typed(value)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise problem(f"expected an integer >= 0, got {describe(value)}")
        written_plainly(value, integer=True)
        if number > maximum:
            raise problem(f"expected at most {maximum}, got {describe(value)}")
        return number

    return check


def _flag(value: object) -> bool:
    flag = typed(value)
    if not isinstance(flag, bool):
        raise problem(f"expected true or false, got {describe(value)}")
    return flag


#: A YAML boolean (true/false, yes/no, on/off); a quoted "true" is refused.
Flag = Annotated[bool, BeforeValidator(_flag)]


def _non_empty(text: str) -> str:
    if not text.strip():
        raise problem("expected a non-empty string (omit the key instead)")
    return text


#: Text that must say something (a command, a directory).
NonEmptyText = Annotated[
    str, AfterValidator(_non_empty), WithJsonSchema({"type": "string", "minLength": 1})
]


def identifier(what: str) -> AfterValidator:
    """A name that becomes a file name (see :func:`store.names.validate_identifier`)."""

    def check(text: str) -> str:
        try:
            return validate_identifier(text, what)
        except WorkflowError as exc:
            raise problem(exc.problem) from None

    return AfterValidator(check)


IDENTIFIER_SCHEMA = WithJsonSchema(
    {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
)


def one_or_many(expected: str) -> Callable[[object], object]:
    """A list, or a single item standing for a list of one (``needs: extract``)."""

    def check(value: object) -> object:
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list | tuple):
            raise problem(f"expected {expected}, got {describe(value)}")
        return value

    return check


def names_schema(item: str) -> WithJsonSchema:
    array = {"type": "array", "items": {"type": "string", "description": item}}
    return WithJsonSchema({"anyOf": [{"type": "string"}, array]})


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise problem(f"expected a mapping of NAME: value, got {describe(value)}")
    env: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name or "=" in name or "\x00" in name:
            raise problem(f"invalid environment variable name {describe(name)}", name, on_key=True)
        if isinstance(item, str):
            env[name] = str(item)  # a YAML scalar as written
        elif isinstance(item, bool):
            env[name] = "true" if item else "false"
        elif isinstance(item, int | float):
            env[name] = str(item)
        else:
            raise problem(
                f"expected a string, number or boolean, got {describe(item)} "
                "(write '' for an empty value)",
                name,
            )
    return env


#: Environment variables of a stage; every value is taken as written.
Env = Annotated[
    dict[str, str],
    BeforeValidator(_env),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
            "propertyNames": {"pattern": "^[^=]+$"},
        }
    ),
]


# -- the base model ---------------------------------------------------------------------------


class DefinitionModel(BaseModel):
    """Frozen, hashable, refusing unknown keys (ignoring them in snapshots), ``null`` meaning
    "not set". The validation context's ``source`` is ``"file"`` (a workflow file) or
    ``"snapshot"`` (stored on a session); without one, the model is being built in code."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    #: "expected <this>, got …" when the value is not a mapping.
    expected: ClassVar[str] = "a mapping"
    #: Where its keys are, for "unknown key … <where>".
    where: ClassVar[str] = ""
    #: Fields accepted from snapshots and code but not from files (not in the schema either).
    internal: ClassVar[frozenset[str]] = frozenset()
    #: Keys whose ``null`` in a file is refused with this problem, where "not set" would
    #: change what is written (a stage whose ``run:`` was left empty is not a gate).
    null_refused: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def file_keys(cls) -> list[str]:
        """The keys a workflow file may use here, in declaration order."""
        return [name for name in cls.model_fields if name not in cls.internal]

    @classmethod
    def not_a_mapping(cls, value: object) -> str:
        return f"expected {cls.expected}, got {describe(value)}"

    @classmethod
    def unknown_key_hint(cls, key: str) -> str:
        return ""

    @classmethod
    def prepare(cls, data: dict[str, Any], source: str | None) -> dict[str, Any]:
        """Cross-field preparation of the raw keys (after the unknown-key check)."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise problem(cls.not_a_mapping(data))
        source = (info.context or {}).get("source")
        known = cls.model_fields
        allowed = cls.file_keys() if source == "file" else list(known)
        kept: dict[str, Any] = {}
        for key, value in data.items():
            if key not in allowed:
                if source == "snapshot":
                    continue
                shown = describe(key) if isinstance(key, str) else repr(key)
                raise problem(
                    f"unknown key {shown}{suggest(str(key), allowed)} {cls.where}"
                    f"{cls.unknown_key_hint(str(key))}; allowed: {', '.join(allowed)}",
                    key,
                    on_key=True,
                )
            if value is None and not known[key].is_required():
                if source == "file" and key in cls.null_refused:
                    raise problem(cls.null_refused[key], key)
                continue
            kept[key] = value
        return cls.prepare(kept, source)

    def __hash__(self) -> int:
        return hash((type(self), *(_hashable(getattr(self, f)) for f in type(self).model_fields)))


def _hashable(value: object) -> object:
    if isinstance(value, Mapping):
        return tuple((k, _hashable(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


# -- validation errors ------------------------------------------------------------------------

Loc = tuple[str | int, ...]


class Locations(Protocol):
    """Where each value of a parsed file was written: line numbers by path."""

    def value_line(self, loc: Loc) -> int | None: ...
    def key_line(self, loc: Loc) -> int | None: ...
    def __contains__(self, loc: object) -> bool: ...


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "mapping_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def render_key(loc: Loc) -> str:
    """``("stages", 1, "retries")`` -> ``stages[1].retries`` (indexes 0-based, as in JSON)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _phrase(error: Mapping[str, Any]) -> tuple[Loc, bool, str]:
    """(location, whether it is about the key, text) of one pydantic error."""
    loc: Loc = tuple(p for p in error["loc"] if p != "[key]")
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "vc":
        return loc + tuple(ctx.get("at", ())), bool(ctx.get("on_key")), str(ctx["problem"])
    if kind == "missing":
        return loc[:-1], False, f"missing required key {loc[-1]!r}"
    if kind in _EXPECTED:
        return loc, "[key]" in error["loc"], f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if kind == "literal_error":
        return loc, False, f"expected one of {ctx.get('expected')}, got {describe(value)}"
    if kind == "too_short":
        return loc, False, f"expected at least {ctx.get('min_length')}, got none"
    bounds = {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
    if kind in bounds:
        sign, name = bounds[kind]
        return loc, False, f"expected {sign} {ctx.get(name)}, got {describe(value)}"
    message = str(error.get("msg") or kind)
    return loc, False, message[:1].lower() + message[1:]


def to_workflow_error(
    exc: ValidationError, *, path: str | None = None, locations: Locations | None = None
) -> WorkflowError:
    """The first problem of a failed validation (the first in the file, when lines are
    known) as one :class:`WorkflowError`: ``path:line: key: problem``. The key is the
    deepest one actually written (a missing key is reported on the mapping that lacks it).
    Any problem of the file exits 1, the ``params`` section's too: a file to fix, not a
    command line (a bad ``--param`` value is a usage error, exit 2: ``ParamError``)."""
    found: list[tuple[float, int, WorkflowError]] = []
    for n, error in enumerate(exc.errors(include_url=False)):
        loc, on_key, text = _phrase(error)
        line: int | None = None
        if locations is not None:
            while loc and loc not in locations:
                loc, on_key = loc[:-1], False
            line = locations.key_line(loc) if on_key else locations.value_line(loc)
        refs = (error.get("ctx") or {}).get("refs") or {}
        for name, ref in refs.items():
            ref_line = locations.value_line(ref) if locations is not None else None
            at_line = f" at line {ref_line}" if ref_line else ""
            text = text.replace("{" + name + "}", render_key(ref) + at_line)
        err = WorkflowError(text, path=path, line=line, key=render_key(loc))
        found.append((line if line is not None else math.inf, n, err))
    return min(found, key=lambda item: item[:2])[2]


M = TypeVar("M", bound=DefinitionModel)


def validate(
    model: type[M],
    data: object,
    *,
    source: str,
    path: str | None = None,
    locations: Locations | None = None,
) -> M:
    """``model`` validated from ``data`` (``source`` "file" or "snapshot"), or the
    :class:`WorkflowError` of its first problem."""
    try:
        return model.model_validate(data, context={"source": source})
    except ValidationError as exc:
        raise to_workflow_error(exc, path=path, locations=locations) from None
