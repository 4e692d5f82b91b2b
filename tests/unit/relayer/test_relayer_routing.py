"""Routing: each VAA goes to the delivery topic of the chain its payload targets."""

from __future__ import annotations

import pytest
from support.relayer import sample_observation, signed_vaa_bytes
from support.wormhole import (
    guardian_signers,
    sample_round_settled,
    sample_task_assigned,
    sample_update_committed,
    sample_worker_registered,
)

from fedrelay.adapters.kafka import Record
from fedrelay.relayer.records import (
    DeliveryRequest,
    SignedVaa,
    decode_as,
    encode_message,
    message_key,
)
from fedrelay.relayer.stages.route import Router, UnroutableVaa, delivery_topic, route

SIGNERS = guardian_signers(1)


def _signed(payload: bytes, sequence: int = 1) -> SignedVaa:
    observation = sample_observation(sequence, payload=payload)
    return SignedVaa(signed_vaa_bytes(observation, SIGNERS), emitted_at_ms=42)


@pytest.mark.parametrize(
    ("payload", "chain"),
    [
        (sample_task_assigned().to_bytes(), 4),
        (sample_round_settled().to_bytes(), 4),
        (sample_worker_registered().to_bytes(), 2),
        (sample_update_committed().to_bytes(), 2),
    ],
    ids=["task_assigned", "round_settled", "worker_registered", "update_committed"],
)
def test_route_follows_the_payload_target(payload: bytes, chain: int) -> None:
    request = route(_signed(payload))
    assert request.destination_chain == chain
    assert request.target_address == payload[4:36]
    assert request.emitted_at_ms == 42
    assert delivery_topic(request.destination_chain) == f"deliveries.{chain}"


def test_unknown_payload_is_unroutable() -> None:
    with pytest.raises(UnroutableVaa, match=r"has no fedrelay payload: .*payload id"):
        route(_signed(b"\x09\x01" + bytes(42)))


def test_destination_outside_the_configured_chains_is_unroutable() -> None:
    signed = _signed(sample_task_assigned().to_bytes())
    with pytest.raises(UnroutableVaa, match=r"targets chain 4, which .* \(configured: \[1, 2\]\)"):
        route(signed, destinations={1, 2})


def test_delivery_topic_needs_a_u16_chain() -> None:
    with pytest.raises(UnroutableVaa, match="u16"):
        delivery_topic(70_000)


async def test_router_addresses_the_delivery_topic() -> None:
    signed = _signed(sample_update_committed().to_bytes(), sequence=5)
    record = Record("vaas", 0, 0, None, encode_message(signed))
    result = await Router(destinations=frozenset({2, 4}), prefix="d").process(record)
    [output] = result.outputs
    assert output.topic == "d.2"
    assert output.key == message_key(signed.message_id)
    request = decode_as(output.value, DeliveryRequest)
    assert request.vaa == signed.vaa
    assert (result.emitted_at_ms, result.source) == (42, "chain-2")
