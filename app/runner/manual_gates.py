"""Manual gates: a stage that waits for a person's approval while the other branches go
on, and pauses the session only when nothing else can run (docs/ARCHITECTURE.md §3).

:class:`ManualGates` is a base of :class:`app.runner.runner.Runner`, whose ``__init__``
sets what is declared here.
"""

from __future__ import annotations

import time

from app.runner.notifications import action
from app.runner.schedule import DONE, WAITING
from app.runner.store_link import _STORE_ERRORS, NOTIFY_RESYNC
from app.runner.supervision import Supervision
from store.errors import InvalidTransition
from store.gates import waiting_reason
from store.queries import StageView
from store.status import StageStatus


class ManualGates(Supervision):
    """Opens, pauses at and passes manual gates (see the module doc)."""

    _gate_pause: str | None
    _gates_read_at: float
    #: The gates whose waiting this run has said (:meth:`_announce_gate`).
    _gates_announced: set[str]
    waiting_at: str | None
    waiting_checklist: list[str]

    def _open_gate(self, stage: StageView) -> None:
        """A manual gate whose needs are COMPLETED waits (PAUSED) for an approval; the
        other branches go on. Only when nothing else can run is the session paused at it
        (:meth:`_pause_at_gate`). One whose approval could start nothing any more (a
        failure blocks all that needs it) is closed instead, before it is recorded or
        announced as waiting: nobody is asked to approve it."""
        if self._schedule.futile(stage.name):
            self._close_futile_gates([stage.name])
            return
        self._schedule.mark(stage.name, WAITING)
        if stage.status != StageStatus.PAUSED:
            try:
                self._moves[stage.id] = self.stages.move_stage(
                    stage.id, StageStatus.PAUSED, known=self._as_known(stage)
                )
            except InvalidTransition:
                self._read_next = True  # aborted or approved meanwhile: read it
                return
        if self._running or [n for n in self._schedule.startable() if n != stage.name]:
            self._announce_gate(stage, "; the other stages go on")
            self._notify()

    def _announce_gate(self, stage: StageView, then: str = "") -> None:
        """Say, once per gate and run, that it waits and how to approve it. A gate that
        waits beside running stages (``then``) is told the foreground display too: its
        live lines show the running stages only, and a CI log must not learn of the gate
        only once they end."""
        self._gates_announced.add(stage.name)
        _, command = action("gate", self.session_id, gate=stage.name)
        waiting = f"waiting for '{command}'{checklist_suffix(stage.checklist)}"
        self._say(f"manual gate {stage.name}: {waiting}{then}", stage=stage.name)
        if then:
            self.control_notes.append(f"{stage.name}: manual gate, {waiting}{then}")

    def _pause_at_gate(self, name: str) -> None:
        """Nothing but gates left to wait for: the session pauses with reason
        ``waiting: <gate>``; its resume (or the gate's approval) passes the gate."""
        stage = self._rows[name]
        try:
            self.sessions.pause(self.session_id, reason=waiting_reason(name), at_gate=name)
        except InvalidTransition:
            # paused, aborted or the gate approved meanwhile: the loop reads which
            self._read_next = True
            return
        self._gate_pause = name
        self.waiting_at = name
        self.waiting_checklist = stage.checklist
        said = name in self._gates_announced
        for other in self._schedule.useful_gates():
            # a gate that opened while another stage was still to start has said so; one
            # that opened last has not: each waiting gate is named once, with its command
            if other != name and other not in self._gates_announced:
                self._announce_gate(self._rows[other])
        if said:
            self._say(
                f"nothing else can run: the session is paused at manual gate {name} "
                "(its approval or a resume passes it)",
                stage=name,
            )
        else:
            self._announce_gate(stage)
        self._notify()

    def _resumed_from_gate(self) -> None:
        """The session paused at a gate is ACTIVE again: its resume passed that gate, or
        the approval of another gate resumed it (:func:`store.gates.approval_resumes`),
        and the gate still waits. The store says which (:meth:`_check_gates`, made to
        read now); a gate still waiting pauses the session again once nothing else can
        run. The runner never passes a gate itself: only a resume or an approval does."""
        self._gate_pause = None
        self.waiting_at = None
        self._state_read = True

    def _gate_passed(self, name: str) -> None:
        """Once per gate: an approval seen while the session was paused by hand, then the
        resume, both pass it."""
        if self._schedule.state.get(name) == DONE:
            return
        self._schedule.mark(name, DONE)
        if self.waiting_at == name:
            self.waiting_at = None
        if self._gate_pause == name:
            self._gate_pause = None
        self._stage_result(name, f"manual gate {name} passed")

    def _check_gates(self) -> None:
        """Gates approved since the last look (``vc flow session approve``, which also
        touches the session row): read when the session's state was read because something
        changed, else once per NOTIFY_RESYNC; never while no gate waits."""
        waiting = self._schedule.waiting_gates()
        now = time.monotonic()
        fresh, self._state_read = self._state_read, False
        if not waiting or (not fresh and now < self._gates_read_at):
            return
        self._gates_read_at = now + NOTIFY_RESYNC
        for name in waiting:
            try:
                status = self.stages.raw.stage_status(self._rows[name].id)
            except _STORE_ERRORS as exc:
                self._store_lost(exc)
                return
            if status == StageStatus.COMPLETED:
                self._gate_passed(name)


def checklist_suffix(items: list[str]) -> str:
    """A gate's checklist as the end of its waiting line: what to check before resuming."""
    return f"; checklist: {'; '.join(items)}" if items else ""
