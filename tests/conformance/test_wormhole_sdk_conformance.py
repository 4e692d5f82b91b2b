"""Conformance with Wormhole's TypeScript SDK (@wormhole-foundation/sdk-definitions), both ways.

Python -> SDK: VAAs made here deserialize in the SDK with equal fields and re-serialize to the
same bytes. SDK -> Python: VAAs built and signed there (mocks.MockGuardians) parse and verify
here. Each direction is one Node process over a batch of VAAs (see wormhole_sdk.mjs).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

from support.wormhole import (
    guardian_key,
    guardian_set,
    guardian_signers,
    sample_round_settled,
    sample_task_assigned,
    sample_update_committed,
    sample_worker_registered,
)

from fedrelay.adapters.devnet import toolchain
from fedrelay.protocol.wormhole import Vaa, VaaBody, parse_vaa, sign_vaa, verify_vaa

BRIDGE = Path(__file__).resolve().parent / "wormhole_sdk.mjs"
COUNT = 250
NOW = 1_767_225_600
# Chain ids the SDK knows (it refuses to deserialize an emitter chain it has never heard of).
KNOWN_CHAINS = [1, 2, 4, 5, 6, 8, 13, 14, 16, 21, 22, 23, 24, 30, 10002, 65000]
SIGNERS = guardian_signers(19)


def _node(mode: str, request: object, tmp_path: Path) -> Any:
    node = shutil.which("node")
    assert node is not None, "node (Node.js 20) must be on PATH for the conformance tests"
    source, result = tmp_path / f"{mode}-in.json", tmp_path / f"{mode}-out.json"
    source.write_text(json.dumps(request))
    env = os.environ | {"WORMHOLE_NODE_MODULES": str(toolchain.node_modules())}
    done = subprocess.run(
        [node, str(BRIDGE), mode, str(source), str(result)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"node {mode} failed:\n{done.stderr}"
    return json.loads(result.read_text())


def _payload(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return sample_worker_registered().to_bytes()
    if choice == 1:
        return sample_task_assigned(rng.randint(1, 32)).to_bytes()
    if choice == 2:
        return sample_update_committed().to_bytes()
    if choice == 3:
        return sample_round_settled(rng.randint(1, 32)).to_bytes()
    return rng.randbytes(rng.choice([0, 1, 33, 200, 1000]))


def _body(rng: random.Random) -> VaaBody:
    return VaaBody(
        timestamp=rng.getrandbits(32),
        nonce=rng.getrandbits(32),
        emitter_chain=rng.choice(KNOWN_CHAINS),
        emitter_address=rng.randbytes(32),
        sequence=rng.choice([0, 1, 2**53 + 1, 2**64 - 1, rng.getrandbits(64)]),
        consistency_level=rng.choice([1, 32, 200, 201, 202, rng.getrandbits(8)]),
        payload=_payload(rng),
    )


def _python_vaas(rng: random.Random) -> list[Vaa]:
    vaas = []
    for _ in range(COUNT):
        chosen = sorted(rng.sample(range(19), rng.randint(0, 19)))
        signers = [(i, SIGNERS[i]) for i in chosen]
        vaas.append(sign_vaa(_body(rng), rng.getrandbits(32), signers))
    return vaas


def test_vaas_made_in_python_read_the_same_in_the_sdk(tmp_path: Path) -> None:
    vaas = _python_vaas(random.Random(20260101))
    read = _node("read", {"vaas": ["0x" + v.to_bytes().hex() for v in vaas]}, tmp_path)
    assert len(read) == COUNT
    for vaa, sdk in zip(vaas, read, strict=True):
        body = vaa.body
        assert sdk["reserialized"] == "0x" + vaa.to_bytes().hex()
        assert sdk["guardian_set_index"] == vaa.guardian_set_index
        assert sdk["signatures"] == [
            {"index": s.guardian_index, "r": "0x" + s.r.hex(), "s": "0x" + s.s.hex(), "v": s.v}
            for s in vaa.signatures
        ]
        assert (sdk["timestamp"], sdk["nonce"]) == (body.timestamp, body.nonce)
        assert sdk["emitter_chain"] == body.emitter_chain
        assert sdk["emitter_address"] == "0x" + body.emitter_address.hex()
        assert sdk["sequence"] == str(body.sequence)
        assert sdk["consistency_level"] == body.consistency_level
        assert sdk["payload"] == "0x" + body.payload.hex()
        assert sdk["digest"] == "0x" + vaa.digest.hex()


def test_vaas_signed_by_the_sdk_verify_in_python(tmp_path: Path) -> None:
    rng = random.Random(7)
    # Sets of 1 (Wormhole's devnet guardian), 4 and 19 guardians, under different indices.
    sets = [guardian_set(1, index=0), guardian_set(4, index=3), guardian_set(19, index=7)]
    messages = []
    for _ in range(COUNT):
        which = rng.randrange(len(sets))
        size = len(sets[which].addresses)
        messages.append((_body(rng), which, rng.randint(sets[which].quorum, size)))
    request = {
        "guardian_sets": [
            {"index": s.index, "keys": [guardian_key(i).hex() for i in range(len(s.addresses))]}
            for s in sets
        ],
        "messages": [
            {
                "timestamp": b.timestamp,
                "nonce": b.nonce,
                "emitter_chain": b.emitter_chain,
                "emitter_address": "0x" + b.emitter_address.hex(),
                "sequence": str(b.sequence),
                "consistency_level": b.consistency_level,
                "payload": "0x" + b.payload.hex(),
                "guardian_set": which,
                "signers": count,
            }
            for b, which, count in messages
        ],
    }
    signed = _node("sign", request, tmp_path)
    assert len(signed) == COUNT
    for text, (body, which, count) in zip(signed, messages, strict=True):
        guardians = sets[which]
        vaa = parse_vaa(bytes.fromhex(text.removeprefix("0x")))
        verify_vaa(vaa, guardians, now=NOW)
        assert vaa.body == body
        assert vaa.guardian_set_index == guardians.index
        assert [s.guardian_index for s in vaa.signatures] == list(range(count))
        # Both sides sign with RFC 6979 nonces and low s, so the signatures are identical.
        expected = sign_vaa(body, guardians.index, [(i, SIGNERS[i]) for i in range(count)])
        assert vaa == expected
