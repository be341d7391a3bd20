"""Dashboard benchmarks (issue: the dashboard). Ratios and figures, never a pass/fail.

* first paint with 100,000 sessions against first paint with 10 (target <= 1.2x): the time
  from starting the app (headless, Textual's test driver) to the sessions table showing
  rows;
* change-to-screen latency: a manager call in another process -> the new status rendered
  in the table, p95 (target < 1 s);
* idle CPU and resident memory of `vc flow tui` in a real terminal (tmux) with 100,000
  sessions (targets: < 2% of a core; < 200 MB), alternated with a bare Textual app idling
  in the same terminal (the floor: what Textual itself costs). The sessions are a few
  seconds old, so the TIME column of the rows shown ticks every second meanwhile;
* keys on the stage list of a session with a 256-instance matrix stage (target: each
  answered within 100 ms): the time from a key event reaching the app (sent the way Pilot
  sends it) to the first frame that shows its effect, for enter (open the group), end (the
  cursor to the stage after it, scrolled past every instance), home, down and enter again
  (close it), against the same keys on a 6-instance matrix stage (the floor: what a key
  costs the dashboard at all). A frame is what the app hands the terminal (under the test
  driver it is built and checked here instead of written); a key counts as answered once
  the frames since it have drawn the rows it changes and the cursor is where it sends it.
  Nothing else repaints meanwhile: the session's stages are PENDING, so no TIME ticks.
  Why not the time ``pilot.press`` takes: it returns only once Pilot has seen the app idle
  for two rounds of 10 ms slices, so a key bound to nothing already takes ~45 ms and any
  key that does work is rounded up by whole slices; that round is printed beside, for
  comparison.

Run: `python -m tests.bench.bench_tui [--small]`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from tests.bench.bench_store import fill_sessions
from tests.bench.common import precompile, report


def _use_workspace(ws: Path) -> None:
    os.environ["VC_HOME"] = str(ws)
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        os.environ.pop(var, None)


async def _first_paint(ws: Path) -> float:
    # `vc flow tui` runs inside the CLI: its modules are loaded when the dashboard opens, and
    # without them the 20,000-session paint measured 20-50 ms slower than the command's.
    import app.main
    from app.console import warning_line
    from app.context import open_context
    from app.tui.app import FlowApp
    from widgets.session_table import SessionTable

    _use_workspace(ws)
    started = time.perf_counter()
    with open_context(warn=warning_line) as ctx:  # as `vc flow tui` opens it
        app = FlowApp(ctx)
        app.preload()  # as `vc flow tui` does before it starts the app
        async with app.run_test(size=(140, 40)) as pilot:
            table = app.query_one(SessionTable)
            while not (table.loaded and table.rows):
                await pilot.pause(0.005)
            elapsed = time.perf_counter() - started
    return elapsed


def first_paint(big: int, rounds: int) -> tuple[float, float]:
    small_ws, big_ws = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    fill_sessions(small_ws, 10)
    fill_sessions(big_ws, big)
    smalls, bigs = [], []
    asyncio.run(_first_paint(small_ws))  # warm imports
    for _ in range(rounds):
        smalls.append(asyncio.run(_first_paint(small_ws)))
        bigs.append(asyncio.run(_first_paint(big_ws)))
    return statistics.median(bigs), statistics.median(smalls)


_CHANGER = """
import sys, time
from store import FlowSessionManager, get_session_factory, init_db
engine = init_db(sys.argv[1])
factory = get_session_factory(engine)
for line in sys.stdin:
    op, sid = line.split()
    with factory() as db:
        getattr(FlowSessionManager(db), op)(sid)
    print(time.time(), flush=True)
