"""aiokafka's log lines during a broker outage: the first one, then a count, not thousands.

While the broker is away, every aiokafka client (each stage's producer, consumer, coordinator
and metadata refresher) logs an ERROR or WARNING per reconnect attempt: a 15-second outage gave
about 10,000 lines across nine relayer processes, enough to drown alerting on errors. The stages
already say, once, that they lost the broker and are waiting for it.

:func:`install_outage_logging` routes the ``aiokafka`` loggers through :class:`OutageLogHandler`:
the first warning or error of an outage goes out as it is; the rest are counted, and when none
has come for ``quiet_s`` seconds one WARNING line says how many were held back and for how long.
Lines below WARNING pass through unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

AIOKAFKA_LOGGER = "aiokafka"

log = logging.getLogger(__name__)


class OutageLogHandler(logging.Handler):
    """Passes the first aiokafka warning of an outage on, counts the rest (module docstring).

    Attributes:
        quiet_s: How long without a warning ends an outage.
        target: Where lines that pass go (default: the root logger's handlers).
    """

    def __init__(self, quiet_s: float = 30.0, target: logging.Logger | None = None) -> None:
        super().__init__(logging.NOTSET)
        self.quiet_s = quiet_s
        self.target = target
        self._lock = threading.Lock()
        self._started: float | None = None  # monotonic time of the outage's first line
        self._last = 0.0
        self._held = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> int:
        """How many lines the current outage has held back so far."""
        return self._held

    def emit(self, record: logging.LogRecord) -> None:
        """Pass `record` on, or count it (see the class docstring)."""
        if record.levelno < logging.WARNING:
            self._forward(record)
            return
        now = time.monotonic()
        with self._lock:
            ended = self._started is not None and now - self._last >= self.quiet_s
            summary = self._summary(now) if ended else None
            if ended:
                self._started = None
            self._last = now
            if self._started is None:
                self._started, self._held, first = now, 0, True
            else:
                self._held += 1
                first = False
        if summary is not None:
            self._forward(summary)
        if first:
            record.msg = f"{record.msg} (further broker errors are counted until it is back)"
            self._forward(record)
        self._schedule()

    def flush_outage(self) -> None:
        """End the current outage now: log how many lines it held back (if any)."""
        with self._lock:
            summary = self._summary(time.monotonic()) if self._started is not None else None
            self._started, self._held = None, 0
        if summary is not None:
            self._forward(summary)

    def _summary(self, now: float) -> logging.LogRecord | None:
        if not self._held:
            return None
        assert self._started is not None
        seconds = max(0.0, self._last - self._started)
        return logging.LogRecord(
            AIOKAFKA_LOGGER, logging.WARNING, __file__, 0,
            "broker connection errors: %d more aiokafka warnings and errors held back over "
            "%.1f s", (self._held, seconds), None,
        )  # fmt: skip

    def _schedule(self) -> None:
        """Check for the end of the outage after `quiet_s` (on the running event loop)."""
        if self._timer is not None and not self._timer.cancelled():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the next line, or flush_outage(), ends the outage
            return
        self._timer = loop.call_later(self.quiet_s, self._check_quiet)

    def _check_quiet(self) -> None:
        self._timer = None
        with self._lock:
            outage = self._started is not None
            remaining = self._last + self.quiet_s - time.monotonic()
        if not outage:
            return
        if remaining > 0:
            self._timer = asyncio.get_running_loop().call_later(remaining, self._check_quiet)
            return
        self.flush_outage()

    def _forward(self, record: logging.LogRecord) -> None:
        target = self.target or logging.getLogger()
        for handler in target.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


_INSTALLED: list[OutageLogHandler] = []


def install_outage_logging(quiet_s: float = 30.0) -> OutageLogHandler:
    """Route the ``aiokafka`` loggers through one :class:`OutageLogHandler` (once per process).

    The ``aiokafka`` logger then no longer propagates to the root logger; what passes the handler
    goes to the root logger's handlers.
    """
    if _INSTALLED:
        return _INSTALLED[0]
    handler = OutageLogHandler(quiet_s)
    logger = logging.getLogger(AIOKAFKA_LOGGER)
    logger.addHandler(handler)
    logger.propagate = False
    _INSTALLED.append(handler)
    return handler
