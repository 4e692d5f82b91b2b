"""`fedrelay vaa decode` and `fedrelay vaa verify`."""

from __future__ import annotations

import json
from dataclasses import replace

from support.wormhole import (
    guardian_set,
    guardian_signers,
    sample_update_committed,
)
from typer.testing import CliRunner

from fedrelay.cli import app
from fedrelay.protocol.wormhole import VaaBody, sign_vaa

runner = CliRunner()
SIGNERS = guardian_signers(4)
GUARDIANS = ",".join("0x" + a.hex() for a in guardian_set(4).addresses)
BODY = VaaBody(1_700_000_000, 3, 1, b"\x33" * 32, 12, 32, sample_update_committed().to_bytes())
VAA = sign_vaa(BODY, 2, [(i, SIGNERS[i]) for i in range(3)])
VAA_HEX = VAA.to_bytes().hex()


def _flat(output: str) -> str:
    """The output without rich's box drawing and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_decode_prints_one_json_object_with_every_field() -> None:
    result = runner.invoke(app, ["vaa", "decode", "0x" + VAA_HEX])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["version"] == 1
    assert view["guardian_set_index"] == 2
    assert [s["index"] for s in view["signatures"]] == [0, 1, 2]
    assert view["signatures"][1]["r"] == "0x" + VAA.signatures[1].r.hex()
    assert view["signatures"][1]["s"] == "0x" + VAA.signatures[1].s.hex()
    assert view["signatures"][1]["v"] == VAA.signatures[1].v
    assert view["timestamp"] == 1_700_000_000
    assert view["nonce"] == 3
    assert view["emitter_chain"] == 1
    assert view["emitter_address"] == "0x" + "33" * 32
    assert view["sequence"] == "12"
    assert view["consistency_level"] == 32
    assert view["payload"] == "0x" + BODY.payload.hex()
    assert view["digest"] == "0x" + VAA.digest.hex()
    assert view["decoded_payload"]["type"] == "UPDATE_COMMITTED"
    assert view["decoded_payload"]["commitments"][0]["num_samples"] == 6000


def test_decode_reads_stdin_with_whitespace() -> None:
    text = VAA_HEX[:100] + "\n  " + VAA_HEX[100:] + "\n"
    result = runner.invoke(app, ["vaa", "decode", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["digest"] == "0x" + VAA.digest.hex()


def test_decode_of_a_foreign_payload_has_no_decoded_fields() -> None:
    vaa = replace(VAA, body=replace(BODY, payload=b"\x09hello"))
    result = runner.invoke(app, ["vaa", "decode", vaa.to_bytes().hex()])
    view = json.loads(result.stdout)
    assert view["decoded_payload"] is None
    assert view["payload_error"] == "unknown_payload_id"


def test_decode_rejects_bad_hex_clearly() -> None:
    result = runner.invoke(app, ["vaa", "decode", "0x01zz"])
    assert result.exit_code == 2
    assert "not hex: found 'z'" in _flat(result.output)
    result = runner.invoke(app, ["vaa", "decode", "abc"])
    assert result.exit_code == 2
    assert "odd number of hex digits" in _flat(result.output)


def test_decode_rejects_malformed_vaa_with_the_reason() -> None:
    result = runner.invoke(app, ["vaa", "decode", VAA_HEX[:50]])
    assert result.exit_code == 1
    assert "malformed_vaa" in result.output


def test_verify_exits_0_when_valid() -> None:
    result = runner.invoke(
        app, ["vaa", "verify", VAA_HEX, "--guardians", GUARDIANS, "--index", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "valid: 3 of 4 guardians" in result.stdout


def test_verify_exits_1_with_the_reason() -> None:
    result = runner.invoke(app, ["vaa", "verify", VAA_HEX, "--guardians", GUARDIANS])
    assert result.exit_code == 1
    assert "unknown_guardian_set" in result.output
    two = sign_vaa(BODY, 0, [(i, SIGNERS[i]) for i in range(2)]).to_bytes().hex()
    result = runner.invoke(app, ["vaa", "verify", two, "--guardians", GUARDIANS])
    assert result.exit_code == 1
    assert "no_quorum" in result.output
    others = ",".join("0x" + a.hex() for a in guardian_set(5).addresses[1:])
    result = runner.invoke(app, ["vaa", "verify", VAA_HEX, "--guardians", others, "--index", "2"])
    assert result.exit_code == 1
    assert "signer_mismatch" in result.output


def test_verify_rejects_bad_guardian_addresses() -> None:
    result = runner.invoke(app, ["vaa", "verify", VAA_HEX, "--guardians", "0x1234"])
    assert result.exit_code == 2
    assert "must be 20 bytes" in _flat(result.output)