"""


async def _latency(ws: Path, changes: int) -> list[float]:
    from app.context import open_context
    from app.tui.app import FlowApp
    from store import FlowSessionManager
    from widgets.session_table import SessionTable

    _use_workspace(ws)
    with open_context() as ctx:
        with ctx.factory() as db:
            sid = FlowSessionManager(db).create_session("bench", name="latency probe").id
        changer = subprocess.Popen(
            [sys.executable, "-c", _CHANGER, ctx.settings.database_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert changer.stdin and changer.stdout
        app = FlowApp(ctx)
        latencies = []
        async with app.run_test(size=(140, 40)) as pilot:
            table = app.query_one(SessionTable)

            def status() -> str | None:
                row = next((r for r in table.rows if r.id == sid), None)
                return row.status if row else None

            while status() is None:
                await pilot.pause(0.01)
            for i in range(changes):
                op, want = ("pause", "PAUSED") if i % 2 == 0 else ("resume", "PENDING")
                changer.stdin.write(f"{op} {sid}\n")
                changer.stdin.flush()
                committed = float(await asyncio.to_thread(changer.stdout.readline))
                while status() != want:
                    await pilot.pause(0.005)
                latencies.append(time.time() - committed)
        changer.stdin.close()
        changer.wait()
    return latencies


#: The floor of the idle figure: a Textual app with a line of text and a footer, idle.
_BARE_APP = """
from textual.app import App
from textual.widgets import Footer, Static
class Bare(App):
    def compose(self):
        yield Static("idle")
        yield Footer()
Bare().run()
"""


def _descendant(pid: int) -> int:
    """The process a tmux pane runs (the pane's shell may have forked it, or exec'd it)."""
    while True:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return pid
        if not children:
            return pid
        pid = int(children[0])


def _idle_in_tmux(command: str, seconds: float, round_no: int) -> tuple[float, float] | None:
    """Percent of one core ``command`` uses, idle in a 140x40 tmux terminal, measured over
    ``seconds`` after 4 s of start-up; and its resident memory in MB."""
    socket = f"vc-bench-{os.getpid()}-{round_no}"
    subprocess.run(
        ["tmux", "-L", socket, "new-session", "-d", "-x", "140", "-y", "40", command],
        check=True,
    )
    try:
        time.sleep(4)  # start-up and first paint
        panes = subprocess.run(
            ["tmux", "-L", socket, "list-panes", "-F", "#{pane_pid}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if not panes:
            return None
        pid = _descendant(int(panes[0]))

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        try:
            before, started = cpu(), time.monotonic()
            time.sleep(seconds)
            share = (cpu() - before) / (time.monotonic() - started)
            rss_kb = next(
                int(line.split()[1])
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS")
            )
        except OSError:  # it exited: it did not start (see it run by hand)
            return None
        return share * 100, rss_kb / 1024
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def idle_cpu_and_memory(
    ws: Path, seconds: float, rounds: int = 2
) -> tuple[list[float], list[float], float] | None:
    """Idle CPU (percent of a core) of `vc flow tui` and of the bare Textual floor, each
    measured ``rounds`` times alternately so that machine noise hits both alike; and the
    dashboard's largest resident memory (MB)."""
    if not shutil.which("tmux"):
        return None
    vc = f"env VC_HOME={ws} NO_COLOR=1 {sys.executable} -m app.main flow tui"
    bare = f"env NO_COLOR=1 {sys.executable} -c '{_BARE_APP}'"
    ours: list[float] = []
    floor: list[float] = []
    rss = 0.0
    for i in range(rounds):
        got = _idle_in_tmux(vc, seconds, 2 * i)
        if got is None:
            return None
        ours.append(got[0])
        rss = max(rss, got[1])
        base = _idle_in_tmux(bare, seconds, 2 * i + 1)
        if base is not None:
            floor.append(base[0])
    return ours, floor, rss


#: A matrix stage of ``n`` x ``n`` instances between two plain stages.
_MATRIX_FLOW = """\
stages:
  - name: prepare
    run: 'true'
  - name: shard
    matrix: {{a: [{a}], b: [{b}]}}
    run: 'true'
  - name: report
    run: 'true'
"""


