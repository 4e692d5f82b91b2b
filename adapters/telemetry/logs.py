"""Log output for a long-running process: today's text lines, or one JSON object per line.

``text`` is the line operators read in a terminal (``time level logger message``). ``json`` is
for a log pipeline (Loki, Elasticsearch, Cloud Logging): one object per line with ``time``,
``level``, ``logger`` and ``message``; ``trace_id`` and ``span_id`` of the OpenTelemetry span
current where the line was logged, so a line leads to its trace; the fields bound with
:func:`fedrelay.protocol.logfields.log_fields` (``message_id``, ``job_id``, ``round``,
``chain``), so every line of one message or one round can be found; and ``exception`` with the
traceback when there is one.

Both formats pass each line (message, traceback, stack) through
:func:`fedrelay.protocol.redact.redact_text`: a URL in it loses its password, query values and
keys, and so do the secrets of the URLs the process remembered, wherever they appear; a library
quoting the URL it failed on cannot leak a key into the log.

Libraries that log a line per request (an RPC poll, a Kafka fetch, an HTTP access) are held at
WARNING unless the level is DEBUG: at INFO a relayer would otherwise log every poll of every
chain.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal, TextIO

from opentelemetry import trace

from fedrelay.protocol.logfields import FIELD_NAMES, bound_log_fields
from fedrelay.protocol.redact import redact_text

LogFormat = Literal["text", "json"]

#: The formats :func:`configure_logging` accepts.
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
#: The text line: the same look the services have always logged with.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Loggers that log a line per request; held at WARNING unless the level is DEBUG.
CHATTY_LOGGERS = (
    "httpx",
    "httpcore",
    "urllib3",
    "web3",
    "aiokafka",
    "uvicorn.access",
    "solana.rpc",
)


class TextFormatter(logging.Formatter):
    """The text line, with every URL's and every remembered URL's secrets masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record as text (with its traceback), passed through `redact_text`."""
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the current span and the bound log fields.

    The message, traceback and stack are passed through `redact_text` (a library's line may
    quote the URL it failed on, with its password or API key).
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no newline inside)."""
        entry: dict[str, object] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        bound = bound_log_fields()
        for name in FIELD_NAMES:
            if name in bound:
                entry[name] = bound[name]
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact_text(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str, ensure_ascii=False)

    @staticmethod
    def _time(record: logging.LogRecord) -> str:
        """RFC 3339 in UTC with milliseconds, e.g. ``2025-01-31T12:00:00.123Z``."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    named = logging.getLevelNamesMapping().get(level.strip().upper())
    if named is None:
        raise ValueError(f"unknown log level {level!r} (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return named


def formatter_for(fmt: str) -> logging.Formatter:
    """The formatter of a log format name (``text`` or ``json``).

    Raises:
        ValueError: The name is neither.
    """
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {fmt!r} (one of: {', '.join(LOG_FORMATS)})")


class _ProcessHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs (so a second call replaces it)."""


def configure_logging(
    level: str | int = logging.INFO, fmt: str = "text", *, stream: TextIO | None = None
) -> None:
    """Send this process's log lines to ``stream`` (stderr) at ``level``, as text or JSON.

    Like :func:`logging.basicConfig`, it leaves a root logger alone that already has handlers
    of someone else's (an embedding application's, a test harness's); a second call replaces
    what the first installed. Per-request library loggers are set to WARNING unless ``level``
    is DEBUG.

    Args:
        level: A level name (``INFO``) or number.
        fmt: ``text`` or ``json``.
        stream: Where lines go (default: standard error).

    Raises:
        ValueError: An unknown level or format.
    """
    number = _level(level)
    formatter = formatter_for(fmt)
    chatty = logging.NOTSET if number <= logging.DEBUG else logging.WARNING
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _ProcessHandler)]
    if len(ours) < len(root.handlers):
        return
    for handler in ours:
        root.removeHandler(handler)
    handler = _ProcessHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(number)
