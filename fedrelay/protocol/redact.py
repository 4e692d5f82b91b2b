"""URLs as they may be shown: without passwords, query values or keys in their paths.

Endpoints carry secrets: a database URL its password (``postgresql+asyncpg://user:pw@host/db``),
a hosted RPC provider's URL its API key in the path (``https://host/v3/<key>``,
``https://host/v2/<key>``) or the query (``?apikey=...``). Those URLs end up in error messages,
log lines, command output and exception text from HTTP and database libraries, which quote the
URL they failed on (whole, or only its path and query). Every place that shows a URL or an
exception that may hold one passes it through this module first:

- :func:`redact_url` keeps what tells an operator which endpoint it is (scheme, user, host,
  port, the path's ordinary segments, the query's names) and replaces the secrets with ``***``;
- :func:`redact_text` redacts a message (an exception's text, a log line): every URL in it, and
  every secret of the URLs the caller names or this process :func:`remember`\\ s, wherever it
  appears on its own (a library may quote only a URL's path and query);
- the process's log formatters (:mod:`fedrelay.adapters.telemetry.logs`) pass each line
  through :func:`redact_text`, so a library's own log line cannot leak either.

It is pure (no I/O) and lives in the protocol layer, so every layer can use it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import SplitResult, unquote, urlsplit

__all__ = ["MASK", "forget_all", "redact_text", "redact_url", "remember", "secrets_of"]

#: What stands where a secret was.
MASK = "***"

# A path segment that looks like a token or an API key: long, and only the characters keys use.
_TOKEN_SEGMENT = re.compile(r"[A-Za-z0-9_\-.~=+]{16,}")
# Path segments after which hosted RPC providers put the key (Infura /v3/, Alchemy /v2/, ...).
_KEY_FOLLOWS = frozenset({"v1", "v2", "v3", "key", "keys", "token", "apikey", "api-key"})
# Segments that are never secrets, even after a key-introducing segment or when long.
_PLAIN_SEGMENT = re.compile(r"(\d{1,6}|[a-z_]{1,15})")
# Schemes whose path is a file on disk.
_FILE_SCHEMES = ("sqlite", "file")
# A URL inside free text: a scheme, "://", then everything up to a space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# Secrets shorter than this are masked inside their URL only, not wherever they occur in a text
# (masking every "ab" in a message would make it unreadable and hide nothing).
_MIN_LOOSE_SECRET = 4

_lock = threading.Lock()
_remembered: set[str] = set()


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url.strip())
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None


def _secret_segments(scheme: str, path: str) -> list[int]:
    """Indexes of the path segments (split on ``/``) that look like secrets.

    A file's path (``sqlite``, ``file``) is a place on disk, never a secret.
    """
    if scheme.startswith(_FILE_SCHEMES):
        return []
    segments = path.split("/")
    secret = []
    for index, segment in enumerate(segments):
        if not segment:
            continue
        after_key_word = index > 0 and segments[index - 1].lower() in _KEY_FOLLOWS
        if _TOKEN_SEGMENT.fullmatch(segment) or (
            after_key_word and not _PLAIN_SEGMENT.fullmatch(segment)
        ):
            secret.append(index)
    return secret


def _netloc(parts: SplitResult) -> tuple[str, str | None]:
    """The netloc with its password masked, and the password (None if there is none)."""
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return parts.netloc, None
    user, colon, password = userinfo.partition(":")
    if not colon:
        return parts.netloc, None
    return f"{user}:{MASK}@{hostport}", password


def redact_url(url: str) -> str:
    """`url` with its password, query values, fragment and secret-looking path segments masked.

    ``https://user:pw@rpc.example/v3/0123456789abcdef0123?apikey=k&chain=1`` becomes
    ``https://user:***@rpc.example/v3/***?apikey=***&chain=***``. A value that is no URL at all
    (no ``scheme://``) is shown as ``<not a URL>``: it may be a secret given in the wrong place.

    Args:
        url: Any URL (SQLAlchemy's ``driver+dialect://`` included).

    Returns:
        The URL safe to print.
    """
    parts = _split(url)
    if parts is None or not parts.scheme or "://" not in url:
        return "<not a URL>"
    netloc, _ = _netloc(parts)
    segments = parts.path.split("/")
    for index in _secret_segments(parts.scheme, parts.path):
        segments[index] = MASK
    path = "/".join(segments)
    query = "&".join(
        f"{name}={MASK}" if sep else name
        for name, sep, _ in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    shown = f"{parts.scheme}://{netloc}{path}"
    if query:
        shown += f"?{query}"
    if parts.fragment:
        shown += f"#{MASK}"
    return shown


def secrets_of(url: str) -> set[str]:
    """The secret parts of `url` as they may appear in a text: raw and percent-decoded.

    The password, every query value, the fragment and every secret-looking path segment; the
    whole URL too (its redacted form replaces it first).
    """
    parts = _split(url)
    if parts is None:
        return {url} if url else set()
    found: list[str] = []
    _, password = _netloc(parts)
    if password:
        found.append(password)
    segments = parts.path.split("/")
    found += [segments[index] for index in _secret_segments(parts.scheme, parts.path)]
    found += [value for pair in parts.query.split("&") for value in [pair.partition("=")[2]]]
    if parts.fragment:
        found.append(parts.fragment)
    secrets = {s for s in found if s}
    secrets |= {unquote(s) for s in secrets}
    return secrets


def remember(*urls: str | None) -> None:
    """Have every later :func:`redact_text` in this process mask the secrets of `urls`.

    A process calls it with the URLs it is configured with (its database, its RPC endpoints), so
    a library's message quoting only a piece of one (``... with url: /v3/<key>``) is masked too.
    """
    with _lock:
        for url in urls:
            if url:
                _remembered.add(url)


def forget_all() -> None:
    """Forget every remembered URL (tests)."""
    with _lock:
        _remembered.clear()


def redact_text(text: str, urls: Iterable[str | None] = ()) -> str:
    """`text` with every URL in it redacted and every secret of `urls` masked.

    Args:
        text: A message: an exception's text, a log line, an HTTP body.
        urls: URLs whose secrets must not appear (besides those :func:`remember`\\ ed); a library
            may have quoted them whole, in pieces, or percent-decoded.

    Returns:
        The text safe to show.
    """
    with _lock:
        known = {u for u in (*urls, *_remembered) if u}
    for url in sorted(known, key=len, reverse=True):
        text = text.replace(url, redact_url(url))
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    secrets: set[str] = set()
    for url in known:
        secrets |= secrets_of(url)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_LOOSE_SECRET:
            text = text.replace(secret, MASK)
    return text
