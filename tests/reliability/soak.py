"""Part 6, the long run (on demand, not in CI):

    python -m tests.reliability.soak --minutes 30 [--workspace DIR] [--no-tui]

A session of a workflow whose stages print lines and progress for the whole run is started
detached; every few seconds it is paused and resumed through the real CLI. Meanwhile a CLI
poller (`vc flow session logs --follow`) and the dashboard (`vc flow tui`, in a
pseudo-terminal) watch it. Reported, as one line: RSS and open file descriptors of the
runner, the poller and the dashboard at the start (after a warm-up) and at the end, the
pauses and resumes done, the CPU the stage used while paused (should be ~0: SIGSTOP), the
log lines the stages printed against those in the store (lost items), and how it ended.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.waiting import poll

from .harness import child_env, open_fds, rss_kb

STAGES = 3


def _workflow(seconds_per_stage: int) -> str:
    body = (
        f"end=$((SECONDS+{seconds_per_stage})); i=1\n"
        "while [ $SECONDS -lt $end ]; do\n"
        '  echo "tick $VC_STAGE $VC_ATTEMPT $i"\n'
        f'  echo "::progress $(( (SECONDS - end + {seconds_per_stage}) * 100 / '
        f'{seconds_per_stage} ))"\n'
        "  i=$((i+1)); sleep 0.05\n"
        "done\n"
        'echo "done $VC_STAGE $VC_ATTEMPT $((i-1))"\n'
    )
    lines = ["name: Soak", "stages:"]
    for n in range(1, STAGES + 1):
        lines += [f"  - name: part{n}", "    run: |"]
        lines += [f"      {line}" for line in body.splitlines()]
    return "\n".join(lines) + "\n"


class Soak:
    def __init__(self, ws: Path, minutes: float, tui: bool) -> None:
        self.ws = ws
        self.minutes = minutes
        self.tui = tui
        self.env = child_env({"VC_HOME": str(ws)})
        for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
            self.env.pop(var, None)
        self.pauses = 0
        self.resumes = 0
        self.errors: list[str] = []
        self.paused_ticks = 0

    def vc(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.main", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=str(self.ws),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )

    def show(self, sid: str) -> dict[str, Any]:
        proc = self.vc("flow", "session", "show", sid, "--json")
        return json.loads(proc.stdout) if proc.returncode == 0 else {}

    def start_tui(self) -> tuple[int, int]:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the dashboard on a pseudo-terminal
            env = {**self.env, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
            env.pop("NO_COLOR", None)
            os.chdir(self.ws)
            os.execve(sys.executable, [sys.executable, "-m", "app.main", "flow", "tui"], env)

        def drain() -> None:
            while True:
                try:
                    ready, _, _ = select.select([fd], [], [], 1.0)
                    if ready and not os.read(fd, 65536):
                        return
                except OSError:
                    return

        threading.Thread(target=drain, daemon=True).start()
        return pid, fd

    def stage_ticks(self, sid: str) -> int:
        """CPU ticks (utime+stime) of the session's live stage processes."""
        from .harness import session_processes

        total = 0
        for pid in session_processes(sid):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total

    def run(self) -> str:
        seconds = max(30, int(self.minutes * 60))
        (self.ws / "workflows").mkdir(parents=True, exist_ok=True)
        (self.ws / "workflows" / "soak.yaml").write_text(_workflow(seconds // STAGES))
        started = self.vc("flow", "run", "soak", "--detach")
        if started.returncode != 0:
            return f"[reliability] soak: could not start: {started.stderr.strip()}"
        sid = started.stdout.strip()
        runner_pid = (self.show(sid).get("runner") or {}).get("pid")
        poller = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "session", "logs", sid, "--follow"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=str(self.ws),
        )
        tui_pid, tui_fd = self.start_tui() if self.tui else (None, None)
        watched = {"runner": runner_pid, "poller": poller.pid, "tui": tui_pid}
        time.sleep(5)  # warm-up: imports done, first screens drawn
        first = {k: (rss_kb(p), open_fds(p)) for k, p in watched.items() if p}
        deadline = time.monotonic() + seconds - 5
        rnd = random.Random(seconds)
        last = dict(first)
        max_rss = {k: v[0] or 0 for k, v in first.items()}
        while time.monotonic() < deadline:
            time.sleep(rnd.uniform(2, 5))
            if self.vc("flow", "session", "pause", sid).returncode == 0:
                self.pauses += 1
                time.sleep(0.6)  # the runner stops the stage within a poll
                before = self.stage_ticks(sid)
                time.sleep(rnd.uniform(1, 3))
                self.paused_ticks += max(0, self.stage_ticks(sid) - before)
                proc = self.vc("flow", "session", "resume", sid)
                if proc.returncode == 0:
                    self.resumes += 1
                else:
                    self.errors.append(f"resume: {proc.stderr.strip()}")
            for k, p in watched.items():
                if p and time.monotonic() < deadline:
                    sample = (rss_kb(p), open_fds(p))
                    if sample[0] is not None:
                        last[k] = sample
                        max_rss[k] = max(max_rss.get(k, 0), sample[0])
        shown: list[dict[str, Any]] = [{}]

        def ended() -> bool:
            shown[0] = self.show(sid)
            return shown[0].get("status") in ("COMPLETED", "FAILED")

        poll(ended, 120, 1)
        view = shown[0]
        for k, p in watched.items():  # the final sample, before the watchers stop
            if p and k != "runner":
                sample = (rss_kb(p), open_fds(p))
                if sample[0] is not None:
                    last[k] = sample
        try:
            poller.wait(30)  # --follow ends by itself once the session has ended
        except subprocess.TimeoutExpired:
            self.errors.append("logs --follow did not end after the session ended")
            poller.terminate()
        if tui_pid:
            os.kill(tui_pid, signal.SIGTERM)
            try:
                os.waitpid(tui_pid, 0)
            except ChildProcessError:
                pass
            os.close(tui_fd)  # type: ignore[arg-type]
        printed, stored, lost = self.count_lines(sid)
        figures = {
            "minutes": round(seconds / 60, 1),
            "pauses": self.pauses,
            "resumes": self.resumes,
            "status": view.get("status"),
            "paused_cpu_ticks": self.paused_ticks,
            "log_lines_printed": printed,
            "log_rows_stored": stored,
            "lost": lost,
            "failures": len(self.errors) + (view.get("status") != "COMPLETED"),
        }
        for k in watched:
            if k in first:
                figures[f"{k}_rss_kb"] = f"{first[k][0]}->{last[k][0]}(max {max_rss[k]})"
                figures[f"{k}_fds"] = f"{first[k][1]}->{last[k][1]}"
        line = "[reliability] soak: " + " ".join(f"{k}={v}" for k, v in figures.items())
        if self.errors:
            line += " errors=" + "; ".join(self.errors[:3])
        return line

    def count_lines(self, sid: str) -> tuple[int, int, int]:
        """(tick lines the stages printed, tick rows in the store, missing ones)."""
        from store import get_session_factory, init_db
        from store.queries import read_logs

        engine = init_db(f"sqlite:///{self.ws / '.vc' / 'flow.db'}")
        try:
            with get_session_factory(engine)() as db:
                rows = read_logs(db, sid, limit=10_000_000)
        finally:
            engine.dispose()
        seen: dict[tuple[str, str], set[int]] = {}
        printed = 0
        for r in rows:
            parts = r.text.split()
            if len(parts) == 4 and parts[0] == "tick":
                seen.setdefault((parts[1], parts[2]), set()).add(int(parts[3]))
            if len(parts) == 4 and parts[0] == "done":
                printed += int(parts[3])
        stored = sum(len(v) for v in seen.values())
        holes = sum(max(v) - len(v) for v in seen.values())  # missing below the last one
        return printed, stored, max(holes, printed - stored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--no-tui", action="store_true")
    args = parser.parse_args(argv)
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="vc-soak-"))
    ws.mkdir(parents=True, exist_ok=True)
    line = Soak(ws, args.minutes, not args.no_tui).run()
    print(line, file=sys.stderr, flush=True)
    print(f"workspace: {ws}", file=sys.stderr)
    return 0 if " failures=0" in line and " lost=0" in line else 1


if __name__ == "__main__":
    sys.exit(main())
