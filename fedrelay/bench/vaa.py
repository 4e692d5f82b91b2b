"""Throughput of the relayer's cryptography: a guardian signing observations, and parsing and
verifying VAAs with 1 guardian and with 13 signatures of 19 (one core, this process)."""

from __future__ import annotations

import json
import time

from fedrelay.adapters.devnet.guardians import guardian_set, guardian_signers
from fedrelay.protocol.wormhole import GuardianSet, VaaBody, parse_vaa, sign_vaa, verify_vaa
from fedrelay.protocol.wormhole.samples import sample_task_assigned

MIN_SECONDS = 2.0


def _signed_vaas(count: int, signers: int, guardians: GuardianSet) -> list[bytes]:
    keys = guardian_signers(len(guardians.addresses))
    payload = sample_task_assigned(3).to_bytes()
    vaas = []
    for sequence in range(count):
        body = VaaBody(1_767_225_600, 0, 2, bytes(12) + b"\x11" * 20, sequence, 202, payload)
        vaas.append(sign_vaa(body, 0, [(i, keys[i]) for i in range(signers)]).to_bytes())
    return vaas


def _per_second(vaas: list[bytes], guardians: GuardianSet) -> float:
    done = 0
    started = time.perf_counter()
    while True:
        for data in vaas:  # distinct VAAs, so no digest is reused from an earlier parse
            verify_vaa(parse_vaa(data), guardians, now=1_767_225_600)
        done += len(vaas)
        elapsed = time.perf_counter() - started
        if elapsed >= MIN_SECONDS:
            return done / elapsed


def _signatures_per_second() -> float:
    """Digests one guardian signs per second (the attest stage's work per message)."""
    [signer] = guardian_signers(1)
    digests = [sequence.to_bytes(32, "big") for sequence in range(1, 201)]
    done = 0
    started = time.perf_counter()
    while True:
        for digest in digests:
            signer.sign(digest, 0)
        done += len(digests)
        elapsed = time.perf_counter() - started
        if elapsed >= MIN_SECONDS:
            return done / elapsed


def run() -> None:
    """Print {"benchmark": "vaa", ...} with VAAs parsed and verified per second."""
    one = guardian_set(1)
    nineteen = guardian_set(19)
    figures = {
        "benchmark": "vaa",
        "payload": "TASK_ASSIGNED k=3",
        "vaas_per_s_1_of_1": round(_per_second(_signed_vaas(200, 1, one), one)),
        "vaas_per_s_13_of_19": round(_per_second(_signed_vaas(200, 13, nineteen), nineteen)),
        "guardian_signatures_per_s": round(_signatures_per_second()),
        "seconds_per_case": MIN_SECONDS,
    }
    print(json.dumps(figures))
