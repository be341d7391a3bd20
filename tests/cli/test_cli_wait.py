"""`vc flow session wait ID… [--timeout S]`: returns when every named session has ended
(exit 0 all COMPLETED, 1 any FAILED, 124 on timeout); a session at a manual gate has not
ended. Real `vc`, real runners, on SQLite and PostgreSQL (the waiter and the runner as two
hosts there). `session logs --follow`, the other command that waits on the store for as
long as a session runs, goes through the same outages."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import get_session_factory, init_db
from tests.conftest import _pg_admin, pg_role, vc_env
from tests.hosts.proxy import TcpProxy
from tests.runner.runner_testkit import (
    NAP,
    Store,
    Vc,
    _stop_everything,
    kill_runner,
    sqlite_only,
    start_detached,
    stat_fields,
    write_workflow,
)


@pytest.fixture
def store(store_workspace: Path, db_url: str) -> Iterator[Store]:
    engine = init_db(db_url)
    factory = get_session_factory(engine)
    yield Store(factory)
    _stop_everything(factory)
    engine.dispose()


def start_wait(
    *args: str, host: str = "waiter-host", url: str | None = None
) -> subprocess.Popen[str]:
    """`vc flow session wait ARGS` in the background, as a host of its own (on the store
    at ``url``, if given)."""
    extra = {"VC_DATABASE_URL": url} if url is not None else {}
    return subprocess.Popen(
        [sys.executable, "-m", "app.main", "flow", "session", "wait", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=vc_env({"VC_HOSTNAME": host, **extra}),
    )


def start_follow(sid: str, url: str) -> subprocess.Popen[str]:
    """`vc flow session logs SID --follow` in the background, on the store at ``url``."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.main", "flow", "session", "logs", sid, "--follow"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=vc_env({"VC_HOSTNAME": "follower-host", "VC_DATABASE_URL": url}),
    )


def _paused_session(vc: Vc, store: Store) -> str:
    """A session that has not ended and that nothing runs: a wait or a follow of it waits."""
    created = vc("flow", "session", "create", "hello")
    assert created.returncode == 0, created.stderr
    sid = created.stdout.strip()
    store.pause(sid)
    return sid


def _locked_out(role: str, proc: subprocess.Popen[str]) -> tuple[str, str]:
    """``role`` may no longer log in and its connections are ended (credentials revoked
    while ``proc`` waits on the store as that role): ``proc``'s (stdout, stderr) once it
    has ended."""
    try:
        _pg_admin(f'ALTER ROLE "{role}" NOLOGIN')
        _pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        )
        return proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def cpu_ticks(pid: int) -> int:
    fields = stat_fields(pid)
    assert fields is not None
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_wait_on_sessions_that_all_complete_exits_0(vc: Vc, store: Store) -> None:
    first, second = start_detached(vc, "hello"), start_detached(vc, "hello")
    result = vc("flow", "session", "wait", first[:8], second)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(
        f"COMPLETED: {sid[:12]} ({store.view(sid).name})" for sid in (first, second)
    )
    assert store.view(first).status == store.view(second).status == "COMPLETED"


def test_wait_with_mixed_outcomes_waits_for_all_and_exits_1(vc: Vc, store: Store) -> None:
    done, failed = start_detached(vc, "hello"), start_detached(vc, "broken")
    result = vc("flow", "session", "wait", done, failed)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"COMPLETED: {done[:12]} ({store.view(done).name})" in lines
    assert (
        f"FAILED: {failed[:12]} ({store.view(failed).name}): stage bad failed: exit code 3" in lines
    )
    assert result.stderr == ""


