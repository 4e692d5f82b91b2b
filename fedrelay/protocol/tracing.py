"""How trace context travels between fedrelay's parties (OpenTelemetry API only, no exporter).

A process installs its tracer provider with
:func:`fedrelay.protocol.tracing.configure_tracing`; this module is the convention
everyone shares, so that each side finds the same trace.

Trace context crosses the bus in W3C ``traceparent``/``tracestate`` record headers and is stored
with each message in the ledger, so one round is one trace across chains and services.

A round's trace is known to everyone without being handed around: its trace id and the span id
of its (never recorded) root are derived from the coordinator chain, the job and the round
(:func:`round_context`). The coordinator's steps, the watcher's producer spans of the round's
messages and the worker's task spans all start under that root, on any chain, in any process,
after any restart.
"""

from __future__ import annotations

import struct

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from fedrelay.protocol.hashing import keccak256

Headers = tuple[tuple[str, bytes], ...]

#: Domain tag of the round trace derivation (changing it moves every round to new trace ids).
ROUND_TRACE_TAG = b"fedrelay.round-trace.v1"

#: Span attributes naming a job and a round, on every span of a round's trace.
JOB_ID_ATTRIBUTE = "fedrelay.job_id"
ROUND_ATTRIBUTE = "fedrelay.round"

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


class InvalidRound(ValueError):
    """A round's coordinates are outside the protocol's integer widths."""


def inject_headers(ctx: otel_context.Context | None = None) -> Headers:
    """The current (or given) trace context as bus record headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return tuple((key, value.encode()) for key, value in sorted(carrier.items()))


def extract_context(headers: Headers) -> otel_context.Context:
    """The trace context carried by bus record headers (empty context when none)."""
    carrier = {key: value.decode(errors="replace") for key, value in headers}
    return propagate.extract(carrier)


def traceparent(ctx: otel_context.Context | None = None) -> str | None:
    """The W3C traceparent of the current (or given) context, for storing in the ledger."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return carrier.get("traceparent")


def context_from_traceparent(value: str | None) -> otel_context.Context:
    """Rebuild a context from a stored traceparent (empty context for None)."""
    return propagate.extract({"traceparent": value} if value else {})


def round_span_context(coordinator_chain: int, job_id: int, round_number: int) -> SpanContext:
    """The span context of a round's trace root, derived from the round's coordinates.

    ``h = keccak256(ROUND_TRACE_TAG || u16 coordinator_chain || u64 job_id || u32 round)``
    (big-endian); the trace id is ``h[0:16]``, the root's span id ``h[16:24]`` (an all-zero
    value, which W3C forbids, becomes 1). The context is remote and sampled.

    Args:
        coordinator_chain: The Wormhole chain id of the coordinator chain (JobMarket's chain).
        job_id: The job's id on JobMarket.
        round_number: The round.

    Raises:
        InvalidRound: A value is not an integer of the protocol's width (u16, u64, u32).
    """
    for name, value, maximum in (
        ("coordinator_chain", coordinator_chain, _U16),
        ("job_id", job_id, _U64),
        ("round", round_number, _U32),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
            raise InvalidRound(f"{name} must be an integer in 0..{maximum}, got {value!r}")
    digest = keccak256(
        ROUND_TRACE_TAG + struct.pack(">HQI", coordinator_chain, job_id, round_number)
    )
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )


def round_context(coordinator_chain: int, job_id: int, round_number: int) -> otel_context.Context:
    """A context whose parent is the round's trace root: spans started in it join the round.

    See :func:`round_span_context` for the derivation and its errors.
    """
    root = round_span_context(coordinator_chain, job_id, round_number)
    return trace.set_span_in_context(NonRecordingSpan(root), otel_context.Context())


def round_attributes(job_id: int, round_number: int) -> dict[str, int]:
    """The span attributes naming a round (``fedrelay.job_id``, ``fedrelay.round``)."""
    return {JOB_ID_ATTRIBUTE: job_id, ROUND_ATTRIBUTE: round_number}
