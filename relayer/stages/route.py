"""Routing: send each VAA to the delivery topic of the chain its payload targets.

The target chain is read from the payload header (every fedrelay payload names its target chain
and contract), so one ``vaas`` topic fans out into ``deliveries.<chain>``, one topic per
destination (Wormhole chain id), each consumed by that chain's deliver stage.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from fedrelay.ports.bus import Record
from fedrelay.protocol.wormhole import PayloadError, decode_payload
from fedrelay.relayer.errors import RelayerError
from fedrelay.relayer.records import (
    DeliveryRequest,
    SignedVaa,
    decode_as,
    encode_message,
    message_key,
)
from fedrelay.relayer.stage import Output, StageResult

DEFAULT_PREFIX = "deliveries"


class UnroutableVaa(RelayerError):
    """A VAA whose payload names no destination the relayer delivers to."""


def delivery_topic(chain: int, prefix: str = DEFAULT_PREFIX) -> str:
    """The topic of deliveries to Wormhole chain `chain`, e.g. ``deliveries.4``."""
    if not 0 <= chain <= 0xFFFF:
        raise UnroutableVaa(f"chain id must be a u16, got {chain}")
    return f"{prefix}.{chain}"


def route(signed: SignedVaa, destinations: Collection[int] | None = None) -> DeliveryRequest:
    """The delivery request for a VAA, addressed as its payload says.

    Args:
        signed: The VAA.
        destinations: The chains this relayer delivers to; None accepts any chain.

    Raises:
        UnroutableVaa: The payload does not decode, or targets a chain not in `destinations`.
    """
    try:
        payload = decode_payload(signed.parsed.body.payload)
    except PayloadError as exc:
        raise UnroutableVaa(f"VAA 0x{signed.digest.hex()} has no fedrelay payload: {exc}") from None
    if destinations is not None and payload.target_chain not in destinations:
        raise UnroutableVaa(
            f"VAA 0x{signed.digest.hex()} targets chain {payload.target_chain}, which this "
            f"relayer does not deliver to (configured: {sorted(destinations)})"
        )
    return DeliveryRequest(
        vaa=signed.vaa,
        destination_chain=payload.target_chain,
        target_address=payload.target_address,
        emitted_at_ms=signed.emitted_at_ms,
    )


@dataclass(frozen=True)
class Router:
    """The route stage's processor: ``vaas`` in, ``deliveries.<chain>`` out.

    Stateless: its hand-off is exactly-once through the bus transaction alone, and a duplicate
    VAA upstream is harmless downstream (deliveries are unique per digest and chain).
    """

    destinations: frozenset[int] | None = None
    prefix: str = DEFAULT_PREFIX

    async def process(self, record: Record) -> StageResult:
        """Decode the VAA and address it to its destination's topic."""
        signed = decode_as(record.value, SignedVaa)
        request = route(signed, self.destinations)
        output = Output(
            delivery_topic(request.destination_chain, self.prefix),
            encode_message(request),
            key=message_key(request.message_id),
        )
        return StageResult(
            (output,),
            emitted_at_ms=signed.emitted_at_ms,
            source=f"chain-{request.message_id.emitter_chain}",
        )
