"""The devnet's guardian keys: fixed, public keys for local networks, tests and benchmarks.

These keys are public. Guardian 0 is Wormhole's own devnet guardian key, so VAAs signed by it
also verify on a Wormhole devnet with its default single-guardian set. Never use them on a network
that carries value.
"""

from __future__ import annotations

from fedrelay.protocol.hashing import keccak256
from fedrelay.protocol.wormhole.governance import governance_vaa
from fedrelay.protocol.wormhole.guardians import GuardianSet, GuardianSigner
from fedrelay.protocol.wormhole.threshold import AppendKey, DealtKey, deal, group_secret_from_seed
from fedrelay.protocol.wormhole.vaa import Vaa

WORMHOLE_DEVNET_GUARDIAN_KEY = bytes.fromhex(
    "cfb12303a19cde580bb4dd771639b0d26bc68353645571a8cff516ab2ee113a0"
)


def guardian_key(index: int) -> bytes:
    """Return test guardian ``index``'s private key (0 is Wormhole's devnet guardian key)."""
    if index == 0:
        return WORMHOLE_DEVNET_GUARDIAN_KEY
    return keccak256(b"fedrelay test guardian " + str(index).encode())


def guardian_signers(count: int) -> list[GuardianSigner]:
    """Return signers for test guardians 0..count-1."""
    return [GuardianSigner(guardian_key(i)) for i in range(count)]


def guardian_set(count: int, index: int = 0, expiration_time: int = 0) -> GuardianSet:
    """Return the guardian set of test guardians 0..count-1."""
    addresses = tuple(s.address for s in guardian_signers(count))
    return GuardianSet(index=index, addresses=addresses, expiration_time=expiration_time)


def threshold_key(count: int, guardian_set_index: int = 0) -> DealtKey:
    """Return the devnet threshold key of test guardians 0..count-1 (guardian set
    ``guardian_set_index``), dealt with threshold floor(2n/3)+1 from a fixed, public seed.

    Signing with it uses deterministic nonces (``threshold.sign_digest``), which is unsafe with
    untrusted co-signers: devnet, tests and benchmarks only.
    """
    seed = f"fedrelay test threshold key {count}/{guardian_set_index}".encode()
    return deal(group_secret_from_seed(seed), count, seed=seed)


def append_key_vaa(
    count: int,
    tss_index: int = 0,
    guardian_set_index: int = 0,
    *,
    chain: int = 0,
    expiry_delay: int = 86_400,
    timestamp: int = 0,
) -> Vaa:
    """The governance VAA that appends :func:`threshold_key` ``(count, guardian_set_index)`` as
    key ``tss_index``, for ``chain`` (0: every chain), signed by a quorum of the devnet guardians
    0..count-1 as guardian set ``guardian_set_index`` (docs/protocol.md, section 2a)."""
    key = threshold_key(count, guardian_set_index).group_key
    action = AppendKey(chain, tss_index, key, expiry_delay)
    signers = guardian_signers(count)
    return governance_vaa(action, signers, guardian_set_index, tss_index, timestamp=timestamp)