def _matrix_workspace(side_a: int, side_b: int) -> Path:
    """A workspace holding one PENDING session whose `shard` stage has side_a x side_b
    instances."""
    from store import FlowSessionManager, get_session_factory, init_db
    from store.workflows import find_workflow

    ws = Path(tempfile.mkdtemp())
    (ws / "workflows").mkdir()
    text = _MATRIX_FLOW.format(
        a=", ".join(f"a{i}" for i in range(side_a)), b=", ".join(f"b{i}" for i in range(side_b))
    )
    (ws / "workflows" / "matrix.yaml").write_text(text)
    (ws / ".vc").mkdir()
    engine = init_db(f"sqlite:///{ws / '.vc' / 'flow.db'}")
    try:
        definition = find_workflow(ws / "workflows", "matrix")
        with get_session_factory(engine)() as db:
            FlowSessionManager(db).create_session("matrix", definition=definition)
    finally:
        engine.dispose()
    return ws


class KeyTimes(NamedTuple):
    """Seconds from key presses on the stage list to the screen showing their effect."""

    keys: list[float]
    """enter (open), end, home, down, enter (close), in rounds: from the key event to the
    first frame that shows what it did."""
    pressed: list[float]
    """The same keys timed as ``pilot.press`` plus a look at the screen: what a test sees."""
    noop: list[float]
    """A key bound to nothing, pressed (Pilot) in the same place: Pilot's own round."""


class _Frames:
    """The frames the app hands its terminal, as the text a terminal would get, kept from
    :meth:`start` on: under the test driver they are built, then dropped unwritten."""

    def __init__(self, app: Any) -> None:
        from textual._compositor import CompositorUpdate

        self._since: list[str] = []
        display = app._display

        def keep(screen: Any, renderable: Any) -> None:
            if isinstance(renderable, CompositorUpdate):
                self._since.append(renderable.render_segments(app.console))
            display(screen, renderable)

        app._display = keep

    def start(self) -> None:
        self._since.clear()

    def shown(self, *texts: str) -> bool:
        """Have the frames since :meth:`start` drawn every one of ``texts``?"""
        return all(any(text in frame for frame in self._since) for text in texts)


async def _stage_keys(ws: Path, instances: int, last: str, rounds: int) -> KeyTimes:
    """Each key of a round pressed on the stage list of the workspace's one session, timed
    from the key event to the frame that shows what it did (see the module doc)."""
    from textual import events

    from app.context import open_context
    from app.tui.app import FlowApp

    _use_workspace(ws)
    times = KeyTimes([], [], [])
    with open_context() as ctx:
        app = FlowApp(ctx)
        async with app.run_test(size=(140, 40)) as pilot:
            stages = app.dashboard.stages
            frames = _Frames(app)

            def cursor() -> str:
                row = stages.cursor_row
                return "" if row is None else row.group or row.name

            def screen() -> str:
                """The stage list as the screen shows it now."""
                box = stages.region
                rows = app.screen._compositor.render_strips()[box.y : box.bottom]
                return "\n".join(row.text[box.x : box.right] for row in rows)

            async def timed(key: str, *texts: str, at: str, also: str = "") -> None:
                """``key``, until frames have drawn ``texts`` (the rows it changed) with
                the cursor ``at``, ``also`` on the screen (drawn now or before)."""
                await pilot.pause()  # nothing left over from the key before
                frames.start()
                started = time.perf_counter()
                event = events.Key(key, None)
                event.set_sender(app)
                app._driver.send_message(event)  # what Pilot's press sends
                while not (frames.shown(*texts) and cursor() == at and also in screen()):
                    if time.perf_counter() - started > 30:
                        raise TimeoutError(f"{key}: no frame showed {texts} at {at}")
                    await asyncio.sleep(0.001)
                times.keys.append(time.perf_counter() - started)

            async def pressed(key: str, shown: Any) -> None:
                started = time.perf_counter()
                await pilot.press(key)
                while not shown():
                    if time.perf_counter() - started > 30:
                        raise TimeoutError(f"{key}: pressed, and nothing changed")
                    await pilot.pause(0.001)
                times.pressed.append(time.perf_counter() - started)

            while len(stages.stages) != instances + 2:
                await pilot.pause(0.01)
            await pilot.press("tab", "down")  # the stage list, its cursor on the group
            group = f"shard 0/{instances}"
            first = "a=a0,b=b0"
            for _ in range(rounds):
                started = time.perf_counter()
                await pilot.press("z")
                times.noop.append(time.perf_counter() - started)
                await timed("enter", f"▾ {group}", first, at="shard")
                # the last row: the list scrolls to it, past every instance
                await timed("end", "report", at="report", also=last)
                await timed("home", "prepare", at="prepare")
                await timed("down", "shard", at="shard")
                await timed("enter", f"▸ {group}", "report", at="shard")
                await pressed("enter", lambda: stages.open_groups == ("shard",))
                await pressed("enter", lambda: stages.open_groups == ())
    return times


