"""Resolved configuration (the README's Configuration): where the workspace, the store, the logs and
the workflow definitions are. Read from the environment once per process; nothing is cached across
processes, so `VC_HOME=... vc ...` always means what it says."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from store.errors import SettingError


@dataclass(frozen=True)
class Settings:
    workspace: Path
    database_url: str
    log_dir: Path
    workflows_dir: Path
    #: Seconds after which a runner's heartbeat is stale (``VC_STALE_AFTER``).
    stale_after: float = 15.0

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls) -> Settings:
        from store.liveness import HEARTBEAT_INTERVAL, STALE_AFTER
        from store.location import resolve_database_url, workspace_dir

        # A limit at or below one heartbeat makes every live runner look gone between two
        # beats: a resume or a worker would then take over a healthy session.
        stale_after = _seconds(
            "VC_STALE_AFTER", STALE_AFTER, above=HEARTBEAT_INTERVAL, what="the heartbeat interval"
        )
        # read by the store itself; checked here (SQLite takes milliseconds as a 32-bit
        # number: a longer wait would silently become none)
        _seconds("VC_BUSY_TIMEOUT", 0.0, below=MAX_BUSY_TIMEOUT)
        notify_timeout()  # read by the runner's notifications; checked here
        _check_database_url(os.environ.get("VC_DATABASE_URL", ""))
        _check_hostname(os.environ.get("VC_HOSTNAME", ""))
        workspace = workspace_dir()
        return cls(
            workspace=workspace,
            database_url=resolve_database_url(),
            log_dir=_path(os.environ.get("VC_LOG_DIR"), workspace / "logs"),
            workflows_dir=_path(os.environ.get("VC_WORKFLOWS_DIR"), workspace / "workflows"),
            stale_after=stale_after,
        )


def _seconds(
    name: str,
    default: float,
    *,
    above: float | None = None,
    below: float | None = None,
    what: str = "",
) -> float:
    """The number of seconds in variable ``name`` (``default`` when unset or empty): a
    finite number, greater than ``above`` (None: at least 0), which the message calls
    ``what``, and less than ``below`` (None: no bound)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low_ok = value > above if above is not None else value >= 0
    if math.isfinite(value) and low_ok and (below is None or value < below):
        return value
    limit = f"above {above:g}" if above is not None else "of at least 0"
    if below is not None:
        limit += f" and below {below:g}"
    why = f" ({what})" if what else ""
    raise SettingError(f"{name} must be a number of seconds {limit}{why}; got {text!r}")


#: Seconds a notification target may take to answer, unless ``VC_NOTIFY_TIMEOUT`` says
#: otherwise.
NOTIFY_TIMEOUT = 10.0


def notify_timeout() -> float:
    """``VC_NOTIFY_TIMEOUT``: seconds above 0 and below an hour, else :data:`NOTIFY_TIMEOUT`
    when unset (:class:`~store.errors.SettingError` for a value vc cannot use)."""
    return _seconds("VC_NOTIFY_TIMEOUT", NOTIFY_TIMEOUT, above=0.0, below=3600.0)


#: The longest ``VC_BUSY_TIMEOUT`` (seconds, excluded): a week, far below what SQLite can
#: take (2**31 ms, about 24 days).
MAX_BUSY_TIMEOUT = 604800.0

#: The stores vc keeps its schema in: SQLite (Python's own driver) and PostgreSQL (psycopg,
#: the driver installed with vc; ``postgresql://`` means it too).
_DATABASE_URL = re.compile(r"(sqlite(\+pysqlite)?|postgresql(\+psycopg)?)://.*", re.DOTALL)


def _check_hostname(name: str) -> None:
    """``VC_HOSTNAME`` names this host on every event and runner claim, compared by other
    hosts and shown in every front end: printable, without spaces, at most 253
    characters, as a host name is (empty: the machine's own name)."""
    if not name:
        return
    if len(name) <= 253 and name.isprintable() and not any(c.isspace() for c in name):
        return
    from store.text import clean_text

    raise SettingError(
        "VC_HOSTNAME must be a host name (printable, no spaces, at most 253 characters); "
        f"got {clean_text(repr(name[:80]))}"
    )


