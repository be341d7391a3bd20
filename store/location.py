"""Where the workspace and the store are (``VC_HOME``, ``VC_DATABASE_URL``), and how long a
writer waits for SQLite's lock (``VC_BUSY_TIMEOUT``), without importing the database
layer: a command that only reads workflow files (`vc flow list`, `vc flow show`) or takes
the driver path (:mod:`store.direct`) never pays for SQLAlchemy's dialects and tables."""

from __future__ import annotations

import os
from pathlib import Path


def workspace_dir() -> Path:
    """The workspace: ``VC_HOME`` or the current directory. A ``VC_HOME`` that names a file
    is a mistake whatever the command (:class:`~store.errors.SettingError`, exit 2), not
    a workspace without a store."""
    home = os.environ.get("VC_HOME")
    path = Path(home or os.getcwd()).expanduser().absolute()
    if home and _names_a_non_directory(path):
        from store.errors import SettingError
        from store.text import clean_text

        raise SettingError(
            f"VC_HOME={clean_text(home)} is not a directory: it names the workspace "
            "(the directory of workflows/, logs/ and .vc/)"
        )
    return path


def _names_a_non_directory(path: Path) -> bool:
    try:
        return path.exists() and not path.is_dir()
    except OSError:  # cannot be looked at (EACCES): what opens it says so
        return False


#: The name of the directory a workspace keeps its SQLite store in (``<workspace>/.vc``).
STORE_DIR_NAME = ".vc"


def resolve_database_url() -> str:
    """``VC_DATABASE_URL`` or ``<workspace>/.vc/flow.db``."""
    url = os.environ.get("VC_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{workspace_dir() / STORE_DIR_NAME / 'flow.db'}"


DEFAULT_BUSY_TIMEOUT = 10.0


def busy_timeout() -> float:
    """Seconds a SQLite writer waits for another's lock (``VC_BUSY_TIMEOUT``)."""
    try:
        return float(os.environ.get("VC_BUSY_TIMEOUT", DEFAULT_BUSY_TIMEOUT))
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT
