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
    """The instances of one run, in position order, and where each one is.

    ``state`` is the truth; beside it the instances running, the gates waiting and those
    free to start are kept up to date by :meth:`mark`, so the questions the runner asks at
    every turn of its loop cost what is running or ready, not a scan of the whole graph
    (which made a run of n stages cost n² in a long workflow)."""

    names: Sequence[str]
    waits: Mapping[str, Sequence[str]]
    gates: frozenset[str]
    max_parallel: int
    state: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._running: set[str] = set()
        self._waiting: set[str] = set()
        self._ready: set[str] = set()
        #: Per instance, how many of those it waits for are not DONE.
        self._blockers: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        for name in self.names:
            self.state.setdefault(name, TODO)
        for name in self.names:
            count = 0
            for other in self.waits.get(name, ()):
                self._dependents.setdefault(other, []).append(name)
                if self.state.get(other, DONE) != DONE:
                    count += 1
            self._blockers[name] = count
            self._file(name, self.state[name])

    @cached_property
    def position(self) -> dict[str, int]:
        """Each instance's place in the workflow, the order front ends list them in."""
        return {name: i for i, name in enumerate(self.names)}

    def _in_order(self, names: Iterable[str]) -> list[str]:
        return sorted(names, key=self.position.__getitem__)

    def _file(self, name: str, state: str) -> None:
        """Put ``name`` in the sets its state (and its blockers) call for."""
        if state == RUNNING:
            self._running.add(name)
        elif state == WAITING:
            self._waiting.add(name)
        elif state == TODO and self._blockers.get(name, 0) == 0:
            self._ready.add(name)

    def _unfile(self, name: str) -> None:
        self._running.discard(name)
        self._waiting.discard(name)
        self._ready.discard(name)

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
        return self._in_order(self._running)

    def waiting_gates(self) -> list[str]:
        return self._in_order(self._waiting)

    def free(self, name: str) -> bool:
        """Every instance it waits for is done."""
        return all(self.state.get(w, DONE) == DONE for w in self.waits.get(name, ()))

    def blocked(self, name: str) -> bool:
        """It waits (directly or not) for a failed instance: it can never start."""
        return self._failed_upstream(name, first_only=True) != []

    def _failed_upstream(self, name: str, *, first_only: bool = False) -> list[str]:
        """The failed instances ``name`` waits for, directly or not (the first one found
        only, with ``first_only``)."""
        seen: set[str] = set()
        found: list[str] = []
        todo = list(self.waits.get(name, ()))
        while todo:
            other = todo.pop()
            if other in seen:
                continue
            seen.add(other)
            if self.state.get(other) == FAILED:
                found.append(other)
                if first_only:
                    break
            todo.extend(self.waits.get(other, ()))
        return found

    def startable(self) -> list[str]:
        """What should start now, in order: free gates (they take no slot) and free task
        instances up to the slots left."""
        slots = self.max_parallel - len(self._running)
        picked: list[str] = []
        for name in self._in_order(self._ready):
            if name in self.gates:
                picked.append(name)
            elif slots > 0:
                picked.append(name)
                slots -= 1
        return picked

    def futile(self, gate: str) -> bool:
        """A gate waiting whose approval can start nothing any more: an instance has failed
        (so the run fails, whatever is approved: ``fail_fast: false``) and all that waits
        for the gate waits for a failed instance too, or has ended."""
        if FAILED not in self.state.values():
            return False
        return not any(
            self.state.get(d) == TODO and not self.blocked(d)
            for d in self._dependents.get(gate, ())
        )

    def useful_gates(self) -> list[str]:
        """The gates waiting whose approval can still start something (not
        :meth:`futile`), in order: where a run that waits only for gates pauses."""
        return [g for g in self.waiting_gates() if not self.futile(g)]

    def stuck_at_gates(self) -> bool:
        """Gates wait and nothing else runs or can start: only an approval moves it on
        (one that can still start something: :meth:`useful_gates`)."""
        return (
            bool(self._waiting)
            and not self._running
            and not self.startable()
            and bool(self.useful_gates())
        )

    def finished(self) -> bool:
        """Nothing runs or can ever start, and no gate waits whose approval could change
        that: the run is over."""
        return all(
            s in (DONE, FAILED)
            or (s == TODO and self.blocked(n))
            or (s == WAITING and self.futile(n))
            for n, s in self.state.items()
        )

    def failure_blocking(self, gate: str) -> str | None:
        """The failure that made a waiting gate :meth:`futile`: the first failed instance
        (in the workflow's order) that what waits for the gate waits for too; else the
        first failed instance of the run (what waits for the gate has ended). Never a gate:
        a gate fails only when it is closed for a failure, which is the one to name."""
        found: set[str] = set()
        for dependent in self._dependents.get(gate, ()):
            if self.state.get(dependent) == TODO:
                found.update(self._failed_upstream(dependent))
        found -= self.gates
        if not found:
            found = {n for n, s in self.state.items() if s == FAILED and n not in self.gates}
        return self._in_order(found)[0] if found else None

    def all_done(self) -> bool:
        return all(s == DONE for s in self.state.values())

    # -- what happened -----------------------------------------------------------------------

    def mark(self, name: str, state: str) -> None:
        before = self.state.get(name, DONE)  # as free() takes a name it does not know
        self.state[name] = state
        if name in self._blockers:  # an instance of this run (else only waited for)
            self._unfile(name)
            self._file(name, state)
        if (before == DONE) == (state == DONE):
            return
        step = -1 if state == DONE else 1
        for other in self._dependents.get(name, ()):
            self._blockers[other] += step
            if self.state[other] == TODO:
                self._unfile(other)
                self._file(other, TODO)
