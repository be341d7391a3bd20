"""The typed model of a workflow: one pydantic definition that validates workflow files (read
by :mod:`store.workflows`), the snapshots sessions keep, and definitions built in code, and
that documents itself as the JSON Schema ``vc flow schema`` prints.

How the model is written, so that a new key is one field:

- Every model derives from :class:`_Model`: frozen and hashable; keys it does not know are
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

import difflib
import heapq
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar, cast

from annotated_types import Ge, Gt, Le
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from store.errors import ParamError, WorkflowError
from store.names import KEY_RULE, is_variable_key, param_text, short_repr, validate_identifier

MAX_SECONDS = 10 * 365 * 86400.0
"""Longest duration accepted; far below what timers and ``threading`` can represent."""
MAX_RETRIES = 1000
"""Most retries accepted; more is a loop, not a retry policy."""
DEFAULT_KILL_TIMEOUT = 10.0
"""Seconds between SIGTERM and SIGKILL when a stage is aborted or times out."""
MAX_KNOWN_LISTED = 20
"""How many known names an "unknown stage/parameter" error lists before "and N more"."""
MAX_PARAM_TEXT = 4096
"""Longest parameter value accepted, in characters: it becomes an environment variable."""
MAX_INT = 2**63 - 1
"""Integer parameters are 64-bit, like every tool a stage may hand them to."""

ParamType = Literal["str", "int", "float", "bool"]
ParamValue = bool | int | float | str
PARAM_TYPES: tuple[str, ...] = ("str", "int", "float", "bool")
#: A bool parameter's value as text (a command line, the dashboard's form), any case.
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class YamlScalar(str):
    """A YAML scalar: the text as written (``str(self)``) and the value YAML 1.1 gives it
    (``value``: str, int, float or bool; dates and the like stay text)."""

    value: ParamValue

    def __new__(cls, raw: str, value: ParamValue) -> YamlScalar:
        scalar = super().__new__(cls, raw)
        scalar.value = value
        return scalar


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


def suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def listed(names: Sequence[str]) -> str:
    text = ", ".join(names[:MAX_KNOWN_LISTED]) or "(none)"
    if len(names) > MAX_KNOWN_LISTED:
        text += f" and {len(names) - MAX_KNOWN_LISTED} more"
    return text


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


def _names_schema(item: str) -> WithJsonSchema:
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


class _Model(BaseModel):
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


# -- parameters -------------------------------------------------------------------------------


def _param_value(ptype: str, value: object) -> ParamValue:
    """A value written in a workflow file (or a snapshot) for a parameter of ``ptype``:
    str takes any scalar as written, int and float want numbers, bool a YAML boolean."""
    inner = typed(value)
    if ptype == "str":
        if isinstance(value, str):
            return str(value)
        raise problem(f"expected a string, got {describe(value)}")
    if ptype == "bool":
        if isinstance(inner, bool):
            return inner
        raise problem(f"expected true or false, got {describe(value)}")
    if isinstance(inner, bool) or not isinstance(inner, int | float):
        raise problem(
            f"expected {'an integer' if ptype == 'int' else 'a number'}, got {describe(value)}"
        )
    if ptype == "int":
        if not isinstance(inner, int):
            raise problem(f"expected an integer, got {describe(value)}")
        if abs(inner) > MAX_INT:
            raise problem(f"expected a 64-bit integer, got {describe(value)}")
        return inner
    number = float(inner)
    if not math.isfinite(number):
        raise problem(f"expected a finite number, got {describe(value)}")
    return number


class ParamDefinition(_Model):
    """A parameter of the workflow: a value given when a session is created (``--param
    KEY=VALUE``, the dashboard's form), stored with the session and handed to every stage as
    the environment variable ``VC_PARAM_<KEY>``, never on its command line."""

    expected: ClassVar[str] = "a parameter mapping (type: …, default: …)"
    where: ClassVar[str] = "in a parameter"

    type: ParamType = Field(
        "str", description="str (the default), int, float or bool; what a value must be"
    )
    default: ParamValue | None = Field(
        None, description="the value when none is given; must fit type, choices, min and max"
    )
    required: Flag = Field(False, description="a session cannot be created without a value")
    choices: tuple[ParamValue, ...] | None = Field(None, description="the only values accepted")
    min: int | float | None = Field(None, description="smallest value (int and float)")
    max: int | float | None = Field(None, description="largest value (int and float)")
    description: str | None = Field(None, description="shown in the new-session form")

    @classmethod
    def prepare(cls, data: dict[str, Any], source: str | None) -> dict[str, Any]:
        """Type the default, choices and bounds by the parameter's own ``type`` and check
        that the default fits them (reported at the default's line)."""
        ptype = str(typed(data.get("type", "str")))
        if ptype not in PARAM_TYPES:
            return data  # the field reports the type
        out = dict(data)
        for bound in ("min", "max"):
            if bound in out:
                if ptype not in ("int", "float"):
                    raise problem(
                        f"{bound!r} applies to int and float parameters, not {ptype}", bound
                    )
                try:
                    out[bound] = _param_value(ptype, out[bound])
                except PydanticCustomError as exc:
                    raise problem(str(exc), bound) from None
        low, high = out.get("min"), out.get("max")
        if low is not None and high is not None and low > high:
            raise problem(f"min {param_text(low)} is above max {param_text(high)}", "min")
        if "choices" in out:
            choices = out["choices"]
            if isinstance(choices, str) or not isinstance(choices, list | tuple):
                raise problem(f"expected a list of values, got {describe(choices)}", "choices")
            if not choices:
                raise problem("expected at least one choice, got none", "choices")
            values: list[ParamValue] = []
            for i, choice in enumerate(choices):
                try:
                    values.append(_param_value(ptype, choice))
                except PydanticCustomError as exc:
                    raise problem(str(exc), "choices", i) from None
            out["choices"] = tuple(values)
        if "default" in out:
            if typed(out.get("required")) is True:
                raise problem(
                    "a required parameter takes no default (drop 'required' or 'default')",
                    "default",
                )
            try:
                default = _param_value(ptype, out["default"])
            except PydanticCustomError as exc:
                raise problem(str(exc), "default") from None
            spec = cls.model_construct(
                type=cast(ParamType, ptype), choices=out.get("choices"), min=low, max=high
            )
            why = spec.refusal(default)
            if why:
                raise problem(
                    f"default {describe(default)} does not fit: the parameter {why}", "default"
                )
            out["default"] = default
        return out

    def accepts(self) -> str:
        """What a value may be, in words: "an integer from 1 to 64", "one of a, b" …"""
        if self.choices is not None:
            return "one of " + ", ".join(param_text(c) for c in self.choices)
        noun = {"str": "a string", "int": "an integer", "float": "a number"}.get(self.type)
        if noun is None:
            return "true or false"
        if self.min is not None and self.max is not None:
            return f"{noun} from {param_text(self.min)} to {param_text(self.max)}"
        if self.min is not None:
            return f"{noun} >= {param_text(self.min)}"
        if self.max is not None:
            return f"{noun} <= {param_text(self.max)}"
        return noun

    def refusal(self, value: ParamValue) -> str | None:
        """Why a typed value does not fit the choices or bounds (None when it does)."""
        if self.choices is not None and not any(
            value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices
        ):
            return f"accepts {self.accepts()}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            return f"accepts {self.accepts()}"
        return None

    def coerce(self, value: object) -> ParamValue:
        """A value given for a session: text (a command line, a form) is parsed by type;
        a typed value (the Python API) is checked. Raises ValueError saying what it accepts."""
        if isinstance(value, str):
            parsed = self.parse(value)
        elif self.type == "bool" and isinstance(value, bool):
            parsed = value
        elif (
            self.type in ("int", "float")
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            if self.type == "int" and not isinstance(value, int):
                raise ValueError(self.accepts())
            if self.type == "float":
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(self.accepts())
            elif abs(value) > MAX_INT:
                raise ValueError(self.accepts())
            parsed = value
        else:
            raise ValueError(self.accepts())
        if self.refusal(parsed) is not None:
            raise ValueError(self.accepts())
        return parsed

    def parse(self, text: str) -> ParamValue:
        """A value written as text: ``42``, ``1e-3``, ``true``/``no``, or any string."""
        if "\x00" in text or len(text) > MAX_PARAM_TEXT:
            raise ValueError(f"{self.accepts()} (without NUL, at most {MAX_PARAM_TEXT} characters)")
        if self.type == "str":
            return text
        if self.type == "bool":
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(self.accepts())
        stripped = text.strip()
        if self.type == "int":
            if not _INT_TEXT.fullmatch(stripped) or len(stripped) > 20:
                raise ValueError(self.accepts())
            number = int(stripped)
            if abs(number) > MAX_INT:
                raise ValueError(self.accepts())
            return number
        if not _FLOAT_TEXT.fullmatch(stripped) or len(stripped) > 64:
            raise ValueError(self.accepts())
        result = float(stripped)
        if not math.isfinite(result):
            raise ValueError(self.accepts())
        return result

    def to_dict(self) -> dict[str, Any]:
        """The snapshot of the declaration: only what differs from the defaults."""
        return _compact_param(self.model_dump(mode="json"))


_PARAM_DEFAULTS = {name: field.default for name, field in ParamDefinition.model_fields.items()}


def _compact_param(dumped: dict[str, Any]) -> dict[str, Any]:
    """A dumped parameter without the keys at their defaults (a session stores one per
    parameter; pydantic's ``exclude_defaults`` costs four times as much)."""
    defaults = _PARAM_DEFAULTS
    return {
        key: value
        for key, value in dumped.items()
        if value != defaults[key] or type(value) is not type(defaults[key])
    }


def _params(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise problem(f"expected a mapping of NAME: {{type: …}}, got {describe(value)}")
    seen: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, spec in value.items():
        if not isinstance(key, str) or not is_variable_key(key):
            raise problem(
                f"invalid parameter name {describe(key)}: use {KEY_RULE}", key, on_key=True
            )
        other = seen.get(key.upper())
        if other is not None:
            raise problem(
                f"parameter {key!r} clashes with {other!r}: both would be VC_PARAM_{key.upper()}",
                key,
                on_key=True,
            )
        seen[key.upper()] = key
        out[key] = {} if spec is None else spec
    return out


Params = Annotated[
    dict[str, ParamDefinition],
    BeforeValidator(_params),
    Field(json_schema_extra={"propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}}),
]


# -- stages -----------------------------------------------------------------------------------


class StageDefinition(_Model):
    """One stage: a task if it has ``run``, else a manual gate the session waits at."""

    expected: ClassVar[str] = "a stage mapping (name: …, run: …)"
    where: ClassVar[str] = "in a stage"

    checklist: Annotated[
        tuple[str, ...],
        BeforeValidator(one_or_many("a list of strings")),
        _names_schema("something to check before passing a manual gate"),
    ] = Field((), description="what to check before passing a manual gate")
    cwd: NonEmptyText | None = Field(
        None, description="working directory, relative to the workspace (~ and $VARS expanded)"
    )
    description: str | None = Field(None, description="free text")
    env: Env = Field(
        default_factory=dict,
        description="environment variables of the stage's process (values taken as written)",
    )
    kill_timeout: Seconds = Field(
        DEFAULT_KILL_TIMEOUT,
        description="seconds between SIGTERM and SIGKILL when the stage is stopped",
    )
    name: Annotated[str, identifier("stage name"), IDENTIFIER_SCHEMA] = Field(
        description="unique in the workflow; letters, digits, '.', '_', '-'"
    )
    needs: Annotated[
        tuple[str, ...],
        BeforeValidator(one_or_many("a stage name or a list of stage names")),
        _names_schema("a stage name"),
    ] = Field((), description="stages that must be COMPLETED before this one runs")
    retries: Annotated[int, BeforeValidator(count_check(MAX_RETRIES)), Ge(0), Le(MAX_RETRIES)] = (
        Field(0, description="how many times a failed attempt is re-run")
    )
    run: NonEmptyText | None = Field(
        None, description="a shell command; without it the stage is a manual gate"
    )
    timeout: Seconds | None = Field(
        None, description="seconds of running time before the stage fails with 'timeout'"
    )

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        """``StageDefinition("build", run=…)``: the name may be given first."""
        if name is not None:
            data["name"] = name
        super().__init__(**data)

    # Like pydantic's RootModel: this __init__ only places the positional argument, so it
    # is marked as pydantic's own and validation from data does not go through it (which
    # would lose the validation context: file, snapshot or code).
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def not_a_mapping(cls, value: object) -> str:
        text = super().not_a_mapping(value)
        if isinstance(value, YamlScalar) and isinstance(value.value, str):
            text += f"; write '- name: {value}' for a stage named that"
        return text

    @property
    def stage_type(self) -> Literal["manual", "task"]:
        return "manual" if self.run is None else "task"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able snapshot of this stage (also the stage instance's ``config``)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageDefinition:
        """Rebuild a stage from :meth:`to_dict` output, re-checked with the file rules."""
        return validate(cls, data, source="snapshot")


def _stages(value: object) -> object:
    if not isinstance(value, list | tuple):
        raise problem(f"expected a list of stages, got {describe(value)}")
    if not value:
        raise problem("expected at least one stage, got none")
    return value


# -- notifications ----------------------------------------------------------------------------

#: What a workflow may announce: a session failing, waiting at a manual gate, completing;
#: ``any`` is all three.
NOTIFY_EVENTS: tuple[str, ...] = ("failure", "gate", "success", "any")
DEFAULT_NOTIFY_ON: tuple[str, ...] = ("failure", "gate")


def _notify_events(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise problem("expected at least one of failure, gate, success, any (or no 'notify')")
    for i, item in enumerate(value):
        if str(item) not in NOTIFY_EVENTS:
            raise problem(
                f"unknown event {describe(item)}{suggest(str(item), NOTIFY_EVENTS)}; "
                f"expected one of {', '.join(NOTIFY_EVENTS)}",
                i,
            )
    return tuple(dict.fromkeys(str(item) for item in value))


_EVENT_SCHEMA = {"enum": list(NOTIFY_EVENTS)}


class NotifyDefinition(_Model):
    """Who hears about a session of the workflow, and when: Apprise URLs (``to``, plus the
    ``VC_NOTIFY`` targets of the runner's environment) told of the events in ``on``."""

    expected: ClassVar[str] = "a mapping (on: [...], to: [...])"
    where: ClassVar[str] = "in notify"

    on: Annotated[
        tuple[str, ...],
        BeforeValidator(one_or_many("an event or a list of events")),
        AfterValidator(_notify_events),
        WithJsonSchema({"anyOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA}]}),
    ] = Field(
        DEFAULT_NOTIFY_ON,
        description="failure, gate, success or any (default: failure and gate)",
    )
    to: Annotated[
        tuple[str, ...],
        BeforeValidator(one_or_many("a URL or a list of URLs")),
        _names_schema("an Apprise URL: ntfy://TOPIC, mailto://…, json://HOST/PATH …"),
    ] = Field((), description="Apprise URLs; VC_NOTIFY adds targets for every workflow")

    @field_validator("to")
    @classmethod
    def _urls(cls, urls: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        """Each URL must be one Apprise can send to, checked when a file (or code) gives it;
        a snapshot was checked when its session was created and is taken as it is (the
        runner never imports Apprise to read one)."""
        if (info.context or {}).get("source") == "snapshot":
            return urls
        from store.targets import problem as url_problem

        for i, url in enumerate(urls):
            why = url_problem(str(url))
            if why is not None:
                raise problem(why, i)
        return tuple(dict.fromkeys(str(url).strip() for url in urls))

    def events(self) -> frozenset[str]:
        """The events announced, ``any`` spelled out."""
        return expand_events(self.on)


def expand_events(on: Iterable[str]) -> frozenset[str]:
    """``on`` as the set of events it names (``any``: failure, gate and success)."""
    names = set(on)
    if "any" in names:
        return frozenset(NOTIFY_EVENTS[:3])
    return frozenset(names)


# -- workflows --------------------------------------------------------------------------------


def _file_schema(schema: dict[str, Any]) -> None:
    """The schema as a workflow file sees it: the id and the name default to the file's."""
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["required"] = ["stages"]
    schema["properties"]["name"].pop("default", None)


class WorkflowDefinition(_Model):
    """A workflow: the stages a session runs (in order, or as ``needs`` say) and the
    parameters it takes. One YAML file in ``workflows/``; a session keeps a snapshot."""

    model_config = ConfigDict(title="vc workflow", json_schema_extra=_file_schema)

    expected: ClassVar[str] = "a mapping at the top level (id, name, description, stages)"
    where: ClassVar[str] = "at the top level"
    internal: ClassVar[frozenset[str]] = frozenset({"path"})

    # Declaration order is the order keys are listed in errors and in the schema.
    description: str | None = Field(None, description="free text")
    id: Annotated[str, identifier("workflow id"), IDENTIFIER_SCHEMA] = Field(
        description="defaults to the file name without .yaml; letters, digits, '.', '_', '-'"
    )
    name: str = Field("", description="a display name; defaults to the id")
    stages: Annotated[tuple[StageDefinition, ...], BeforeValidator(_stages)] = Field(
        description="run top to bottom unless 'needs' says otherwise",
        json_schema_extra={"minItems": 1},
    )
    params: Params = Field(
        default_factory=dict,
        description="parameters a session takes (--param KEY=VALUE), as VC_PARAM_<KEY>",
    )
    notify: NotifyDefinition | None = Field(
        None, description="who is told when a session fails, waits at a gate or completes"
    )
    path: SkipJsonSchema[str | None] = None

    @classmethod
    def unknown_key_hint(cls, key: str) -> str:
        return " (stage keys go under 'stages')" if key in StageDefinition.model_fields else ""

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> WorkflowDefinition:
        """Unique stage names; ``needs`` name other stages and form no cycle. Duplicate
        ``needs`` entries are dropped once checked (their positions are in the errors)."""
        if not self.name:
            object.__setattr__(self, "name", self.id)
        if (info.context or {}).get("source") is None:
            return self  # built in code: execution_order checks when asked
        index: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            first = index.get(stage.name)
            if first is not None:
                raise problem(
                    f"duplicate stage name {stage.name!r}; already used by {{first}}",
                    "stages",
                    i,
                    "name",
                    first=("stages", first),
                )
            index[stage.name] = i
        for i, stage in enumerate(self.stages):
            for j, need in enumerate(stage.needs):
                if need == stage.name:
                    raise problem(f"stage {need!r} needs itself", "stages", i, "needs", j)
                if need not in index:
                    raise problem(
                        f"unknown stage {short_repr(need)}{suggest(need, index)}; "
                        f"stages: {listed(list(index))}",
                        "stages",
                        i,
                        "needs",
                        j,
                    )
        cycle = _find_cycle([[index[n] for n in s.needs] for s in self.stages])
        if cycle:
            opener, second = self.stages[cycle[0]], self.stages[cycle[1]].name
            names = " -> ".join(self.stages[i].name for i in cycle)
            raise problem(
                f"dependency cycle: {names}",
                "stages",
                cycle[0],
                "needs",
                opener.needs.index(second),
            )
        if any(len(set(s.needs)) != len(s.needs) for s in self.stages):
            stages = tuple(
                s.model_copy(update={"needs": tuple(dict.fromkeys(s.needs))}) for s in self.stages
            )
            object.__setattr__(self, "stages", stages)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able snapshot stored on a session, so later edits of the file never change
        a session already created. ``path`` is kept as a record of where it came from."""
        snapshot = self.model_dump(mode="json")
        snapshot["params"] = {key: _compact_param(p) for key, p in snapshot["params"].items()}
        if snapshot["notify"] is None:
            del snapshot["notify"]  # the snapshots of workflows without it stay as they were
        return snapshot

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowDefinition:
        """Rebuild a definition from :meth:`to_dict` output, re-checked with the file rules
        (a snapshot is data from a database, possibly hand-edited); unknown keys are ignored."""
        return validate(cls, data, source="snapshot")

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
        ready = [i for i, n in enumerate(waiting) if n == 0]
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

    def resolve_params(self, given: Mapping[str, object] | None) -> dict[str, ParamValue]:
        """The parameter values of a new session: see :func:`resolve_params`."""
        return resolve_params(self.params, given, self.id)


def resolve_params(
    declared: Mapping[str, ParamDefinition],
    given: Mapping[str, object] | None,
    workflow_id: str,
) -> dict[str, ParamValue]:
    """Every parameter's value for a new session: the given one (text is parsed by type),
    else its default; a required one without a value, an unknown key or a value that does
    not fit raises :class:`ParamError` naming the parameter and what it accepts. An optional
    parameter without default and value is left out (its variable is not set)."""
    given = given or {}
    for key in given:
        if not isinstance(key, str) or not is_variable_key(key):
            shown = describe(key) if isinstance(key, str) else repr(key)
            raise ParamError(f"invalid parameter name {shown}: use {KEY_RULE}")
        if key not in declared:
            if not declared:
                raise ParamError(
                    f"unknown parameter {key!r}: workflow {workflow_id} takes no parameters"
                )
            raise ParamError(
                f"unknown parameter {key!r}{suggest(key, declared)}; workflow {workflow_id} "
                f"takes: {listed(list(declared))}"
            )
    values: dict[str, ParamValue] = {}
    for key, spec in declared.items():
        if key in given:
            try:
                values[key] = spec.coerce(given[key])
            except ValueError as exc:
                raise ParamError(
                    f"parameter {key!r} accepts {exc}, got {describe(given[key])}"
                ) from None
        elif spec.default is not None:
            values[key] = spec.default
        elif spec.required:
            raise ParamError(f"missing required parameter {key!r}: it accepts {spec.accepts()}")
    return values


def params_of(snapshot: Mapping[str, Any]) -> dict[str, ParamDefinition]:
    """The parameters declared in a definition snapshot (see :meth:`WorkflowDefinition.to_dict`)."""
    declared = snapshot.get("params") or {}
    if not declared:
        return {}
    return {
        key: validate(ParamDefinition, spec or {}, source="snapshot")
        for key, spec in _params(declared).items()
    }


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


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file, for editors (``vc flow schema``)."""
    return WorkflowDefinition.model_json_schema()


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
    A problem in the ``params`` section exits 2, like a bad parameter value."""
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
        code = 2 if loc[:1] == ("params",) else None
        err = WorkflowError(text, path=path, line=line, key=render_key(loc), exit_code=code)
        found.append((line if line is not None else math.inf, n, err))
    return min(found, key=lambda item: item[:2])[2]


M = TypeVar("M", bound=_Model)


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


__all__ = [
    "DEFAULT_KILL_TIMEOUT",
    "MAX_RETRIES",
    "MAX_SECONDS",
    "NOTIFY_EVENTS",
    "PARAM_TYPES",
    "NotifyDefinition",
    "ParamDefinition",
    "ParamValue",
    "StageDefinition",
    "WorkflowDefinition",
    "YamlScalar",
    "expand_events",
    "json_schema",
    "params_of",
    "resolve_params",
    "validate",
]
