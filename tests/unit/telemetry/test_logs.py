"""Log lines as JSON carry the trace and the bound message or round; text lines look as before."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from support.relayer import sample_observation, wait_until
from typer.testing import CliRunner

from fedrelay.adapters.kafka import MemoryBus, Record
from fedrelay.adapters.telemetry.logs import CHATTY_LOGGERS, JsonFormatter, configure_logging
from fedrelay.cli import app
from fedrelay.commands import logs as logs_module
from fedrelay.commands.logs import choose_logging, configure_command_logging
from fedrelay.protocol.logfields import bound_log_fields, log_fields
from fedrelay.protocol.redact import forget_all, remember
from fedrelay.relayer.records import encode_message, message_label
from fedrelay.relayer.stage import StageResult, StageRunner, stage_metrics

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO fedrelay\.test hello 7$")


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without handlers (pytest's too); everything is put back afterwards."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    logger.handlers.clear()
    try:
        yield logger
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        for name, old in chatty.items():
            logging.getLogger(name).setLevel(old)


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_carries_the_current_span() -> None:
    with bare_root():
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("work") as span:
            logging.getLogger("fedrelay.test").info("hello %d", 7)
        logging.getLogger("fedrelay.test").warning("outside")
        inside, outside = _json_lines(stream)
        context = span.get_span_context()
        assert inside["trace_id"] == format(context.trace_id, "032x")
        assert inside["span_id"] == format(context.span_id, "016x")
        assert inside["message"] == "hello 7"
        assert inside["level"] == "INFO"
        assert inside["logger"] == "fedrelay.test"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(inside["time"]))
        assert "trace_id" not in outside
        assert "span_id" not in outside


def test_a_json_line_carries_the_bound_message_and_round() -> None:
    with bare_root():
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        log = logging.getLogger("fedrelay.test")
        with log_fields(message_id="2/00ab/7"):
            log.info("relaying")
            with log_fields(job_id=5, round=3, chain="worker-evm"):
                log.info("assigned")
            log.info("relayed")
        log.info("idle")
        relaying, assigned, relayed, idle = _json_lines(stream)
        assert relaying["message_id"] == "2/00ab/7"
        assert "job_id" not in relaying
        assert assigned["message_id"] == "2/00ab/7"
        assert (assigned["job_id"], assigned["round"], assigned["chain"]) == (5, 3, "worker-evm")
        assert "round" not in relayed
        assert not {"message_id", "job_id", "round", "chain"} & set(idle)


def test_a_json_line_carries_the_exception() -> None:
    with bare_root():
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        try:
            raise RuntimeError("ledger away")
        except RuntimeError:
            logging.getLogger("fedrelay.test").exception("step failed")
        (line,) = _json_lines(stream)
        assert line["message"] == "step failed"
        assert "RuntimeError: ledger away" in str(line["exception"])


async def test_concurrent_tasks_each_log_their_own_fields() -> None:
    async def handle(message_id: str) -> object:
        with log_fields(message_id=message_id):
            await asyncio.sleep(0)
            return bound_log_fields().get("message_id")

    assert await asyncio.gather(handle("2/aa/1"), handle("4/bb/2")) == ["2/aa/1", "4/bb/2"]
    assert dict(bound_log_fields()) == {}


def test_the_text_format_is_unchanged() -> None:
    with bare_root():
        stream = io.StringIO()
        configure_logging("INFO", "text", stream=stream)
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("work"), log_fields(message_id="2/00ab/7", job_id=1):
            logging.getLogger("fedrelay.test").info("hello %d", 7)
        assert TEXT_LINE.match(stream.getvalue().rstrip("\n"))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_never_carry_a_urls_secrets(fmt: str) -> None:
    url = "postgresql+asyncpg://fed:Pa55%40word@db.internal/ledger"
    remember(url)
    try:
        with bare_root():
            stream = io.StringIO()
            configure_logging("INFO", fmt, stream=stream)
            log = logging.getLogger("fedrelay.test")
            log.warning("rpc https://rpc.example/v3/0123456789abcdef0123 is down")
            try:
                raise OSError("password Pa55@word refused")
            except OSError:
                log.exception("ledger at %s failed", url)
    finally:
        forget_all()
    out = stream.getvalue()
    assert "0123456789abcdef" not in out
    assert "Pa55" not in out
    assert "https://rpc.example/v3/***" in out
    assert "postgresql+asyncpg://fed:***@db.internal/ledger" in out


def test_per_request_library_lines_are_held_back_unless_debugging() -> None:
    with bare_root():
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        logging.getLogger("httpx").info(
            'HTTP Request: POST http://127.0.0.1:8545 "HTTP/1.1 200 OK"'
        )
        logging.getLogger("httpx").warning("retrying")
        logging.getLogger("fedrelay.relayer.stages.watch").info("observed")
        assert [line["message"] for line in _json_lines(stream)] == ["retrying", "observed"]

        debugging = io.StringIO()
        configure_logging("DEBUG", "json", stream=debugging)
        logging.getLogger("httpx").info("HTTP Request: POST")
        assert [line["logger"] for line in _json_lines(debugging)] == ["httpx"]
        assert stream.getvalue().count("\n") == 2  # the first handler was replaced, not kept


def test_a_root_logger_with_handlers_of_its_own_is_left_alone() -> None:
    with bare_root() as root:
        theirs = logging.StreamHandler(io.StringIO())
        root.addHandler(theirs)
        configure_logging("DEBUG", "json", stream=io.StringIO())
        assert root.handlers == [theirs]


def test_unknown_formats_and_levels_are_refused() -> None:
    with bare_root():
        with pytest.raises(ValueError, match="unknown log format 'xml'"):
            configure_logging("INFO", "xml")
        with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
            configure_logging("LOUD", "text")


def test_the_environment_chooses_the_format_of_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    with bare_root() as root:
        monkeypatch.setenv("FEDRELAY_LOG_FORMAT", "json")
        monkeypatch.setenv("FEDRELAY_LOG_LEVEL", "debug")
        configure_command_logging(logging.INFO)
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.DEBUG


def test_the_root_options_name_the_format_and_level() -> None:
    runner = CliRunner()
    try:
        chosen = runner.invoke(app, ["--log-format", "json", "--log-level", "INFO", "version"])
        assert chosen.exit_code == 0
        assert (logs_module._chosen.fmt, logs_module._chosen.level) == ("json", "INFO")
    finally:
        choose_logging(None, None)
    refused = runner.invoke(app, ["--log-format", "xml", "version"])
    assert refused.exit_code == 2
    assert "xml" in refused.output


class _LoggingProcessor:
    """Logs one line per record, as a stage's own code would."""

    def __init__(self) -> None:
        self.seen = 0

    async def process(self, record: Record) -> StageResult:
        logging.getLogger("fedrelay.relayer.test").info("processing")
        self.seen += 1
        return StageResult()


