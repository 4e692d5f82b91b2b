"""OpenTelemetry tracing for a process, configured from the standard ``OTEL_*`` variables.

- ``OTEL_SERVICE_NAME`` names the process (default: the name the process passes in, such as
  ``fedrelay-relayer-deliver``);
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` point the OTLP/HTTP
  exporter at a collector, Jaeger or Tempo; without either, spans are not exported;
- ``OTEL_TRACES_EXPORTER=none`` turns exporting off explicitly.

How trace context crosses processes and chains (bus headers, the ledger, the derived trace of a
round) is the shared convention of :mod:`fedrelay.protocol.tracing`.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


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
