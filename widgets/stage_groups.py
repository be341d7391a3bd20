"""How the stage list groups the instances of a matrix stage: plain Python, no Textual.

A matrix stage has up to 256 instances (``resize[size=small,format=png]`` …), which would
drown the few other stages of a session. The list shows them under one row, the group,
whose values sum its instances up: ``resize 4/6`` (COMPLETED / instances), one status, the
mean progress, the longest attempt, the time from the first start to the last end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len

from widgets.data import ACTIVE, COMPLETED, FAILED, PAUSED, PENDING, StageRow
from widgets.formatting import clamp_progress, cut_middle
from widgets.timing import stage_end

OPEN_MARK = "▾"
CLOSED_MARK = "▸"


@dataclass(frozen=True)
class Block:
    """One row of the list's top level: a stage of its own (``group`` None, one row), or
    the instances of one matrix stage, in their order."""

    group: str | None
    rows: tuple[StageRow, ...]

    @property
    def shape(self) -> tuple[str | None, tuple[str, ...]]:
        """What must stay the same for the block's widgets to be updated in place."""
        return self.group, tuple(row.name for row in self.rows)


def blocks(stages: Sequence[StageRow]) -> list[Block]:
    """The top level of the list: consecutive instances of the same matrix stage make one
    block, every other stage a block of its own."""
    result: list[Block] = []
    for stage in stages:
        last = result[-1] if result else None
        if stage.group is not None and last is not None and last.group == stage.group:
            result[-1] = Block(last.group, (*last.rows, stage))
        else:
            result.append(Block(stage.group, (stage,)))
    return result


def group_status(rows: Sequence[StageRow]) -> str:
    """FAILED if any failed; else ACTIVE if any runs; else PAUSED if any is paused; else
    COMPLETED if all are; else PENDING."""
    statuses = {row.status for row in rows}
    for status in (FAILED, ACTIVE, PAUSED):
        if status in statuses:
            return status
    if statuses == {COMPLETED}:
        return COMPLETED
    return PENDING


def group_label(group: str, rows: Sequence[StageRow], opened: bool) -> str:
    """``▸ resize 4/6``: the open/closed mark, the stage, COMPLETED instances / instances."""
    done = sum(1 for row in rows if row.status == COMPLETED)
    return f"{OPEN_MARK if opened else CLOSED_MARK} {group} {done}/{len(rows)}"


def group_row(group: str, rows: Sequence[StageRow], opened: bool) -> StageRow:
    """The group's own row, summing up its instances (``rows``, at least one)."""
    status = group_status(rows)
    starts = [row.started_at for row in rows if row.started_at is not None]
    # Its clock runs while an instance runs; else it stopped when the last one that
    # started stopped (instances never started do not hold it open).
    ends = [stage_end(row) for row in rows if row.started_at is not None]
    stopped = [end for end in ends if end is not None]
    finished = max(stopped) if stopped and len(stopped) == len(ends) else None
    paused = [row.updated_at for row in rows if row.status == PAUSED and row.updated_at]
    failed = [row for row in rows if row.status == FAILED]
    error = None
    if failed:
        # the first to fail: the instances a fail_fast failure cancels fail after it
        first = min(failed, key=lambda row: (row.finished_at is None, row.finished_at or 0.0))
        error = f"{first.name}: {first.error or 'failed'}"
        if len(failed) > 1:
            error += f" (and {len(failed) - 1} more failed)"
    return StageRow(
        name=group_label(group, rows, opened),
        status=status,
        progress=sum(clamp_progress(row.progress) for row in rows) / len(rows),
        attempt=max(row.attempt for row in rows),
        exit_code=None,
        started_at=min(starts) if starts else None,
        finished_at=finished,
        error=error,
        updated_at=min(paused) if status == PAUSED and paused else None,
        group=group,
        summary=True,
    )


def keys_fit(rows: Sequence[StageRow], width: int | None) -> bool:
    """Whether every instance of a group fits in ``width`` cells with its keys: the group
    then shows them all with keys, else all without (one form per group, never mixed)."""
    return width is None or all(cell_len(instance_label(row)) <= width for row in rows)


def instance_label(row: StageRow, width: int | None = None, *, keyed: bool | None = None) -> str:
    """An instance's name under its group's row, indented: its matrix values with their
    keys (``  size=small,format=png``), or without them (``  small,png``) when ``keyed`` is
    False (None: when the keyed label does not fit in ``width`` cells); the whole name if
    it does not read ``group[key=value,…]``. When even the values do not fit, each is cut
    to fit, the longest first and never below one character (``  sm,png``, ``  sm,w…p``):
    cut values tell most instances apart, where an ellipsis at the end of the first value
    made every one read ``small…``. A value cut to three characters or more keeps its start
    and its end around a ``…`` (``data-…-04``): values often differ at the end only (a
    number, an extension), and a cut that kept the start alone made them read alike. Cut
    values can still collide; the log pane and the details name each instance in full."""
    name = row.name
    if not (row.group and name.startswith(row.group + "[") and name.endswith("]")):
        return "  " + name
    values = name[len(row.group) + 1 : -1]
    label = "  " + values
    if keyed is None:
        keyed = width is None or cell_len(label) <= width
    if keyed:
        return label
    bare = matrix_values(values)
    return label if bare is None else "  " + _cut_to_fit(bare, width)


def matrix_values(keyed: str) -> list[str] | None:
    """The values of an instance's ``key=value,…`` (what its name holds between the
    brackets), None when it does not read so."""
    pairs = [pair.partition("=") for pair in keyed.split(",")]
    return [value for _, _, value in pairs] if all(sep for _, sep, _ in pairs) else None


def _cut_to_fit(values: list[str], width: int | None) -> str:
    """``values`` joined by commas in ``width`` cells less the indent, the longest value
    shortened first, each kept at least one character long."""
    lengths = [cell_len(value) for value in values]
    if width is not None:
        room = width - 2
        while sum(lengths) + len(lengths) - 1 > room and max(lengths) > 1:
            longest = lengths.index(max(lengths))
            lengths[longest] -= 1
    return ",".join(cut_middle(value, n) for value, n in zip(values, lengths, strict=True))


__all__ = [
    "CLOSED_MARK",
    "OPEN_MARK",
    "Block",
    "blocks",
    "group_label",
    "group_row",
    "group_status",
    "instance_label",
    "keys_fit",
    "matrix_values",
]
