"""The shared vectors in tests/vectors/: up to date, and true of the Python codec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.vectors import build_payload_vectors, build_vaa_vectors

from fedrelay.protocol.wormhole import (
    ERRORS_BY_REASON,
    GuardianSet,
    GuardianSets,
    GuardianSigner,
    WormholeError,
    decode_payload,
    parse_vaa,
    payload_to_json,
    task_id,
    vaa_to_json,
    verify_vaa,
    worker_id,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
PAYLOADS = json.loads((VECTORS / "payloads.json").read_text())
VAAS = json.loads((VECTORS / "vaas.json").read_text())


def _hex(text: str) -> bytes:
    assert text.startswith("0x")
    return bytes.fromhex(text[2:])


def _sets(vector: dict[str, Any]) -> GuardianSets:
    return GuardianSets(
        tuple(
            GuardianSet(
                index=s["index"],
                addresses=tuple(_hex(a) for a in s["addresses"]),
                expiration_time=int(s["expiration_time"]),
            )
            for s in vector["guardian_sets"]
        )
    )


def test_committed_vectors_are_what_the_generator_builds() -> None:
    # Regenerate with: .venv/bin/python tests/vectors/generate.py
    assert build_payload_vectors() == PAYLOADS
    assert build_vaa_vectors() == VAAS


@pytest.mark.parametrize("vector", PAYLOADS["valid"], ids=lambda v: v["name"])
def test_valid_payload_vector(vector: dict[str, Any]) -> None:
    data = _hex(vector["bytes"])
    payload = decode_payload(data)
    assert payload_to_json(payload) == vector["fields"]
    assert payload.to_bytes() == data


@pytest.mark.parametrize("vector", PAYLOADS["invalid"], ids=lambda v: v["name"])
def test_invalid_payload_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(ERRORS_BY_REASON[vector["error"]]) as raised:
        decode_payload(_hex(vector["bytes"]))
    assert raised.value.reason == vector["error"]


def test_derivation_vectors() -> None:
    for v in PAYLOADS["derivations"]["worker_id"]:
        assert worker_id(v["worker_chain"], _hex(v["worker_key"])) == _hex(v["worker_id"])
    for v in PAYLOADS["derivations"]["task_id"]:
        derived = task_id(int(v["job_id"]), v["round"], v["worker_chain"], _hex(v["worker_key"]))
        assert derived == _hex(v["task_id"])


def test_guardian_keys_match_their_addresses() -> None:
    addresses = [GuardianSigner(_hex(k)).address for k in VAAS["guardian_private_keys"]]
    assert addresses == [_hex(a) for a in VAAS["guardian_addresses"]]


@pytest.mark.parametrize("vector", VAAS["valid"], ids=lambda v: v["name"])
def test_valid_vaa_vector(vector: dict[str, Any]) -> None:
    data = _hex(vector["vaa"])
    vaa = parse_vaa(data)
    verify_vaa(vaa, _sets(vector), now=int(vector["now"]))
    assert vaa.to_bytes() == data
    assert vaa_to_json(vaa) == vector["decoded"]
    assert [s.guardian_index for s in vaa.signatures] == vector["signers"]


@pytest.mark.parametrize("vector", VAAS["invalid"], ids=lambda v: v["name"])
def test_invalid_vaa_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(WormholeError) as raised:
        verify_vaa(parse_vaa(_hex(vector["vaa"])), _sets(vector), now=int(vector["now"]))
    assert raised.value.reason == vector["error"]


def test_every_verification_reason_has_an_invalid_vaa_vector() -> None:
    reasons = {v["error"] for v in VAAS["invalid"]}
    assert reasons == {
        "malformed_vaa",
        "unknown_guardian_set",
        "guardian_set_expired",
        "no_quorum",
        "signature_indices_not_ascending",
        "guardian_index_out_of_range",
        "high_s",
        "malformed_signature",
        "signer_mismatch",
    }
