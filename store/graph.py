"""The graph of a session's stages: the instances a ``matrix`` fans a stage out to, and what
each instance waits for. Plain data in and out (the snapshot's stage dicts, the stage rows'
names and configs): the session's creation, the runner's scheduler and the JSON of
``show`` read the same answers, and none of them needs the workflow model to get them.

The rules (see the README, "Stages in parallel"):

* a stage with ``needs`` waits for exactly those stages (``needs: []``: for nothing);
* a stage without ``needs`` follows the stage written before it, so a workflow without
  ``needs`` runs top to bottom. When that stage itself waits for this one (``b`` needs
  ``c``, written after it), it follows the closest earlier stage that does not: the order
  a workflow had before stages could run in parallel is kept, and no cycle is made up;
* waiting for a matrix stage is waiting for every instance of it.

A snapshot stored before stages could run in parallel (it has no ``fail_fast`` key) wrote
``needs: []`` for "nothing said": there, an empty ``needs`` is no ``needs``, and the
session runs one stage at a time (:func:`max_parallel`), exactly as it was started.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from store.views import StageView

#: Most instances one stage's matrix may make.
MAX_INSTANCES = 256


def is_legacy(snapshot: Mapping[str, Any]) -> bool:
    """Whether a session's definition snapshot predates parallel stages."""
    return "fail_fast" not in snapshot


def max_parallel(snapshot: Mapping[str, Any]) -> int:
    """How many stages of a session may run at once: the snapshot's ``max_parallel``, else
    the machine's cores; 1 for a snapshot that predates parallel stages."""
    if is_legacy(snapshot):
        return 1
    value = snapshot.get("max_parallel")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return os.cpu_count() or 1


def fail_fast(snapshot: Mapping[str, Any]) -> bool:
    return snapshot.get("fail_fast") is not False


#: The error of a stage instance that ``fail_fast`` stopped, or closed (a gate), because
#: another failed: ``cancelled: <stage> failed``.
_CANCELLED = "cancelled: "


def cancellation(failed_stage: str) -> str:
    """The error recorded for what ``fail_fast`` cancels after ``failed_stage`` failed."""
    return f"{_CANCELLED}{failed_stage} failed"


def is_cancellation(error: str | None) -> bool:
    """Whether a stage's error says it was cancelled, not that it failed by itself."""
    return (error or "").startswith(_CANCELLED)


def first_failed(stages: Sequence[StageView]) -> StageView | None:
    """The stage whose failure is the session's: the first to fail; a stage cancelled
    because of another counts only when no other failure is recorded."""
    failed = sorted(
        (s for s in stages if s.status == "FAILED"),
        key=lambda s: s.finished_at or 0.0,
    )
    if not failed:
        return None
    return next((s for s in failed if not is_cancellation(s.error)), failed[0])


def _explicit(stage: Mapping[str, Any], legacy: bool) -> list[str] | None:
    needs = stage.get("needs")
    if needs is None or (legacy and not needs):
        return None
    return [str(n) for n in needs]


def stage_needs(stages: Sequence[Mapping[str, Any]], *, legacy: bool = False) -> list[list[str]]:
    """Per stage (in file order), the names of the stages it waits for. Explicit ``needs``
    naming no stage are dropped here: validating a workflow refuses them first."""
    index = {str(s.get("name")): i for i, s in enumerate(stages)}
    edges: list[set[int]] = [set() for _ in stages]
    implicit: list[int] = []
    for i, stage in enumerate(stages):
        explicit = _explicit(stage, legacy)
        if explicit is None:
            implicit.append(i)
        else:
            edges[i] = {index[n] for n in explicit if n in index and index[n] != i}

    def reaches(start: int, goal: int) -> bool:
        seen = {start}
        todo = [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            for nxt in edges[node]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    for i in implicit:
        for j in range(i - 1, -1, -1):
            if not reaches(j, i):
                edges[i] = {j}
                break
    names = [str(s.get("name")) for s in stages]
    return [[names[j] for j in sorted(e)] for e in edges]


def matrix_combinations(matrix: Mapping[str, Sequence[Any]] | None) -> list[dict[str, str]]:
    """The value sets of a matrix, in the order written (the last key varies fastest)."""
    if not matrix:
        return []
    keys = list(matrix)
    return [
        dict(zip(keys, (scalar_text(v) for v in values), strict=True))
        for values in itertools.product(*(matrix[k] for k in keys))
    ]


def matrix_size(matrix: Mapping[str, Sequence[Any]] | None) -> int:
    """How many instances a matrix makes (1 without one)."""
    count = 1
    for values in (matrix or {}).values():
        count *= len(values)
    return count


def scalar_text(value: Any) -> str:
    """A matrix value as its instance name and ``VC_MATRIX_<KEY>`` carry it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def instance_name(stage: str, values: Mapping[str, str] | None) -> str:
    """``stage[key=value,…]`` for a matrix instance, the stage's name otherwise."""
    if not values:
        return stage
    return f"{stage}[{','.join(f'{k}={v}' for k, v in values.items())}]"


def expand(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stage rows of a new session: one per stage, or one per combination of its
    ``matrix`` (its config then carries ``instance``: the values). Each config also
    carries ``needs`` as the scheduler reads them (the stage names waited for)."""
    stages = list(snapshot.get("stages") or [])
    needs = stage_needs(stages, legacy=is_legacy(snapshot))
    rows: list[dict[str, Any]] = []
    for stage, waits in zip(stages, needs, strict=True):
        name = str(stage["name"])
        kind = "manual" if stage.get("run") is None else "task"
        combos: list[dict[str, str] | None] = list(matrix_combinations(stage.get("matrix")))
        for values in combos or [None]:
            config = dict(stage)
            config["instance"] = values
            config["waits_for"] = waits
            rows.append({"name": instance_name(name, values), "stage_type": kind, "config": config})
    return rows


def stage_of(name: str, config: Mapping[str, Any]) -> str:
    """The workflow stage a row is an instance of."""
    return str(config.get("name") or name.split("[", 1)[0])


def instance_waits(
    rows: Sequence[tuple[str, Mapping[str, Any]]], snapshot: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Per stage row (name, config), in position order, the names of the rows it waits for.
    Rows made before parallel stages carry no ``waits_for``: theirs come from the
    snapshot's stages (a row the snapshot does not know, added in code, waits for the row
    before it)."""
    by_stage: dict[str, list[str]] = {}
    for name, config in rows:
        by_stage.setdefault(stage_of(name, config), []).append(name)
    fallback: dict[str, list[str]] | None = None
    waits: dict[str, list[str]] = {}
    previous: str | None = None
    for name, config in rows:
        stages = config.get("waits_for")
        if stages is None:
            if fallback is None:
                defs = list(snapshot.get("stages") or [])
                needs = stage_needs(defs, legacy=is_legacy(snapshot))
                fallback = {str(d.get("name")): n for d, n in zip(defs, needs, strict=True)}
            stage = stage_of(name, config)
            stages = fallback.get(stage)
        if stages is None:
            waits[name] = [previous] if previous is not None else []
        else:
            waits[name] = [row for s in stages for row in by_stage.get(str(s), [])]
        previous = name
    return waits
