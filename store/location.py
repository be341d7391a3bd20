"""Where the workspace and the store are (``VC_HOME``, ``VC_DATABASE_URL``), and how long a
writer waits for SQLite's lock (``VC_BUSY_TIMEOUT``), without importing the database
layer: a command that only reads workflow files (`vc flow list`, `vc flow show`) or takes
the driver path (:mod:`store.direct`) never pays for SQLAlchemy's dialects and tables."""

from __future__ import annotations

import os
from pathlib import Path


def workspace_dir() -> Path:
    """The workspace: ``VC_HOME`` or the current directory."""
    return Path(os.environ.get("VC_HOME") or os.getcwd()).expanduser().absolute()


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