def _check_database_url(url: str) -> None:
    """A ``VC_DATABASE_URL`` that can never name a store vc uses is a usage error (exit
    2) naming the variable, before anything is opened; one that names a store out of
    reach is the store's refusal, found when it is opened (exit 1)."""
    if url and not _DATABASE_URL.fullmatch(url):
        from store.text import clean_text

        # Only the scheme is shown: the rest may hold a password, in any of the forms a
        # connection string can take.
        scheme, sep, _ = url.partition("://")
        got = f"a URL of scheme {scheme[:40]!r}" if sep else "a value that is not a URL"
        raise SettingError(
            "VC_DATABASE_URL must be a SQLite or PostgreSQL URL (sqlite:///PATH, "
            f"postgresql+psycopg://USER@HOST/DB); got {clean_text(got)}"
        )
    if url.startswith("postgresql") and _second_at(url):
        raise SettingError(
            "VC_DATABASE_URL has a '@' after the one that ends the user and password: "
            "write a '@' in them as %40 (the URL is not shown: it may hold a password)"
        )
    if url.startswith("postgresql") and not _port_readable(url):
        raise SettingError(
            "VC_DATABASE_URL has a port that is not a number from 0 to 65535 "
            "(postgresql+psycopg://USER@HOST:PORT/DB)"
        )
    if url.startswith("sqlite") and _in_memory(url):
        raise SettingError(
            "VC_DATABASE_URL names an in-memory SQLite database, which every process has "
            "its own of (sessions would vanish with the command that made them); give a "
            "file: sqlite:///PATH"
        )
    if url.startswith("sqlite") and "?" in url:
        # SQLAlchemy would drop options it does not know (with a warning on stderr), or,
        # with uri=true, make a new file named after them: the store would not be the one
        # named.
        from store.text import clean_text

        options = url[url.index("?") :]
        raise SettingError(
            "VC_DATABASE_URL: a SQLite URL takes no options (sqlite:///PATH); got "
            f"{clean_text(options[:60])!r}"
        )


#: The grammar SQLAlchemy reads a URL with (``sqlalchemy.engine.url._parse_url``), copied so
#: that the check below reads the port exactly where opening the store would, without
#: importing SQLAlchemy on the commands that never need it: a password may hold ``#``,
#: ``/`` or ``?``, and ends at the first ``@``.
_SQLALCHEMY_URL = re.compile(
    r"""
    (?P<name>[\w+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    """,
    re.X,
)


def _second_at(url: str) -> bool:
    """A ``@`` after the one that ends the user and password, before any query: a ``@``
    of the password not written ``%40`` (the rest would be taken for the host and the
    database, and shown in the server's refusal)."""
    rest = url.partition("://")[2].partition("?")[0]
    return rest.count("@") > 1


def _port_readable(url: str) -> bool:
    """Whether the URL's port, if it has one, is a port number (SQLAlchemy would fail on
    it with an internal error when the store is opened)."""
    found = _SQLALCHEMY_URL.match(url)
    port = found.group("port") if found else None
    return not port or (port.isascii() and port.isdigit() and int(port) <= 65535)


def _in_memory(sqlite_url: str) -> bool:
    """``sqlite://``, ``sqlite:///``, ``sqlite:///:memory:`` or a ``mode=memory`` URI:
    SQLite's in-memory databases (SQLAlchemy's URL forms), never a store."""
    rest = sqlite_url.partition("://")[2]
    database, _, query = rest.removeprefix("/").partition("?")
    return (
        database in ("", ":memory:")
        or "mode=memory" in query
        or database.startswith("file::memory:")
    )


def _path(value: str | None, default: Path) -> Path:
    if not value:
        return default
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path)


def workspace_warnings(workspace: Path) -> list[str]:
    """Why the workspace may not be safe to use: its workflows are commands that vc runs,
    so a directory that other users can write to, or that belongs to someone else, lets
    them choose what runs under your name. Reported, not refused (shared team setups do
    this on purpose)."""
    import stat

    try:
        st = workspace.stat()
    except OSError:
        return []
    warnings = []
    if st.st_mode & stat.S_IWOTH:
        warnings.append(
            f"workspace {workspace} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}): they can change the workflows vc runs"
        )
    if st.st_uid != os.geteuid():
        warnings.append(
            f"workspace {workspace} is owned by another user (uid {st.st_uid}): its "
            "workflows run as you"
        )
    return warnings


def missing_store(settings: Settings) -> str | None:
    """The path of the SQLite store when it does not exist yet (and nothing is in its
    way), else None. A store named by ``VC_DATABASE_URL`` in a directory that does not
    exist is not "missing": the full path refuses that URL as mistyped."""
    url = settings.database_url
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    path = url.removeprefix("sqlite:///")
    parent = os.path.dirname(path) or "."
    if os.path.exists(path):
        return None
    if os.path.isdir(parent) or (
        not os.path.exists(parent) and not os.environ.get("VC_DATABASE_URL")
    ):
        return path  # the workspace's own store (.vc/flow.db), made by the first write
    return None


def no_workspace_here() -> str | None:
    """Why the dashboard or a worker should not open here: neither a store nor a workflows
    directory (a terminal in the wrong directory, VC_HOME unset or mistyped), where opening
    it would make a new, empty store (a worker would wait on it for ever). None in a
    workspace, even one whose first session is yet to start. Checked where the store
    would be opened, after the arguments (a usage error comes first)."""
    settings = Settings.from_env()
    missing = missing_store(settings)
    if missing is None or settings.workflows_dir.is_dir():
        return None
    return (
        f"no workspace in {settings.workspace}: no store ({missing}) and no workflows "
        "directory; cd to your workspace or set VC_HOME (or try 'vc flow tui --demo')"
    )
