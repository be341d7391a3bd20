"""Which stage rows ``vc flow run WORKFLOW:STAGE`` means: a stage's name (every instance
of a matrix stage) or one instance, ``STAGE[key=value,…]``, its keys in any order.

Pure: it reads the stage rows as (name, config) pairs, those of a session or those a new
session of a workflow would get (:func:`store.graph.expand`), and answers with the one
string the runner takes (``only_stage``): the stage's name, or the instance's canonical
name (:func:`store.graph.instance_name`: the keys in the order the matrix writes them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from store.errors import InvalidStageName, StageNotFound, WorkflowError
from store.graph import instance_name, stage_of
from store.names import validate_identifier
from store.text import listed, suggest

_INSTANCE = re.compile(r"([^\[\]]+)\[([^\[\]]*)\]")
#: How many instance names a refusal lists before it says how many there are.
_SHOWN = 6

Pairs = list[tuple[str, str]]


def parse_stage(spec: str) -> tuple[str, Pairs | None]:
    """``STAGE`` -> (STAGE, None); ``STAGE[k=v,…]`` -> (STAGE, [(k, v), …]) as written.
    A form no stage or instance name can take (``''``, ``a:b``, ``x[`` …) raises
    :class:`InvalidStageName`."""
    if "[" not in spec and "]" not in spec:
        return _named(spec), None
    found = _INSTANCE.fullmatch(spec)
    if found is None:
        raise InvalidStageName(
            f"invalid stage {spec!r}: use STAGE or STAGE[key=value,…] (one matrix instance)"
        )
    stage, inner = _named(found.group(1)), found.group(2)
    pairs: Pairs = []
    for part in inner.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidStageName(
                f"invalid instance {spec!r}: expected key=value pairs separated by ',', "
                f"got {part!r}"
            )
        if any(key == k for k, _ in pairs):
            raise InvalidStageName(f"invalid instance {spec!r}: key {key!r} given twice")
        pairs.append((key, value))
    return stage, pairs


def _named(stage: str) -> str:
    """``stage`` if a stage can be called so (every stage name is checked by the same rule
    when it is made), else :class:`InvalidStageName`: a usage error, found before any
    workflow or session is looked up."""
    try:
        return validate_identifier(stage, "stage")
    except WorkflowError as exc:
        raise InvalidStageName(str(exc)) from None


def select_stage(spec: str, rows: Sequence[tuple[str, Mapping[str, Any]]], owner: str) -> str:
    """The ``only_stage`` that ``spec`` means among ``rows`` (stage rows as (name, config),
    in position order). ``owner`` words the refusals (``workflow 'thumbs'``,
    ``session 3f2a9c0b1d2e``): a stage or an instance it does not have raises
    :class:`StageNotFound` naming what it has (exit code 1), a malformed ``spec`` (or a
    name no stage can have: empty, ``a:b``) :class:`InvalidStageName` (exit code 2)."""
    stage, pairs = parse_stage(spec)
    names = [name for name, _ in rows]
    stages = list(dict.fromkeys(stage_of(name, config) for name, config in rows))
    if stage not in stages:
        raise StageNotFound(
            f"{owner} has no stage {stage!r}{suggest(stage, stages)}; stages: {listed(stages)}"
        )
    if pairs is None:
        return stage
    instances: list[tuple[str, Mapping[str, Any]]] = []
    for name, config in rows:
        values = config.get("instance")
        if stage_of(name, config) == stage and isinstance(values, Mapping):
            instances.append((name, values))
    if not instances:
        raise StageNotFound(
            f"stage {stage!r} of {owner} has no matrix, so no instance {spec!r}; "
            f"run it by its name: {stage!r}"
        )
    keys = [str(k) for k in instances[0][1]]
    given = dict(pairs)
    unknown = [k for k in given if k not in keys]
    if unknown:
        raise StageNotFound(
            f"the matrix of stage {stage!r} has no key {unknown[0]!r}; keys: {', '.join(keys)}"
        )
    missing = [k for k in keys if k not in given]
    if missing:
        raise StageNotFound(
            f"instance {spec!r} names no value for {', '.join(missing)}: an instance takes "
            f"every key of the matrix ({', '.join(keys)}); the stage's name alone names "
            "all of its instances"
        )
    chosen: dict[str, str] = {}
    for key in keys:
        written = {str(v[key]) for _, v in instances if key in v}
        value = given[key]
        chosen[key] = value if value in written or value.strip() not in written else value.strip()
    wanted = instance_name(stage, chosen)
    if wanted in names:
        return wanted
    shown = [name for name, _ in instances[:_SHOWN]]
    more = f", … ({len(instances)} in all)" if len(instances) > _SHOWN else ""
    raise StageNotFound(f"{owner} has no instance {wanted!r}; instances: {', '.join(shown)}{more}")