def test_wait_times_out_with_124_naming_what_has_not_ended(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(workspace, "nap", NAP)
    napping, done = start_detached(vc, "nap"), start_detached(vc, "hello")
    result = vc("flow", "session", "wait", napping, done, "--timeout", "0.5")
    assert result.returncode == 124
    assert result.stderr.strip().splitlines()[-1] == (
        f"vc: error: timed out after 0.5 s; not ended: {napping[:12]} ACTIVE"
    )


@sqlite_only
def test_a_timed_out_wait_says_which_session_lost_its_runner_and_which_waits_at_a_gate(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """As `list` says them: a runner killed on this host is seen orphaned at once."""
    write_workflow(workspace, "nap", NAP)
    napping, gated = start_detached(vc, "nap"), start_detached(vc, "gate")
    store.wait_stage(napping, "nap", "ACTIVE", with_pid=True)
    store.wait_status(gated, "PAUSED")
    kill_runner(store, napping)
    result = vc("flow", "session", "wait", napping, gated, "--timeout", "0.5")
    assert result.returncode == 124
    last = result.stderr.strip().splitlines()[-1]
    assert f"{napping[:12]} ACTIVE (orphaned)" in last
    assert f"{gated[:12]} PAUSED (waiting: approve)" in last


def test_wait_on_a_session_nothing_will_start_says_so_at_once(vc: Vc, store: Store) -> None:
    created = vc("flow", "session", "create", "hello").stdout.strip()
    queued = vc("flow", "run", "hello", "--queue").stdout.strip()
    result = vc("flow", "session", "wait", created, queued, "--timeout", "0.5")
    assert result.returncode == 124
    notes = result.stderr.splitlines()[:-1]
    assert sorted(notes) == sorted(
        [
            f"vc: {created[:12]} ({store.view(created).name}) is PENDING and nothing runs it: "
            f"'vc flow run hello --session {created[:12]}' starts it",
            f"vc: {queued[:12]} ({store.view(queued).name}) is queued: the next "
            "'vc flow worker' runs it",
        ]
    )


def test_a_gate_is_not_an_end_and_its_end_is_seen_from_another_host(vc: Vc, store: Store) -> None:
    sid = start_detached(vc, "gate")
    store.wait_status(sid, "PAUSED")
    waiter = start_wait(sid)
    try:
        assert waiter.stderr is not None
        note = waiter.stderr.readline()
        assert note == (
            f"vc: {sid[:12]} ({store.view(sid).name}) waits at the manual gate approve: "
            f"vc flow session approve {sid[:12]} approve\n"
        )
        assert waiter.poll() is None  # still waiting: a gate is not an end
        assert (
            vc("flow", "session", "resume", sid, env={"VC_HOSTNAME": "runner-host"}).returncode == 0
        )
        out, _ = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0
    assert out == f"COMPLETED: {sid[:12]} ({store.view(sid).name})\n"


@sqlite_only
def test_wait_follows_changes_without_a_busy_loop(vc: Vc, store: Store) -> None:
    """A guard against spinning, not a measurement (that is tests/bench/bench_notify.py):
    two seconds of waiting on a session at a gate cost well under a tenth of a core."""
    sid = start_detached(vc, "gate")
    store.wait_status(sid, "PAUSED")
    waiter = start_wait(sid)
    try:
        assert waiter.stderr is not None and "waits at the manual gate" in waiter.stderr.readline()
        before, started = cpu_ticks(waiter.pid), time.monotonic()
        time.sleep(2)
        used = (cpu_ticks(waiter.pid) - before) / 100  # clock ticks of 10 ms
        assert used < 0.1 * (time.monotonic() - started)
    finally:
        waiter.kill()
        waiter.communicate()


@sqlite_only
def test_wait_on_an_unknown_id_exits_1_and_waits_for_nothing(vc: Vc, store: Store) -> None:
    sid = start_detached(vc, "gate")
    result = vc("flow", "session", "wait", sid, "abcd0123", "--timeout", "30")
    assert result.returncode == 1
    assert result.stderr == "vc: error: no session matches 'abcd0123'\n"
    assert result.stdout == ""


@sqlite_only
@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "soon"])
def test_a_bad_timeout_is_a_usage_error(vc: Vc, store: Store, value: str) -> None:
    sid = start_detached(vc, "hello")
    result = vc("flow", "session", "wait", sid, "--timeout", value)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("vc: error: invalid value for '--timeout'")
    assert result.stdout == ""


