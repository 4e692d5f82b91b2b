"""JSON views of VAAs and payloads, shared by the CLI and the test vectors.

Conventions: byte strings are lowercase ``0x`` hex; integers up to u32 are JSON numbers; u64
integers (sequence, job_id, deadline, stake, slash, min_stake, stake_lock, release_at, nonce) are
decimal strings, so readers whose numbers
are IEEE doubles (JavaScript, jq) keep every digit.
"""

from __future__ import annotations

from typing import Any

from fedrelay.protocol.wormhole.errors import PayloadError
from fedrelay.protocol.wormhole.payloads import (
    PROTOCOL_VERSION,
    Payload,
    RoundSettled,
    StakeChanged,
    TaskAssigned,
    UpdateCommitted,
    WorkerRegistered,
    decode_payload,
)
from fedrelay.protocol.wormhole.vaa import Vaa, VaaBody


def hex0x(data: bytes) -> str:
    """Return ``data`` as lowercase hex with a ``0x`` prefix."""
    return "0x" + data.hex()


def payload_to_json(payload: Payload) -> dict[str, Any]:
    """Return the decoded fields of a fedrelay payload, header first."""
    fields: dict[str, Any] = {
        "payload_id": int(payload.PAYLOAD_ID),
        "type": payload.PAYLOAD_ID.name,
        "version": PROTOCOL_VERSION,
        "target_chain": payload.target_chain,
        "target_address": hex0x(payload.target_address),
        "job_id": str(payload.job_id),
    }
    if isinstance(payload, WorkerRegistered):
        fields |= {
            "worker_key": hex0x(payload.worker_key),
            "stake": str(payload.stake),
            "payout_address": hex0x(payload.payout_address),
            "capabilities": payload.capabilities,
        }
    elif isinstance(payload, TaskAssigned):
        fields |= {
            "round": payload.round,
            "deadline": str(payload.deadline),
            "model_hash": hex0x(payload.model_hash),
            "config_hash": hex0x(payload.config_hash),
            "min_stake": str(payload.min_stake),
            "stake_lock": str(payload.stake_lock),
            "release_at": str(payload.release_at),
            "tasks": [{"worker_key": hex0x(t.worker_key), "shard": t.shard} for t in payload.tasks],
        }
    elif isinstance(payload, UpdateCommitted):
        fields |= {
            "round": payload.round,
            "commitments": [
                {
                    "worker_key": hex0x(c.worker_key),
                    "update_hash": hex0x(c.update_hash),
                    "transcript_root": hex0x(c.transcript_root),
                    "data_root": hex0x(c.data_root),
                    "num_samples": c.num_samples,
                    "train_loss": c.train_loss,
                }
                for c in payload.commitments
            ],
        }
    elif isinstance(payload, RoundSettled):
        fields |= {
            "round": payload.round,
            "model_hash": hex0x(payload.model_hash),
            "slash_mode": int(payload.slash_mode),
            "slash_recipient": hex0x(payload.slash_recipient),
            "settlements": [
                {
                    "worker_key": hex0x(s.worker_key),
                    "outcome": int(s.outcome),
                    "slash": str(s.slash),
                }
                for s in payload.settlements
            ],
        }
    elif isinstance(payload, StakeChanged):
        fields |= {
            "worker_key": hex0x(payload.worker_key),
            "stake": str(payload.stake),
            "nonce": str(payload.nonce),
            "reason": int(payload.reason),
            "task_id": hex0x(payload.task_id),
        }
    return fields


def body_to_json(body: VaaBody) -> dict[str, Any]:
    """Return the body fields of a VAA (the payload as hex, undecoded)."""
    return {
        "timestamp": body.timestamp,
        "nonce": body.nonce,
        "emitter_chain": body.emitter_chain,
        "emitter_address": hex0x(body.emitter_address),
        "sequence": str(body.sequence),
        "consistency_level": body.consistency_level,
        "payload": hex0x(body.payload),
    }


def vaa_to_json(vaa: Vaa) -> dict[str, Any]:
    """Return every field of a VAA, its digest, and its decoded payload when it is one of ours.

    ``decoded_payload`` is the payload's fields, or null when the payload is not a valid
    fedrelay payload (``payload_error`` then says why).
    """
    view: dict[str, Any] = {
        "version": vaa.version,
        "guardian_set_index": vaa.guardian_set_index,
        "signatures": [
            {"index": s.guardian_index, "r": hex0x(s.r), "s": hex0x(s.s), "v": s.v}
            for s in vaa.signatures
        ],
        **body_to_json(vaa.body),
        "digest": hex0x(vaa.digest),
    }
    try:
        view["decoded_payload"] = payload_to_json(decode_payload(vaa.body.payload))
    except PayloadError as exc:
        view["decoded_payload"] = None
        view["payload_error"] = exc.reason
    return view
