"""Notification targets: Apprise URLs (``ntfy://…``, ``mailto://…``, ``json://…``), checked
when a workflow file is read and only ever shown masked.

A notification URL carries its secret inline (a password, a token, a webhook key), so what
this module hands out for people to read is :func:`masked`: Apprise's own privacy rendering
(passwords and tokens cut short) without the query string, where Apprise leaves custom
headers (``+X-Token=…``) as they are. A URL Apprise cannot parse is shown by its scheme
alone. :func:`redact` cleans any other text (an error Apprise reported) of the parts of a URL
that the masked form does not show.

Apprise is imported on first use: reading a workflow without ``notify`` never pays for it.
Its own log lines may quote a URL whole (``Unparseable URL tgram://<token>``), so its logger
is given a handler that drops them and does not pass them up to the root logger; a sender
that wants Apprise's reasons attaches its own handler and redacts them.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any
from urllib.parse import unquote

#: Longest URL accepted; real ones are a few hundred characters at most.
MAX_URL_LENGTH = 4096
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_PARTS = re.compile(r"[/:@?&=#+,;]+")
#: Shorter parts of a URL are not redacted from messages (a port, "v1"): not secrets, and
#: replacing them everywhere would make the message unreadable.
_MIN_SECRET = 3
_lock = threading.Lock()
_module: Any = None


def apprise() -> Any:
    """The ``apprise`` module, imported once, its logger kept from printing URLs."""
    global _module
    with _lock:
        if _module is None:
            import logging

            import apprise as module

            log = logging.getLogger("apprise")
            log.addHandler(logging.NullHandler())
            log.propagate = False
            _module = module
    return _module


def scheme_of(url: str) -> str | None:
    """``json`` for ``json://…``; None when the text does not start like a URL."""
    match = _SCHEME.match(url.strip())
    return match.group(1).lower() if match else None


def instantiate(url: str) -> Any | None:
    """A fresh Apprise plugin object for ``url`` (one per delivery: plugins keep state), or
    None when Apprise cannot use it."""
    if not url or len(url) > MAX_URL_LENGTH or "\x00" in url:
        return None
    try:
        return apprise().Apprise.instantiate(url.strip())
    except Exception:  # a plugin that raises on odd input: as unusable as None
        return None


#: A blank followed by what starts like a URL: a second URL in the same entry.
_SECOND_URL = re.compile(r"\s[A-Za-z][A-Za-z0-9+.-]*://")


@functools.lru_cache(maxsize=512)
def problem(url: str) -> str | None:
    """Why Apprise cannot send to ``url`` (never quoting it: it may hold a secret), or None
    when it can."""
    if len(url) > MAX_URL_LENGTH:
        return f"expected a notification URL of at most {MAX_URL_LENGTH} characters"
    if _SECOND_URL.search(url.strip()):
        # Two URLs in one entry (as VC_NOTIFY is written) would be taken for one, sent to
        # a wrong path, and the second one's secrets would escape the masking. A blank
        # alone is Apprise's to take (``mailto://…?subject=Nightly ETL``).
        return (
            "expected one notification URL per entry: this one holds two, separated by a "
            "blank (the URL is not shown: it may hold a secret)"
        )
    if instantiate(url) is not None:
        return None
    scheme = scheme_of(url)
    if scheme is None:
        return "expected a notification URL such as ntfy://TOPIC or mailto://USER:PASSWORD@HOST"
    hidden = "the URL is not shown: it may hold a secret"
    if scheme not in _known_schemes():
        return f"no Apprise service has the scheme '{scheme}://' ({hidden})"
    return f"Apprise cannot parse this {scheme}:// URL: a part is missing or malformed ({hidden})"


@functools.lru_cache(maxsize=1)
def _known_schemes() -> frozenset[str]:
    try:
        services = apprise().Apprise().details().get("schemas") or []
    except Exception:
        return frozenset()
    return frozenset(
        str(p).lower()
        for s in services
        for p in (*(s.get("protocols") or ()), *(s.get("secure_protocols") or ()))
    )


@functools.lru_cache(maxsize=512)
def masked(url: str) -> str:
    """``url`` as it may be shown: secrets cut short by Apprise, query string dropped.

    Apprise renders its own canonical form of the URL, which is not always what was
    written (``ntfy://topic`` comes back as ``ntfys://topic``, a trailing ``/`` is added):
    the scheme and the end are shown as written, so a user recognises their own URL."""
    plugin = instantiate(url)
    if plugin is None:
        scheme = scheme_of(url)
        return f"{scheme}://…" if scheme else "(not a URL)"
    try:
        shown = str(plugin.url(privacy=True)).split("?", 1)[0]
    except Exception:
        scheme = scheme_of(url)
        return f"{scheme}://…" if scheme else "(not a URL)"
    written = _SCHEME.match(url.strip())
    if written is not None and "://" in shown:
        shown = written.group(1) + shown[shown.index("://") :]
    head, _, rest = shown.partition("://")
    if rest.endswith("/") and not url.strip().split("?", 1)[0].endswith("/"):
        shown = f"{head}://{rest.rstrip('/')}" if rest.strip("/") else shown
    return shown


@functools.lru_cache(maxsize=512)
def secret_parts(url: str) -> tuple[str, ...]:
    """The pieces of ``url`` (as written and percent-decoded) that :func:`masked` does not
    show, longest first: what :func:`redact` removes from other text."""
    shown = masked(url)
    pieces: set[str] = set()
    for piece in _PARTS.split(url):
        for form in (piece, unquote(piece)):
            if len(form) >= _MIN_SECRET and form not in shown:
                pieces.add(form)
    return tuple(sorted(pieces, key=len, reverse=True))


def redact(text: str, urls: list[str] | tuple[str, ...]) -> str:
    """``text`` with every secret part of ``urls`` replaced by ``****``."""
    for url in urls:
        for part in secret_parts(url):
            if part in text:
                text = text.replace(part, "****")
    return text


def masked_definition(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A definition snapshot (or ``flow show --json`` document) fit to print: its notify
    URLs masked. The same object when it has none (no Apprise import)."""
    notify = snapshot.get("notify")
    if not isinstance(notify, dict) or not notify.get("to"):
        return snapshot
    shown = dict(snapshot)
    shown["notify"] = {**notify, "to": [masked(str(url)) for url in notify["to"]]}
    return shown


__all__ = [
    "MAX_URL_LENGTH",
    "instantiate",
    "masked",
    "masked_definition",
    "problem",
    "redact",
    "scheme_of",
    "secret_parts",
]
