"""`/healthz`, `/readyz` and `/metrics` for a long-running process.

- `/healthz` answers 200 while the process's event loop runs (liveness).
- `/readyz` runs every readiness check (can it reach its Kafka, database, chain?) with a time
  limit each and answers 200 only when all pass, else 503 with which failed (readiness). It is
  unauthenticated and bound to every interface, so each check's detail is a short reason
  (``unreachable (ConnectError)``), never an exception's text: that quotes the URL it failed on,
  with the password or API key in it. The full reason goes to the process's log (redacted, at
  WARNING once each time a check starts failing for a new reason). A check that knows why it is
  not ready, in words safe to show, raises :class:`NotReady`: its message is the detail, and the
  check's owner logs it (once) itself. A process may add facts of its own to the answer
  (``details``, e.g. the coordinator's role: leader or follower).
- `/metrics` serves the Prometheus registry.

The server runs inside the process's own event loop (`HealthServer.serve()` as a task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from fedrelay.protocol.redact import redact_text

ReadinessCheck = Callable[[], Awaitable[bool]]
Detail = Callable[[], object]


class NotReady(Exception):
    """A readiness check's own reason, safe to show unauthenticated (no URL, no secret)."""


log = logging.getLogger(__name__)


class _Reasons:
    """The last failure logged per check, so a failing probe logs once, not every 10 s."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def note(self, name: str, reason: str | None) -> None:
        if reason is None:
            self.last.pop(name, None)
        elif self.last.get(name) != reason:
            self.last[name] = reason
            log.warning("readiness check %s fails: %s", name, redact_text(reason))


async def _run_check(
    name: str, check: ReadinessCheck, limit: float, reasons: _Reasons
) -> tuple[bool, str]:
    """Run one check; (passed, short reason). The reason never holds an exception's text."""
    try:
        ok = await asyncio.wait_for(check(), limit)
    except NotReady as exc:
        reasons.note(name, None)  # the check's owner said it in the log already
        return False, str(exc)
    except TimeoutError:
        detail = f"no answer within {limit:g}s"
        reasons.note(name, detail)
        return False, detail
    except Exception as exc:  # a failing dependency is a "not ready", not a crash
        reasons.note(name, f"{type(exc).__name__}: {exc}")
        return False, f"unreachable ({type(exc).__name__})"
    reasons.note(name, None if ok else "the check answered not ready")
    return ok, "ok" if ok else "unreachable"


def health_app(
    checks: Mapping[str, ReadinessCheck],
    *,
    registry: CollectorRegistry = REGISTRY,
    check_timeout: float = 2.0,
    details: Mapping[str, Detail] | None = None,
) -> FastAPI:
    """The FastAPI app behind the three endpoints.

    Args:
        checks: The readiness checks by name.
        registry: What ``/metrics`` serves.
        check_timeout: Seconds each check may take.
        details: Facts ``/readyz`` adds to its answer, by key (each a JSON value).
    """
    facts = dict(details or {})
    app = FastAPI(title="fedrelay process health", docs_url=None, redoc_url=None)
    reasons = _Reasons()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(
            *(_run_check(n, checks[n], check_timeout, reasons) for n in names)
        )
        report = {
            n: {"ready": ok, "detail": detail}
            for n, (ok, detail) in zip(names, results, strict=True)
        }
        ready = all(ok for ok, _ in results)
        body: dict[str, object] = {"ready": ready, "checks": report}
        body.update({key: fact() for key, fact in facts.items()})
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _ProcessServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process that embeds it owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HealthServer:
    """Serves `health_app` on a port, inside the caller's event loop."""

    def __init__(
        self,
        checks: Mapping[str, ReadinessCheck],
        *,
        host: str = "0.0.0.0",  # noqa: S104 - probes come from the kubelet, not loopback
        port: int = 8080,
        registry: CollectorRegistry = REGISTRY,
        details: Mapping[str, Detail] | None = None,
    ) -> None:
        config = uvicorn.Config(
            health_app(checks, registry=registry, details=details), host=host, port=port,
            log_level="warning", access_log=False, lifespan="off",
            log_config=None,  # uvicorn's lines go through the process's log format
        )  # fmt: skip
        self._server = _ProcessServer(config)

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    async def wait_started(self, limit: float = 10.0) -> None:
        """Return once the port accepts connections; TimeoutError after `limit` seconds."""
        async with asyncio.timeout(limit):
            while not self._server.started:  # noqa: ASYNC110 - uvicorn exposes only a flag
                await asyncio.sleep(0.02)

    async def serve(self) -> None:
        await self._server.serve()

    def stop(self) -> None:
        self._server.should_exit = True
