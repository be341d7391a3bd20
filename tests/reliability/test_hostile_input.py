"""Part 4, hostile input: malformed and adversarial workflow files, hostile names, metadata,
arguments and log lines, through every CLI command.

For every invocation: no traceback (nor "internal error") on stderr, exit code 0, 1 or 2,
no ESC byte (nor an 8-bit CSI) in human output, JSON output parses and carries control
characters only escaped (``\\u001b``), Rich markup shown literally, and nothing written
outside the workspace (the test's temporary tree, the repository and /tmp are compared
before and after; a YAML tag that would run ``touch`` must not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import PART_TIMEOUT, ROOT, STRESS, child_env, report

MARKUP = "[bold red]x[/]"
OSC52 = "\x1b]52;c;cHduZWQ=\x07"
CLEAR = "\x1b[2J"
HOSTILE_NAME = f"{MARKUP} {OSC52}{CLEAR} \u202ertl \x9b31m end"
# YAML double-quoted form of HOSTILE_NAME (the file itself must stay printable text)
HOSTILE_NAME_YAML = '"[bold red]x[/] \\e]52;c;cHduZWQ=\\a\\e[2J \\u202ertl \\x9b31m end"'


def _bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    lines.append(f"stages: [{{name: s, run: *{prev}}}]")
    return "\n".join(lines) + "\n"


def corpus(sentinel: Path) -> dict[str, bytes | str]:
    """File name -> content of the hostile workflow files."""
    ten_mb = "stages:\n  - name: big\n    run: echo " + "x" * (10 * 1024 * 1024) + "\n"
    return {
        "bomb.yaml": _bomb(),
        "ten-mb.yaml": ten_mb,
        "deep.yaml": "stages: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep-map.yaml": "stages:\n" + "".join("  " * i + "a:\n" for i in range(1, 600)),
        "pytag.yaml": f"stages:\n  - name: a\n    run: !!python/object/apply:os.system "
        f'["touch {sentinel}"]\n',
        "pytag2.yaml": f"!!python/object/new:os.system [touch {sentinel}]\n",
        "types-stages.yaml": "stages: 5\n",
        "types-stage.yaml": "stages:\n  - name: 5\n    run: [1, 2]\n",
        "types-fields.yaml": "stages:\n  - name: a\n    run: 'true'\n    timeout: yes\n"
        "    retries: '3'\n    env: [a, b]\n    needs: {x: 1}\n",
        "types-top.yaml": "- just\n- a list\n",
        "types-scalar.yaml": "42\n",
        "empty.yaml": "",
        "comments.yaml": "# nothing here\n",
        "unknown-top.yaml": "stagez:\n  - name: a\n    run: 'true'\n",
        "unknown-stage.yaml": "stages:\n  - name: a\n    rnu: 'true'\n",
        "unknown-hostile-key.yaml": f'"[bold]\\e[2Jk\\e]0;t\\a": 1\nname: {HOSTILE_NAME_YAML}\n'
        "stages:\n  - name: a\n    run: 'true'\n",
        "traversal-id.yaml": "id: ../../pwned\nstages:\n  - name: a\n    run: 'true'\n",
        "absolute-id.yaml": "id: /tmp/pwned\nstages:\n  - name: a\n    run: 'true'\n",
        "traversal-stage.yaml": "stages:\n  - name: ../../pwned\n    run: 'true'\n",
        "escape-id.yaml": 'id: "ok\\e[2J"\nstages:\n  - name: a\n    run: "true"\n',
        "cycle.yaml": "stages:\n  - name: a\n    run: 'true'\n    needs: b\n"
        "  - name: b\n    run: 'true'\n    needs: a\n",
        "self-need.yaml": "stages:\n  - name: a\n    run: 'true'\n    needs: [a]\n",
        "unknown-need.yaml": "stages:\n  - name: a\n    run: 'true'\n    needs: [\"\\e[2J\"]\n",
        "duplicate.yaml": "stages:\n  - name: a\n    run: 'true'\n  - name: a\n    run: 'true'\n"
        "stages: []\n",
        "bad-utf8.yaml": b"stages:\n  - name: a\n    run: echo \xff\xfe\n",
        "nul.yaml": b"stages:\x00\n  - name: a\n",
        "control.yaml": "stages:\n  - name: a\n    run: echo \x1b[2J\n",
        "crlf-bom.yaml": "\ufeffstages:\r\n  - name: a\r\n    run: 'true'\r\n",
        "syntax.yaml": "stages: [\n  - name: a\n  run: : :\n",
        "\x1b]0;title\x07[bold]f.yaml": "stages:\n  - name: a\n    run: 'true'\n",
        os.fsdecode(b"\xff\xfebadname.yaml"): "stages:\n  - name: a\n    run: 'true'\n",
        "....yaml": "stages:\n  - name: a\n    run: 'true'\n",
    }


VALID = {
    "good.yaml": "name: Good\nstages:\n  - name: one\n    run: echo one\n",
    "hostile.yaml": (
        f"name: {HOSTILE_NAME_YAML}\ndescription: {HOSTILE_NAME_YAML}\nstages:\n"
        "  - name: noisy\n    run: |\n"
        f"      printf '%s\\n' '{MARKUP}'\n"
        "      printf 'osc52:\\033]52;c;cHduZWQ=\\007:end\\n'\n"
        "      printf 'clear:\\033[2J:end\\n'\n"
        "      printf 'c1:\\302\\2332J:end\\n'\n"
        "      printf 'nul:\\000:end\\n'\n"
        "      printf 'utf8:\\377\\376:end\\n'\n"
        "      printf 'cr:overwritten\\rshown:end\\n'\n"
        "      printf 'stderr:\\033[31mred:end\\n' >&2\n"
        "      head -c 1100000 /dev/zero | tr '\\0' A; echo ':end-of-long'\n"
        "      echo 'last line'\n"
    ),
}


@dataclass
class Outcome:
    args: tuple[str, ...]
    code: int | None
    stdout: bytes
    stderr: bytes
    json: bool

    def problems(self) -> list[str]:
        out: list[str] = []
        if self.code not in (0, 1, 2):
            out.append(f"exit code {self.code}")
        err = self.stderr.decode("utf-8", "replace")
        if "Traceback" in err or "internal error" in err:
            out.append(f"traceback/internal error: {err.strip()[-300:]}")
        streams = [("stderr", self.stderr)] + ([] if self.json else [("stdout", self.stdout)])
        for name, data in streams:
            if b"\x1b" in data:
                i = data.index(b"\x1b")
                out.append(f"ESC in {name}: {data[max(0, i - 40) : i + 20]!r}")
            if "\x9b" in data.decode("utf-8", "replace"):
                out.append(f"8-bit CSI in {name}")
        if self.json and self.code == 0:
            if b"\x1b" in self.stdout:
                out.append("raw ESC in JSON output")
            try:
                json.loads(self.stdout)
            except ValueError as exc:
                out.append(f"stdout is not JSON: {exc}")
        return out


def run(ws: Path, *args: str | bytes, timeout: float = 90) -> Outcome:
    argv: list[str | bytes] = [sys.executable, "-m", "app.main", *args]
    env = child_env({"VC_HOME": str(ws)})
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        env.pop(var, None)
    shown = tuple(a if isinstance(a, str) else os.fsdecode(a) for a in args)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            env=env,
            cwd=str(ws),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(shown, None, exc.stdout or b"", exc.stderr or b"timeout", False)
    return Outcome(shown, proc.returncode, proc.stdout, proc.stderr, "--json" in shown)


def listing(*roots: Path, skip: Path | None = None) -> set[str]:
    seen: set[str] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if skip is not None and (here == skip or skip in here.parents):
                dirnames[:] = []
                continue
            dirnames[:] = [
                d
                for d in dirnames
                if d not in (".git", ".venv", "__pycache__", ".ruff_cache", ".mypy_cache")
            ]
            for name in filenames + dirnames:
                seen.add(str(here / name))
    return seen


@pytest.mark.timeout(PART_TIMEOUT)
def test_hostile_input(tmp_path: Path) -> None:
    start = time.monotonic()
    ws = tmp_path / "ws"
    wf = ws / "workflows"
    wf.mkdir(parents=True)
    sentinel = tmp_path / "PWNED-by-yaml"
    files = corpus(sentinel)
    for name, content in files.items():
        path = wf / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogateescape")
    for name, content in VALID.items():
        (wf / name).write_text(content)
    os.mkfifo(wf / "fifo.yaml")
    (wf / "loop.yaml").symlink_to(wf / "loop.yaml")
    (wf / "zero.yaml").symlink_to("/dev/zero")
    (wf / "dir.yaml").mkdir()
    items = len(files) + len(VALID) + 4

    outside_before = listing(tmp_path, ROOT, skip=ws) | {p for p in os.listdir("/tmp")}
    stems = sorted({Path(n).stem for n in files} | {"fifo", "loop", "zero", "dir"})
    commands: list[tuple[str | bytes, ...]] = [
        ("flow", "list"),
        ("flow", "list", "--json"),
        ("flow", "session", "list"),
        ("flow", "session", "list", "--json"),
    ]
    # every file through `show`; the other commands for a representative few (all of them
    # with VC_STRESS=1): they share the loader, and each call is a whole `vc` process
    few = {
        "bomb",
        "ten-mb",
        "deep",
        "fifo",
        "pytag",
        "traversal-id",
        "cycle",
        "unknown-hostile-key",
        "bad-utf8",
        "loop",
    }
    for stem in stems:
        commands.append(("flow", "show", stem))
        if STRESS or stem in few:
            commands += [
                ("flow", "show", stem, "--json"),
                ("flow", "session", "create", stem),
                ("flow", "run", stem),
            ]
    hostile_args: list[tuple[str | bytes, ...]] = [
        ("flow", "show", "../../pwned"),
        ("flow", "show", "/etc/passwd"),
        ("flow", "show", CLEAR + "x"),
        ("flow", "show", MARKUP),
        ("flow", "session", "show", "../../pwned"),
        ("flow", "session", "show", CLEAR + "abcd"),
        ("flow", "session", "show", MARKUP),
        ("flow", "session", "logs", OSC52 + "abcd"),
        ("flow", "status", "../" * 20),
        ("flow", "session", "pause", "\u202eabcd"),
        ("flow", "session", "list", "--workflow", CLEAR),
        ("flow", "session", "list", "--status", OSC52),
        ("flow", "session", "create", "good", "--meta", f"k{CLEAR}=v{OSC52}"),
        ("flow", "session", "create", "good", "--meta", "no-equals" + CLEAR),
        ("flow", "run", "good:" + CLEAR),
        ("flow", "run", "good:../../pwned"),
        ("flow", "run", "good", "--session", "../../pwned"),
        ("flow", "session", "create", b"\xff\xfe"),
        ("flow", "show", b"bad\xffutf8"),
        ("flow", "session", "create", "good", "--meta", b"k=\xff\xfe"),
        ("flow", "session", "list", "--limit", "-1"),
        ("flow", "session", "list", "--limit", "abc"),
        ("flow", CLEAR),
        ("flow", "session", "logs", "abcd", "--level", CLEAR),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda a: run(ws, *a), commands + hostile_args))

    # a valid workflow with hostile text everywhere, run for real
    created = run(
        ws,
        "flow",
        "session",
        "create",
        "good",
        "--name",
        HOSTILE_NAME,
        "--meta",
        f"note={HOSTILE_NAME}",
        "--json",
    )
    outcomes.append(created)
    ran = run(ws, "flow", "run", "hostile", "--name", HOSTILE_NAME)
    outcomes.append(ran)
    listed = run(ws, "flow", "session", "list", "--json", "--workflow", "hostile")
    outcomes.append(listed)
    sids = [s["id"] for s in json.loads(listed.stdout or b"[]")]
    good_sid = json.loads(created.stdout)["id"] if created.code == 0 else None
    inspect: list[tuple[str, ...]] = []
    for sid in sids:
        inspect += [
            ("flow", "session", "show", sid),
            ("flow", "session", "show", sid, "--json"),
            ("flow", "session", "logs", sid),
            ("flow", "session", "logs", sid, "--level", "WARNING"),
            ("flow", "session", "logs", sid, "--stage", "noisy"),
            ("flow", "status", sid),
            ("flow", "status", sid, "--json"),
        ]
    if good_sid is not None:
        inspect += [
            ("flow", "session", "show", good_sid),
            ("flow", "session", "show", good_sid, "--json"),
        ]
    inspect += [
        ("flow", "session", "list"),
        ("flow", "show", "hostile"),
        ("flow", "show", "hostile", "--json"),
        ("flow", "list"),
    ]
    with ThreadPoolExecutor(max_workers=3) as pool:
        inspected = list(pool.map(lambda a: run(ws, *a), inspect))
    outcomes += inspected

    problems = [
        f"vc {' '.join(map(repr, o.args))[:160]}: {p}" for o in outcomes for p in o.problems()
    ]
    if ran.code != 0:
        problems.append(f"running the hostile workflow failed: {ran.stderr[-500:]!r}")

    # markup shown literally, hostile log lines kept (cleaned), nothing lost
    expected_in_logs = [
        MARKUP,
        "osc52:",
        "clear::end",
        "nul:",
        "utf8:",
        "shown:end",
        "stderr:",
        ":end-of-long",
        "last line",
    ]
    lost = 0
    for o in inspected:
        text = o.stdout.decode("utf-8", "replace")
        if o.args[:3] == ("flow", "session", "logs") and len(o.args) == 4 and o.code == 0:
            missing = [m for m in expected_in_logs if m not in text]
            lost += len(missing)
            if missing:
                problems.append(f"log lines missing from 'logs': {missing}")
        if (
            o.args[:3] == ("flow", "session", "show")
            and not o.json
            and o.code == 0
            and MARKUP not in text
        ):
            problems.append(f"name not shown literally by show: {text[:200]!r}")
        if o.json and o.code == 0 and o.args[:3] == ("flow", "session", "show"):
            doc = json.loads(o.stdout)
            if doc["name"] != HOSTILE_NAME and doc["workflow_id"] == "good":
                problems.append(f"JSON name is not the exact name: {doc['name']!r}")
    session_list = next(o for o in inspected if o.args == ("flow", "session", "list"))
    if MARKUP not in session_list.stdout.decode("utf-8", "replace"):
        problems.append("session list does not show the name literally")
    if sentinel.exists():
        problems.append("a YAML tag executed a command")
    outside_after = listing(tmp_path, ROOT, skip=ws) | {p for p in os.listdir("/tmp")}
    new = outside_after - outside_before
    # others may be editing the repository meanwhile: there, only what a misrouted
    # workspace would write (.vc, logs) and anything named like the sentinels counts
    new_outside = sorted(
        p
        for p in new
        if p.startswith(str(tmp_path))
        or "pwned" in p.lower()
        or p.startswith((str(ROOT / ".vc"), str(ROOT / "logs" / "workflow")))
    )
    if new_outside:
        problems.append(f"files written outside the workspace: {new_outside[:10]}")

    report(
        "hostile-input",
        trials=items,
        operations=len(outcomes),
        failures=len(problems),
        lost=lost,
        seconds=round(time.monotonic() - start, 1),
    )
    assert not problems, "\n".join(problems[:40])


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "workflows").mkdir(parents=True)
    (ws / "workflows" / "good.yaml").write_text(VALID["good.yaml"])
    return ws


def test_invalid_utf8_arguments_are_usage_errors(tmp_path: Path) -> None:
    """Invalid UTF-8 in an argument is a usage error, not an 'internal error' from the
    database driver (it once reached SQLite as a surrogate-escaped bound parameter)."""
    ws = _workspace(tmp_path)
    outcomes = [
        run(ws, "flow", "session", "create", "good", "--name", b"name-\xff\xfe"),
        run(ws, "flow", "run", "good", "--name", b"\xff"),
        run(ws, "flow", "session", "list", "--workflow", b"\xff"),
    ]
    problems = [f"{o.args}: {p}" for o in outcomes for p in o.problems()]
    assert not problems, problems


def test_huge_limit_is_a_usage_error(tmp_path: Path) -> None:
    """A 40-digit --limit is clamped or refused, never an OverflowError from SQLite."""
    ws = _workspace(tmp_path)
    outcome = run(ws, "flow", "session", "list", "--limit", "9" * 40)
    assert not outcome.problems(), outcome.problems()
