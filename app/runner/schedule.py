"""The scheduler of one session's stage graph: which instances may start now, which wait,
and when nothing more can run. Pure bookkeeping over names (no store, no processes), so
every rule is tested on its own (tests/runner/test_schedule.py); the runner feeds it what
happened and asks it what to do next.

The rules (README, "Stages in parallel"): an instance may start once every instance it
waits for is COMPLETED, up to ``max_parallel`` task instances at once (a manual gate that
waits does not take a slot); among those free to start, the earlier in the workflow
starts first. An instance that waits for a failed (or cancelled) one never starts.
``only`` (``vc flow run WF:STAGE``) restricts the run to those instances, whatever they
wait for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

#: What the scheduler knows of an instance.
TODO, RUNNING, WAITING, DONE, FAILED = "todo", "running", "waiting", "done", "failed"


@dataclass
class Schedule:
    """The instances of one run, in position order, and where each one is."""

    names: Sequence[str]
    waits: Mapping[str, Sequence[str]]
    gates: frozenset[str]
    max_parallel: int
    state: dict[str, str] = field(default_factory=dict)

    @cached_property
    def position(self) -> dict[str, int]:
        """Each instance's place in the workflow, the order front ends list them in."""
        return {name: i for i, name in enumerate(self.names)}

    @classmethod
    def start(
        cls,
        names: Sequence[str],
        waits: Mapping[str, Sequence[str]],
        *,
        completed: Iterable[str],
        failed: Iterable[str] = (),
        gates: Iterable[str] = (),
        waiting: Iterable[str] = (),
        max_parallel: int,
        only: Iterable[str] | None = None,
    ) -> Schedule:
        """``completed``: instances already COMPLETED (never run again); ``failed``: those
        already FAILED (``fail_fast: false``: a runner before this one recorded them; they
        never run again in this run, and what waits for them never starts); ``waiting``:
        gates already waiting for approval. With ``only``, everything else counts as done:
        it neither runs nor holds up what is run."""
        done = set(completed)
        selected = None if only is None else set(only)
        state: dict[str, str] = {}
        for name in names:
            if name in done or (selected is not None and name not in selected):
                state[name] = DONE
            else:
                state[name] = TODO
        for name in failed:
            if state.get(name) == TODO:
                state[name] = FAILED
        for name in waiting:
            if state.get(name) == TODO:
                state[name] = WAITING
        if selected is not None:
            waits = {n: () if n in selected else waits.get(n, ()) for n in names}
        return cls(names, waits, frozenset(gates), max(1, max_parallel), state)

    # -- questions ---------------------------------------------------------------------------

    def running(self) -> list[str]:
        return [n for n in self.names if self.state[n] == RUNNING]

    def waiting_gates(self) -> list[str]:
        return [n for n in self.names if self.state[n] == WAITING]

    def free(self, name: str) -> bool:
        """Every instance it waits for is done."""
        return all(self.state.get(w, DONE) == DONE for w in self.waits.get(name, ()))

    def blocked(self, name: str) -> bool:
        """It waits (directly or not) for a failed instance: it can never start."""
        seen: set[str] = set()
        todo = list(self.waits.get(name, ()))
        while todo:
            other = todo.pop()
            if other in seen:
                continue
            seen.add(other)
            if self.state.get(other) == FAILED:
                return True
            todo.extend(self.waits.get(other, ()))
        return False

    def startable(self) -> list[str]:
        """What should start now, in order: free gates (they take no slot) and free task
        instances up to the slots left."""
        slots = self.max_parallel - len(self.running())
        picked: list[str] = []
        for name in self.names:
            if self.state[name] != TODO or not self.free(name):
                continue
            if name in self.gates:
                picked.append(name)
            elif slots > 0:
                picked.append(name)
                slots -= 1
        return picked

    def stuck_at_gates(self) -> bool:
        """Gates wait and nothing else runs or can start: only an approval moves it on."""
        return bool(self.waiting_gates()) and not self.running() and not self.startable()

    def finished(self) -> bool:
        """Nothing runs, waits or can ever start: the run is over."""
        return all(
            s in (DONE, FAILED) or (s == TODO and self.blocked(n)) for n, s in self.state.items()
        )

    def all_done(self) -> bool:
        return all(s == DONE for s in self.state.values())

    # -- what happened -----------------------------------------------------------------------

    def mark(self, name: str, state: str) -> None:
        self.state[name] = state
