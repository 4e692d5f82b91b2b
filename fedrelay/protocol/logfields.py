"""Fields that every log line on one message's or one round's path carries, bound by context.

A service binds the message or the round it is working on around the work (``with
log_fields(message_id=...)``), and every line logged inside, by its own code or a library's,
carries them when the process logs JSON (:mod:`fedrelay.adapters.telemetry.logs`). The binding
is a context variable, so concurrent tasks each see their own fields and nothing leaks past the
``with`` block. It lives in the protocol layer, pure and without I/O, so services bind fields
without importing an adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

#: The names a log line may carry, in the order a JSON line shows them.
FIELD_NAMES = ("message_id", "job_id", "round", "chain")

_EMPTY: Mapping[str, str | int] = MappingProxyType({})
_BOUND: ContextVar[Mapping[str, str | int]] = ContextVar("fedrelay_log_fields", default=_EMPTY)


@contextmanager
def log_fields(
    *,
    message_id: str | None = None,
    job_id: int | None = None,
    round: int | None = None,
    chain: str | int | None = None,
) -> Iterator[None]:
    """Bind fields to every log line inside the block (None leaves a field as it was).

    Args:
        message_id: The message being handled (``chain/emitter/sequence``).
        job_id: The job being worked on.
        round: The job's round.
        chain: The chain concerned (name or Wormhole id).
    """
    given = {"message_id": message_id, "job_id": job_id, "round": round, "chain": chain}
    bound = {**_BOUND.get(), **{k: v for k, v in given.items() if v is not None}}
    token = _BOUND.set(MappingProxyType(bound))
    try:
        yield
    finally:
        _BOUND.reset(token)


def bound_log_fields() -> Mapping[str, str | int]:
    """The fields bound in the current context (empty outside every :func:`log_fields`)."""
    return _BOUND.get()