def stage_list_keys(rounds: int) -> tuple[KeyTimes, KeyTimes]:
    """Key-to-screen times on a 256-instance matrix stage and on a 6-instance one, the
    two alternated."""
    big = _matrix_workspace(16, 16)
    small = _matrix_workspace(3, 2)
    asyncio.run(_stage_keys(small, 6, "a2,b=b1", 1))  # warm imports
    bigs, smalls = KeyTimes([], [], []), KeyTimes([], [], [])
    for _ in range(rounds):
        for into, got in (
            (bigs, asyncio.run(_stage_keys(big, 256, "a15,b=b15", 2))),
            (smalls, asyncio.run(_stage_keys(small, 6, "a2,b=b1", 2))),
        ):
            into.keys.extend(got.keys)
            into.pressed.extend(got.pressed)
            into.noop.extend(got.noop)
    return bigs, smalls


def main(small: bool = False) -> list[str]:
    precompile()
    lines = []
    big = 20_000 if small else 100_000
    b, s = first_paint(big, 2 if small else 5)
    lines.append(
        report(
            "first paint",
            f"{big:,} sessions {b * 1000:.0f} ms vs 10 sessions "
            f"{s * 1000:.0f} ms: ratio {b / s:.2f} (target <= 1.2)",
        )
    )
    ws = Path(tempfile.mkdtemp())
    fill_sessions(ws, 10)
    lat = asyncio.run(_latency(ws, 6 if small else 20))
    p95 = statistics.quantiles(lat, n=20)[-1]
    lines.append(
        report(
            "change to screen",
            f"p50 {statistics.median(lat) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms over {len(lat)} changes (target p95 < 1 s)",
        )
    )
    ws = Path(tempfile.mkdtemp())
    fill_sessions(ws, big)
    idle = idle_cpu_and_memory(ws, 5 if small else 15, 1 if small else 2)
    if idle is None:
        lines.append(report("idle", "skipped: tmux not available (or the app did not start)"))
    else:
        ours, floor, rss = idle
        mean = statistics.fmean(ours)
        rounds = ", ".join(f"{x:.2f}%" for x in ours)
        if floor:
            base = statistics.fmean(floor)
            against = (
                f"; floor (a bare Textual app) {base:.2f}%, "
                f"so {mean - base:.2f}% of a core is the dashboard's own"
            )
        else:
            against = "; floor not measured"
        lines.append(
            report(
                "idle",
                f"vc flow tui {mean:.2f}% of a core (rounds: {rounds}){against}; "
                f"RSS {rss:.0f} MB with {big:,} sessions (targets < 2%, < 200 MB)",
            )
        )
    many, few = stage_list_keys(1 if small else 3)
    p95 = statistics.quantiles(many.keys, n=20, method="inclusive")[-1]
    floor = statistics.median(many.noop + few.noop)
    lines.append(
        report(
            "stage list keys",
            f"key to frame, 256 instances: p50 {statistics.median(many.keys) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {max(many.keys) * 1000:.0f} ms over "
            f"{len(many.keys)} keys; 6 instances: p50 {statistics.median(few.keys) * 1000:.0f} "
            f"ms; ratio {statistics.median(many.keys) / statistics.median(few.keys):.2f} "
            "(target: each key < 100 ms). Timed as pilot.press: open/close of the 256 "
            f"p50 {statistics.median(many.pressed) * 1000:.0f} ms, 6 "
            f"{statistics.median(few.pressed) * 1000:.0f} ms, a key bound to nothing "
            f"{floor * 1000:.0f} ms (Pilot's own round)",
        )
    )
    return lines


if __name__ == "__main__":
    main(small="--small" in sys.argv)
