"""aiokafka's warnings during a broker outage: the first passes, the rest become one count."""

from __future__ import annotations

import asyncio
import logging

from fedrelay.adapters.kafka.logs import OutageLogHandler


class Collect(logging.Handler):
    """Keeps what reaches it; `summary` is set when the outage's count arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.summary = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if "held back" in record.getMessage():
            self.summary.set()


def routed(quiet_s: float) -> tuple[logging.Logger, OutageLogHandler, Collect]:
    target = logging.Logger("target")
    collect = Collect()
    target.addHandler(collect)
    source = logging.Logger("aiokafka")  # not registered: no global logging state changes
    handler = OutageLogHandler(quiet_s, target=target)
    source.addHandler(handler)
    return source, handler, collect


async def test_an_outage_logs_its_first_error_then_one_count() -> None:
    source, handler, collect = routed(quiet_s=0.05)
    for attempt in range(500):
        source.error("Unable connect to node with id 1: [Errno 111] attempt %d", attempt)
    assert collect.lines == [
        "Unable connect to node with id 1: [Errno 111] attempt 0 "
        "(further broker errors are counted until it is back)"
    ]
    assert handler.held == 499
    await asyncio.wait_for(collect.summary.wait(), 5)  # the broker is quiet: the count follows
    assert len(collect.lines) == 2
    assert "499 more aiokafka warnings and errors held back" in collect.lines[1]


async def test_a_new_outage_after_a_quiet_spell_logs_again() -> None:
    source, handler, collect = routed(quiet_s=3600)
    source.warning("first outage")
    source.warning("again")
    handler.flush_outage()  # the broker is back
    source.warning("second outage")
    assert collect.lines[0].startswith("first outage")
    assert "1 more aiokafka warnings and errors held back" in collect.lines[1]
    assert collect.lines[2].startswith("second outage")


def test_lines_below_warning_pass_unchanged() -> None:
    source, _, collect = routed(quiet_s=3600)
    source.setLevel(logging.DEBUG)
    source.info("joined group")
    source.info("joined group")
    assert collect.lines == ["joined group", "joined group"]
