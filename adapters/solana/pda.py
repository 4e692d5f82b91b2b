"""Program-derived addresses of the worker program's accounts (seeds as in worker.h)."""

from __future__ import annotations

import struct

from solders.pubkey import Pubkey


def _find(program_id: Pubkey, *seeds: bytes) -> Pubkey:
    address, _bump = Pubkey.find_program_address(list(seeds), program_id)
    return address


def config_address(program_id: Pubkey) -> Pubkey:
    """The singleton config account: ["config"]."""
    return _find(program_id, b"config")


def vault_address(program_id: Pubkey) -> Pubkey:
    """The vault holding every worker's stake: ["vault"]."""
    return _find(program_id, b"vault")


def guardian_set_address(program_id: Pubkey, index: int) -> Pubkey:
    """Guardian set `index`: ["guardian_set", index u32 BE]."""
    return _find(program_id, b"guardian_set", struct.pack(">I", index))


def threshold_key_address(program_id: Pubkey, index: int) -> Pubkey:
    """Threshold key `index` (version-2 VAAs): ["threshold_key", index u32 BE]."""
    return _find(program_id, b"threshold_key", struct.pack(">I", index))


def worker_address(program_id: Pubkey, worker: Pubkey) -> Pubkey:
    """A worker's stake record: ["worker", worker key]."""
    return _find(program_id, b"worker", bytes(worker))


def task_address(program_id: Pubkey, job_id: int, round_number: int, worker_key: bytes) -> Pubkey:
    """A task: ["task", job_id u64 BE, round u32 BE, worker key]."""
    return _find(
        program_id, b"task", struct.pack(">Q", job_id), struct.pack(">I", round_number), worker_key
    )


def consumed_address(program_id: Pubkey, digest: bytes) -> Pubkey:
    """The replay-protection record of a VAA digest: ["consumed", digest]."""
    return _find(program_id, b"consumed", digest)


def message_address(program_id: Pubkey, sequence: int) -> Pubkey:
    """The account of published message `sequence`: ["message", sequence u64 BE]."""
    return _find(program_id, b"message", struct.pack(">Q", sequence))


def buffer_address(program_id: Pubkey, authority: Pubkey, buffer_id: int) -> Pubkey:
    """A VAA buffer: ["buffer", authority, id u64 BE]."""
    return _find(program_id, b"buffer", bytes(authority), struct.pack(">Q", buffer_id))
