"""OpenTelemetry tracing, configured from the standard ``OTEL_*`` environment variables.

- ``OTEL_SERVICE_NAME`` names the process (default: the name the process passes in, such as
  ``fedrelay-relayer-deliver``);
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` point the OTLP/HTTP
  exporter at a collector, Jaeger or Tempo; without either, spans are not exported;
- ``OTEL_TRACES_EXPORTER=none`` turns exporting off explicitly.

Trace context crosses the bus in W3C ``traceparent``/``tracestate`` record headers and is stored
with each message in the ledger, so one round is one trace across chains and services.
"""

from __future__ import annotations

import os

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

Headers = tuple[tuple[str, bytes], ...]


def _wants_export() -> bool:
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure_tracing(
    default_service_name: str, *, extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    """Install a tracer provider for this process and return it.

    Args:
        default_service_name: used unless ``OTEL_SERVICE_NAME`` is set.
        extra_processor: an additional span processor (tests use an in-memory exporter).
    """
    name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    if _wants_export():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    trace.set_tracer_provider(provider)
    return provider


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
