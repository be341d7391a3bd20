"""The typed model of a workflow: stages, notifications and the workflow itself, which
validate workflow files (read by :mod:`store.workflows`), the snapshots sessions keep and
definitions built in code, and document themselves as the JSON Schema ``vc flow schema``
prints. How a model is written (so that a new key is one field) is said in
:mod:`store.definition_base`; parameters live in :mod:`store.param_definitions`.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from store.definition_base import (
    DEFAULT_KILL_TIMEOUT,
    IDENTIFIER_SCHEMA,
    MAX_RETRIES,
    MAX_SECONDS,
    PARAM_TYPES,
    DefinitionModel,
    Env,
    Flag,
    NonEmptyText,
    ParamValue,
    Seconds,
    YamlScalar,
    count_check,
    describe,
    identifier,
    names_schema,
    one_or_many,
    problem,
    typed,
    validate,
    written_plainly,
)
from store.errors import WorkflowError
from store.graph import MAX_INSTANCES, is_legacy, scalar_text, stage_needs
from store.names import (
    OWN_PREFIXES,
    OWN_VARIABLES,
    is_own_variable,
    matrix_variable,
    short_repr,
)
from store.param_definitions import (
    ParamDefinition,
    Params,
    compact_param,
    params_of,
    resolve_params,
)
from store.text import listed, suggest

# -- stages -----------------------------------------------------------------------------------


_MATRIX_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Characters a matrix value may not hold: they would make instance names ambiguous.
_NAME_MARKS = frozenset("[],=")


def _matrix(value: object) -> dict[str, tuple[str, ...]]:
    """``{key: [value, …]}``: identifiers as keys (they become ``VC_MATRIX_<KEY>``), each
    with a non-empty list of distinct scalars, taken as written."""
    if not isinstance(value, Mapping):
        raise problem(f"expected a mapping of key: [values], got {describe(value)}")
    if not value:
        raise problem("expected at least one key, got none (omit 'matrix' instead)")
    matrix: dict[str, tuple[str, ...]] = {}
    upper: dict[str, str] = {}
    count = 1
    for key, values in value.items():
        if not isinstance(key, str) or not _MATRIX_KEY.fullmatch(key):
            raise problem(
                f"matrix key {describe(key)} is not an identifier (letters, digits, '_'; "
                "not starting with a digit)",
                str(key),
                on_key=True,
            )
        if key.upper() in upper:
            raise problem(
                f"matrix keys {upper[key.upper()]!r} and {key!r} are the same variable "
                f"VC_MATRIX_{key.upper()}",
                key,
                on_key=True,
            )
        upper[key.upper()] = key
        if not isinstance(values, list | tuple) or not values:
            got = "an empty list" if isinstance(values, list | tuple) else describe(values)
            raise problem(f"expected a non-empty list of values, got {got}", key)
        texts: list[str] = []
        for j, item in enumerate(values):
            scalar = typed(item)
            if scalar is None or not isinstance(scalar, str | int | float | bool):
                raise problem(f"expected a string, number or boolean, got {describe(item)}", key, j)
            text = str(item) if isinstance(item, str) else scalar_text(scalar)
            if not text or any(c in _NAME_MARKS or ord(c) < 32 for c in text):
                raise problem(
                    f"matrix value {describe(item)} must be non-empty, without '[', ']', "
                    "',', '=' or control characters (it is part of the instance's name)",
                    key,
                    j,
                )
            if text in texts:
                raise problem(f"duplicate matrix value {describe(item)}", key, j)
            texts.append(text)
        count *= len(texts)
        if count > MAX_INSTANCES:
            raise problem(
                f"the matrix makes more than {MAX_INSTANCES} instances "
                f"({' x '.join(str(len(v)) for v in (*matrix.values(), texts))} so far)"
            )
        matrix[key] = tuple(texts)
    return matrix


#: A stage's fan-out: each key's values as written.
Matrix = Annotated[
    dict[str, tuple[str, ...]],
    BeforeValidator(_matrix),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {"type": ["string", "number", "boolean"]},
            },
        }
    ),
]


#: What only a running process uses: refused on a manual gate in a file, where it would be
#: shown and never applied.
_TASK_ONLY = ("cwd", "env", "kill_timeout", "retries", "stderr", "timeout")


class StageDefinition(DefinitionModel):
    """One stage: a task if it has ``run``, else a manual gate the session waits at."""

    expected: ClassVar[str] = "a stage mapping (name: …, run: …)"
    null_refused: ClassVar[Mapping[str, str]] = {
        "run": "expected a shell command, got nothing (a manual gate has no 'run')"
    }
    where: ClassVar[str] = "in a stage"

    checklist: Annotated[
        tuple[str, ...],
        BeforeValidator(one_or_many("a list of strings")),
        names_schema("something to check before passing a manual gate"),
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
    matrix: Matrix | None = Field(
        None,
        description=(
            "one instance of the stage per combination of these values (at most "
            f"{MAX_INSTANCES}), named stage[key=value,…], each with VC_MATRIX_<KEY>"
        ),
    )
    needs: Annotated[
        tuple[str, ...] | None,
        BeforeValidator(one_or_many("a stage name or a list of stage names")),
        names_schema("a stage name"),
    ] = Field(
        None,
        description=(
            "stages that must be COMPLETED before this one runs ([]: none); "
            "without it, the stage follows the one written before it"
        ),
    )
    retries: Annotated[int, BeforeValidator(count_check(MAX_RETRIES)), Ge(0), Le(MAX_RETRIES)] = (
        Field(0, description="how many times a failed attempt is re-run")
    )
    run: NonEmptyText | None = Field(
        None, description="a shell command; without it the stage is a manual gate"
    )
    stderr: Literal["warning", "merged"] = Field(
        "warning",
        description=(
            "warning: stderr lines are logged at WARNING, read from a pipe of their own (a "
            "burst written to both streams may be logged out of order); merged: stderr "
            "goes into stdout's pipe, every line in the order written, at INFO"
        ),
    )
    timeout: Seconds | None = Field(
        None, description="seconds of running time before the stage fails with 'timeout'"
    )

    @model_validator(mode="after")
    def _nothing_vc_would_override(self, info: ValidationInfo) -> StageDefinition:
        """In a file, ``env`` may not set a variable vc sets itself (it would be overridden,
        silently), and a task stage takes no ``checklist`` (nothing would show it).
        Snapshots and definitions built in code are taken as they are."""
        if (info.context or {}).get("source") != "file":
            return self
        for name in self.env:
            own = is_own_variable(name)
            if own or any(name == matrix_variable(key) for key in self.matrix or {}):
                what = (
                    f"{', '.join(OWN_VARIABLES[:3])}, {', '.join(p + '*' for p in OWN_PREFIXES)}"
                    "; VC_NOTIFY is kept from stages"
                    if own
                    else "the stage's matrix gives each instance its value"
                )
                raise problem(
                    f"{name} is set by vc itself ({what}): choose another name",
                    "env",
                    name,
                    on_key=True,
                )
        if self.checklist and self.run is not None:
            raise problem(
                "checklist belongs to a manual gate (a stage without 'run'): "
                "nothing shows it on a task stage",
                "checklist",
                on_key=True,
            )
        if self.run is None:
            for key in _TASK_ONLY:
                if key in self.model_fields_set:
                    why = (
                        "waits for approve with no deadline"
                        if key == "timeout"
                        else "runs nothing, so nothing would apply it"
                    )
                    raise problem(
                        f"{key} belongs to a task stage (a stage with 'run'): a manual gate {why}",
                        key,
                        on_key=True,
                    )
        return self

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


#: Most stages of one session running at once (a typo like 10000 is refused, not obeyed).
MAX_PARALLEL = 1024


def _at_least_one(maximum: int) -> Any:
    def check(value: object) -> object:
        if value is None:
            return None
        number = typed(value)
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise problem(f"expected an integer >= 1, got {describe(value)}")
        written_plainly(value, integer=True)
        if number > maximum:
            raise problem(f"expected at most {maximum}, got {describe(value)}")
        return number

    return check


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


class NotifyDefinition(DefinitionModel):
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
        names_schema("an Apprise URL: ntfy://TOPIC, mailto://…, json://HOST/PATH …"),
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


#: The longest display name of a workflow: it heads every listing of the workflow, as a
#: session's name does (store.new_session.MAX_NAME).
MAX_DISPLAY_NAME = 200


def _display_name(value: str, info: ValidationInfo) -> str:
    """Checked when a file (or code) gives it; a session's snapshot is taken as it was
    when the session was made (one from before this limit must still load)."""
    if len(value) > MAX_DISPLAY_NAME and (info.context or {}).get("source") != "snapshot":
        raise problem(
            f"a display name holds at most {MAX_DISPLAY_NAME} characters, got {len(value):,}"
        )
    return value


class WorkflowDefinition(DefinitionModel):
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
    name: Annotated[str, AfterValidator(_display_name)] = Field(
        "",
        description=f"a display name; defaults to the id (at most {MAX_DISPLAY_NAME} characters)",
    )
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
    max_parallel: Annotated[
        int | None, BeforeValidator(_at_least_one(MAX_PARALLEL)), Ge(1), Le(MAX_PARALLEL)
    ] = Field(
        None,
        description="stages of one session running at once; default: the machine's cores",
    )
    fail_fast: Flag = Field(
        True,
        description="a failed stage stops the running ones (false: independent branches finish)",
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
            for j, need in enumerate(stage.needs or ()):
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
        cycle = _find_cycle([[index[n] for n in s.needs or ()] for s in self.stages])
        if cycle:
            opener, second = self.stages[cycle[0]], self.stages[cycle[1]].name
            names = " -> ".join(self.stages[i].name for i in cycle)
            raise problem(
                f"dependency cycle: {names}",
                "stages",
                cycle[0],
                "needs",
                (opener.needs or ()).index(second),
            )
        if any(s.needs and len(set(s.needs)) != len(s.needs) for s in self.stages):
            stages = tuple(
                s.model_copy(update={"needs": tuple(dict.fromkeys(s.needs))}) if s.needs else s
                for s in self.stages
            )
            object.__setattr__(self, "stages", stages)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able snapshot stored on a session, so later edits of the file never change
        a session already created. ``path`` is kept as a record of where it came from."""
        snapshot = self.model_dump(mode="json")
        snapshot["params"] = {key: compact_param(p) for key, p in snapshot["params"].items()}
        if snapshot["notify"] is None:
            del snapshot["notify"]  # the snapshots of workflows without it stay as they were
        return snapshot

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkflowDefinition:
        """Rebuild a definition from :meth:`to_dict` output, re-checked with the file rules
        (a snapshot is data from a database, possibly hand-edited); unknown keys are ignored.
        A snapshot from before parallel stages (no ``fail_fast``) wrote ``needs: []`` for
        "nothing said" (:mod:`store.graph`): it reads as no ``needs``."""
        if is_legacy(data) and isinstance(data.get("stages"), list):
            data = dict(data)
            data["stages"] = [
                {k: v for k, v in st.items() if not (k == "needs" and not v)}
                if isinstance(st, Mapping)
                else st
                for st in data["stages"]
            ]
        return validate(cls, data, source="snapshot")

    def stage(self, name: str) -> StageDefinition:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def execution_order(self) -> list[str]:
        """Stage names in dependency order (``needs``, or following the stage written
        before, see :mod:`store.graph`); among stages free to run, file order wins. The
        order a session running one stage at a time follows."""
        index: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            index.setdefault(stage.name, i)
        for stage in self.stages:
            for need in stage.needs or ():
                if need not in index:
                    raise WorkflowError(
                        f"stage {stage.name!r} needs unknown stage {need!r}", path=self.path
                    )
        needs = self.stage_needs()
        waiting = [0] * len(self.stages)
        dependents: list[list[int]] = [[] for _ in self.stages]
        for i, waits in enumerate(needs):
            for need in dict.fromkeys(waits):
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
            cycle = _find_cycle([[index[n] for n in s.needs or ()] for s in self.stages]) or []
            names = " -> ".join(self.stages[i].name for i in cycle)
            raise WorkflowError(f"dependency cycle: {names}", path=self.path)
        return order

    def stage_needs(self) -> list[list[str]]:
        """Per stage, in file order, the stages it waits for (:func:`store.graph.stage_needs`)."""
        return stage_needs([{"name": s.name, "needs": s.needs} for s in self.stages])

    def resolve_params(self, given: Mapping[str, object] | None) -> dict[str, ParamValue]:
        """The parameter values of a new session: see :func:`resolve_params`."""
        return resolve_params(self.params, given, self.id)


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


#: annotated-types' bounds as JSON Schema keywords. Pydantic writes a bound it cannot apply
#: itself (one after a ``BeforeValidator``, as ours are) under its own name, which no
#: editor knows: ``max_parallel: 0`` would pass an editor that vc refuses.
_BOUND_KEYWORDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusiveMinimum",
    "lt": "exclusiveMaximum",
}


def _json_bounds(node: Any) -> Any:
    if isinstance(node, dict):
        return {_BOUND_KEYWORDS.get(k, k): _json_bounds(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_json_bounds(v) for v in node]
    return node


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file, for editors (``vc flow schema``)."""
    schema: dict[str, Any] = _json_bounds(WorkflowDefinition.model_json_schema())
    return schema


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
