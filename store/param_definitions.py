"""A workflow's parameters: their declaration (``params:``), how a value given as text is
checked and typed, and the values a new session gets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, cast

from pydantic import (
    BeforeValidator,
    Field,
)
from pydantic_core import PydanticCustomError

from store.definition_base import (
    FALSE_WORDS,
    FLOAT_TEXT,
    INT_TEXT,
    MAX_INT,
    MAX_PARAM_TEXT,
    MIN_INT,
    PARAM_TYPES,
    TRUE_WORDS,
    DefinitionModel,
    Flag,
    ParamType,
    ParamValue,
    describe,
    problem,
    typed,
    validate,
    written_plainly,
)
from store.errors import ParamError
from store.names import KEY_RULE, is_variable_key, param_text
from store.text import clean_text, listed, suggest

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
    if ptype == "int" and not isinstance(inner, int):
        raise problem(f"expected an integer, got {describe(value)}")
    if ptype == "float" and not (abs(inner) < 2**1024 and math.isfinite(inner)):
        # an integer past 2**1024 does not even convert to a float: as infinite as .inf
        raise problem(f"expected a finite number, got {describe(value)}")
    written_plainly(value, integer=ptype == "int")
    if ptype == "int":
        if not MIN_INT <= inner <= MAX_INT:
            raise problem(f"expected a 64-bit integer, got {describe(value)}")
        return inner
    return float(inner)


def _utf8(text: str) -> bool:
    """Whether ``text`` can be written in UTF-8 (no unpaired surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ParamDefinition(DefinitionModel):
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
                    value = _param_value(ptype, choice)
                except PydanticCustomError as exc:
                    raise problem(str(exc), "choices", i) from None
                if isinstance(value, str) and clean_text(value) != value:
                    # shown cleaned, it would read as another choice that is then refused
                    raise problem(
                        f"choice {value!r} holds a control or invisible format character: "
                        "no one could see or type it",
                        "choices",
                        i,
                    )
                if value in values and source != "snapshot":  # one made before this check
                    raise problem(f"choice {param_text(value)} is listed twice", "choices", i)
                outside = _outside(value, low, high)
                if outside and source != "snapshot":  # one made before this check loads
                    # accepted by one rule, refused by the other: no run could pass it
                    raise problem(f"choice {param_text(value)} is {outside}", "choices", i)
                values.append(value)
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
                try:
                    value = float(value)
                except OverflowError:  # an int beyond any float
                    raise ValueError(self.accepts()) from None
                if not math.isfinite(value):
                    raise ValueError(self.accepts())
            elif not MIN_INT <= value <= MAX_INT:
                raise ValueError(self.accepts())
            parsed = value
        else:
            raise ValueError(self.accepts())
        if self.refusal(parsed) is not None:
            raise ValueError(self.accepts())
        return parsed

    def parse(self, text: str) -> ParamValue:
        """A value written as text: ``42``, ``1e-3``, ``true``/``no``, or any string."""
        if "\x00" in text or len(text) > MAX_PARAM_TEXT or not _utf8(text):
            # an unpaired surrogate (the Python API) could never reach a stage's environment
            raise ValueError(
                f"{self.accepts()} (without NUL, in UTF-8, at most {MAX_PARAM_TEXT} characters)"
            )
        if self.type == "str":
            return text
        if self.type == "bool":
            lowered = text.strip().lower()
            if lowered in TRUE_WORDS:
                return True
            if lowered in FALSE_WORDS:
                return False
            raise ValueError(self.accepts())
        stripped = text.strip()
        if self.type == "int":
            if not INT_TEXT.fullmatch(stripped) or len(stripped) > 20:
                raise ValueError(self.accepts())
            number = int(stripped)
            if not MIN_INT <= number <= MAX_INT:
                raise ValueError(self.accepts())
            return number
        if not FLOAT_TEXT.fullmatch(stripped) or len(stripped) > 64:
            raise ValueError(self.accepts())
        result = float(stripped)
        if not math.isfinite(result):
            raise ValueError(self.accepts())
        return result

    def to_dict(self) -> dict[str, Any]:
        """The snapshot of the declaration: only what differs from the defaults."""
        return compact_param(self.model_dump(mode="json"))


_PARAM_DEFAULTS = {name: field.default for name, field in ParamDefinition.model_fields.items()}


def compact_param(dumped: dict[str, Any]) -> dict[str, Any]:
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


def _outside(value: ParamValue, low: ParamValue | None, high: ParamValue | None) -> str | None:
    """How a number is outside [``low``, ``high``] (None when inside, or not a number;
    bounds exist only on int and float parameters)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(low, int | float) and value < low:
        return f"below min {param_text(low)}"
    if isinstance(high, int | float) and value > high:
        return f"above max {param_text(high)}"
    return None