@sqlite_only
def test_wait_without_an_id_is_a_usage_error(vc: Vc, store: Store) -> None:
    result = vc("flow", "session", "wait")
    assert result.returncode == 2 and result.stderr.startswith("vc: error: missing argument")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_store_that_refuses_the_wait_for_good_ends_it_with_one_line(
    vc: Vc, store: Store, db_url: str
) -> None:
    """The waiter's role may no longer log in (credentials revoked while it waits): no
    amount of waiting lets it back in, so the wait ends, exit 1, naming why."""
    sid = _paused_session(vc, store)  # not ended, and the waiter says so once it has read it
    with pg_role(db_url) as (role, url):
        waiter = start_wait(sid, url=url)
        assert waiter.stderr is not None
        assert "is PAUSED" in waiter.stderr.readline()
        out, err = _locked_out(role, waiter)
    assert waiter.returncode == 1
    assert out == ""
    *before, last = err.splitlines()
    assert last == (
        "vc: error: the store refuses this wait (authentication failed (the role may not "
        f'log in): role "{role}" is not permitted to log in); waiting will not cure it'
    )
    # the connection cut under it is an outage like any other, and said as one
    assert all(line.startswith("vc: warning:") for line in before), before


def _through(proxy: TcpProxy, db_url: str, *, in_query: bool) -> str:
    """``db_url`` by way of ``proxy``; ``in_query``: its host and port as libpq's query
    parameters, which only the full path reads (the driver path leaves such a URL to it)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if in_query:
        url = url.set(host=None, port=None).update_query_dict(
            {"host": "127.0.0.1", "port": str(proxy.port)}
        )
    else:
        url = url.set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("path", ["driver", "full"])
def test_a_follow_goes_on_through_a_server_outage(
    vc: Vc, store: Store, db_url: str, path: str
) -> None:
    """The server goes away (connections cut, new ones refused) and comes back: the
    follower says so once and goes on, printing what is logged after the outage, whether
    it reads the store by the driver or through the ORM."""
    from sqlalchemy.engine import make_url

    sid = _paused_session(vc, store)
    upstream = make_url(db_url)
    proxy = TcpProxy((upstream.host or "127.0.0.1", upstream.port or 5432))
    try:
        follower = start_follow(sid, _through(proxy, db_url, in_query=path == "full"))
        try:
            assert follower.stdout is not None
            assert " create " in follower.stdout.readline()
            time.sleep(0.6)  # in its loop of reads by now
            proxy.down()
            time.sleep(1.5)  # its reads, then its new connections, refused
            proxy.up()
            assert vc("flow", "session", "abort", sid).returncode == 0
            out, err = follower.communicate(timeout=30)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.communicate()
    finally:
        proxy.close()
    assert follower.returncode == 0, err
    assert " abort PAUSED -> FAILED " in out
    [said] = err.splitlines()
    assert said.startswith("vc: warning: ") and said.endswith("; still following")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_store_that_refuses_the_follow_for_good_ends_it_with_one_line(
    vc: Vc, store: Store, db_url: str
) -> None:
    """The follower's role may no longer log in: no amount of waiting lets it back in, so
    the follow ends, exit 1, naming why."""
    sid = _paused_session(vc, store)
    with pg_role(db_url) as (role, url):
        follower = start_follow(sid, url)
        assert follower.stdout is not None
        assert " create " in follower.stdout.readline()
        _, err = _locked_out(role, follower)
    assert follower.returncode == 1
    *before, last = err.splitlines()
    assert last == (
        "vc: error: the store refuses this follow (authentication failed (the role may not "
        f'log in): role "{role}" is not permitted to log in); waiting will not cure it'
    )
    assert all(line.startswith("vc: warning:") for line in before), before
