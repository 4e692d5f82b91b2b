"""The worker program deployed on a local LiteSVM devnet, with test guardians to sign its VAAs.

:func:`deploy` puts the program's ELF on the devnet and initializes it with the devnet's public
test guardian keys (:mod:`fedrelay.adapters.devnet.guardians`); :class:`Deployment` then signs
VAAs from the coordinator chain for it. ``fedrelay bench solana`` measures compute units on such
a deployment, and the Solana integration tests use it through
:mod:`fedrelay.adapters.solana.testing`. Nothing here is for a real network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from fedrelay.adapters.devnet.guardians import guardian_signers
from fedrelay.adapters.devnet.solana_rpc import SolanaDevnet
from fedrelay.adapters.solana import instructions as ix
from fedrelay.adapters.solana.client import WorkerProgramClient
from fedrelay.adapters.solana.layout import SOLANA_CHAIN
from fedrelay.protocol.wormhole import (
    GuardianSigner,
    Task,
    TaskAssigned,
    Vaa,
    VaaBody,
    keccak256,
    sign_vaa,
)
from fedrelay.protocol.wormhole.payloads import Payload
from fedrelay.protocol.wormhole.samples import evm_address, filler

#: The coordinator chain's Wormhole id and the emitter the program trusts in tests.
COORDINATOR_CHAIN = 2
COORDINATOR_EMITTER = evm_address("coordinator")
LAMPORTS_PER_SOL = 1_000_000_000


@dataclass
class Deployment:
    """One deployed and initialized worker program with its admin and guardians."""

    devnet: SolanaDevnet
    client: WorkerProgramClient
    admin: Keypair
    guardians: list[GuardianSigner]
    guardian_set_index: int = 0
    next_emitter_sequence: int = 0

    @property
    def program_id(self) -> Pubkey:
        """Where the program is deployed."""
        return self.client.program_id

    async def funded_keypair(self, sol: int = 100, seed: str | None = None) -> Keypair:
        """A new keypair holding `sol` SOL; derived from `seed` when one is given."""
        keypair = Keypair.from_seed(keccak256(seed.encode())) if seed else Keypair()
        await self.client.airdrop(keypair.pubkey(), sol * LAMPORTS_PER_SOL)
        return keypair

    def sign(
        self,
        payload: Payload | bytes,
        *,
        signers: Sequence[int] | None = None,
        emitter_chain: int = COORDINATOR_CHAIN,
        emitter: bytes = COORDINATOR_EMITTER,
        guardian_set_index: int | None = None,
        guardians: Sequence[GuardianSigner] | None = None,
    ) -> Vaa:
        """Sign a VAA carrying `payload` from the coordinator (each call a new sequence).

        Args:
            payload: A payload object or raw payload bytes.
            signers: Guardian indices that sign; by default a quorum of the first guardians.
            emitter_chain: The body's emitter chain.
            emitter: The body's emitter address.
            guardian_set_index: The set index written in the VAA; the current one by default.
            guardians: The signer keys; the deployment's current guardians by default.
        """
        keys = list(guardians if guardians is not None else self.guardians)
        if signers is None:
            signers = range(len(keys) * 2 // 3 + 1)
        raw = payload if isinstance(payload, bytes) else payload.to_bytes()
        body = VaaBody(
            timestamp=self.devnet.chain.unix_time(),
            nonce=0,
            emitter_chain=emitter_chain,
            emitter_address=emitter,
            sequence=self.next_emitter_sequence,
            consistency_level=1,
            payload=raw,
        )
        self.next_emitter_sequence += 1
        index = self.guardian_set_index if guardian_set_index is None else guardian_set_index
        return sign_vaa(body, index, [(i, keys[i]) for i in signers])


async def deploy(
    devnet: SolanaDevnet,
    client: WorkerProgramClient,
    elf: bytes,
    *,
    guardian_count: int = 1,
    unbonding_delay: int = 3600,
    guardian_set_ttl: int = 86400,
    min_stake: int = LAMPORTS_PER_SOL,
    peer_emitter: bytes = COORDINATOR_EMITTER,
) -> Deployment:
    """Deploy `elf` at `client.program_id` and initialize it with test guardians, trusting
    `peer_emitter` on the coordinator chain."""
    devnet.add_program(client.program_id, elf)
    admin = Keypair()
    await client.airdrop(admin.pubkey(), 1000 * LAMPORTS_PER_SOL)
    guardians = guardian_signers(guardian_count)
    args = ix.InitializeArgs(
        peer_chain=COORDINATOR_CHAIN,
        peer_emitter=peer_emitter,
        guardian_set_index=0,
        guardian_addresses=tuple(g.address for g in guardians),
        unbonding_delay=unbonding_delay,
        guardian_set_ttl=guardian_set_ttl,
        min_stake=min_stake,
        consistency_level=1,
    )
    await client.initialize(admin, args)
    return Deployment(devnet, client, admin, guardians)


def task_assigned(
    program_id: Pubkey,
    worker_keys: Sequence[bytes],
    *,
    job_id: int = 7,
    round_number: int = 1,
    deadline: int,
    min_stake: int = 0,
    stake_lock: int = 0,
    release_after: int = 86_400,
) -> TaskAssigned:
    """A TASK_ASSIGNED for the program, shard i for worker i.

    By default the tasks need and lock no stake, and their workers may release them a day after
    the deadline.
    """
    return TaskAssigned(
        target_chain=SOLANA_CHAIN,
        target_address=bytes(program_id),
        job_id=job_id,
        round=round_number,
        deadline=deadline,
        model_hash=filler(f"model {job_id}/{round_number}"),
        config_hash=filler("config"),
        min_stake=min_stake,
        stake_lock=stake_lock,
        release_at=deadline + release_after,
        tasks=tuple(Task(key, shard=i) for i, key in enumerate(worker_keys)),
    )