async def test_a_relayer_stage_logs_each_record_with_its_message_id_and_trace() -> None:
    observation = sample_observation(41)
    bus = MemoryBus()
    await bus.create_topics(["in", "dlq"])
    producer = bus.producer()
    await producer.start()
    await producer.send("in", encode_message(observation), key=b"emitter")
    await producer.send("in", b"not a relayer message", key=b"emitter")
    await producer.stop()
    processor = _LoggingProcessor()
    runner = StageRunner(
        name="test", bus=bus, inputs=["in"], group_id="logs", transactional_id="logs-0",
        processor=processor, poll_wait_s=0.05, metrics=stage_metrics(CollectorRegistry()),
        tracer=TracerProvider().get_tracer("test"),
    )  # fmt: skip
    stream = io.StringIO()
    with bare_root():
        configure_logging("INFO", "json", stream=stream)
        running = asyncio.create_task(runner.run())
        try:
            await wait_until(lambda: processor.seen == 2)
        finally:
            runner.stop()
            await running
            await bus.close()
    first, second = [
        line for line in _json_lines(stream) if line["logger"] == "fedrelay.relayer.test"
    ]
    assert first["message_id"] == message_label(observation.message_id)
    assert len(str(first["trace_id"])) == 32
    assert "message_id" not in second
