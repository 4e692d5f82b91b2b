"""Governance messages of Wormhole's core contract: guardian set upgrades and fee changes.

Wormhole's own core has no owner: its guardian set and its publication fee change only when a
governance VAA is submitted to it. Such a VAA is signed by a quorum of the **current** guardian
set, emitted by the governance emitter (Wormhole's: chain 1, address 4) and applied at most once
(its digest is recorded). Its payload, big-endian, fixed width::

    module 32 bytes ("Core", left-padded with zeros) | action u8 | chain u16 | the action's fields

- action 2, guardian set upgrade: ``chain`` is the target chain or 0 for every chain, then
  ``new_index u32`` (the current index + 1), ``count u8`` (at least 1) and ``count`` 20-byte
  guardian addresses. The replaced set stays valid for 24 hours.
- action 3, set message fee: ``chain`` is the target chain, then ``fee u256`` (wei).

fedrelay's MessageCore takes neither: its owner rotates guardians and sets the fee directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fedrelay.protocol.wormhole.errors import WormholeError
from fedrelay.protocol.wormhole.guardians import GuardianSigner, quorum, sign_vaa
from fedrelay.protocol.wormhole.vaa import Vaa, VaaBody

#: The core's governance module: "Core" left-padded to 32 bytes.
CORE_MODULE = b"Core".rjust(32, b"\x00")
#: Action codes of the core module.
GUARDIAN_SET_UPGRADE = 2
SET_MESSAGE_FEE = 3
#: Wormhole's governance emitter (chain 1, address 4), which its deployments trust.
GOVERNANCE_CHAIN = 1
GOVERNANCE_EMITTER = (4).to_bytes(32, "big")
#: Consistency level governance VAAs carry (Solana's "finalized").
GOVERNANCE_CONSISTENCY = 32

_HEADER = 35  # module 32 + action 1 + chain 2


class GovernanceError(WormholeError):
    """A core governance payload cannot be encoded or decoded."""

    reason = "invalid_governance"


@dataclass(frozen=True)
class GuardianSetUpgrade:
    """Action 2: make ``keys`` guardian set ``new_index`` on ``chain`` (0: every chain)."""

    chain: int
    new_index: int
    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_chain(self.chain)
        if not 0 <= self.new_index <= 0xFFFF_FFFF:
            raise GovernanceError(f"new_index must fit a u32, got {self.new_index}")
        if not 1 <= len(self.keys) <= 255:
            raise GovernanceError(f"a guardian set holds 1..255 keys, got {len(self.keys)}")
        for key in self.keys:
            if not isinstance(key, bytes) or len(key) != 20:
                raise GovernanceError(f"a guardian key is a 20-byte address, got {key!r}")

    def to_bytes(self) -> bytes:
        """The payload's wire form."""
        head = _header(GUARDIAN_SET_UPGRADE, self.chain) + self.new_index.to_bytes(4, "big")
        return head + bytes([len(self.keys)]) + b"".join(self.keys)


@dataclass(frozen=True)
class SetMessageFee:
    """Action 3: set the publication fee of the core on ``chain`` to ``fee`` wei."""

    chain: int
    fee: int

    def __post_init__(self) -> None:
        _check_chain(self.chain)
        if not 0 <= self.fee < 2**256:
            raise GovernanceError(f"fee must fit a u256, got {self.fee}")

    def to_bytes(self) -> bytes:
        """The payload's wire form."""
        return _header(SET_MESSAGE_FEE, self.chain) + self.fee.to_bytes(32, "big")


GovernanceAction = GuardianSetUpgrade | SetMessageFee


class GovernancePayload(Protocol):
    """Anything signed as a governance VAA: a core action, or another module's (the threshold
    keys' append-key action, ``fedrelay.protocol.wormhole.threshold.AppendKey``)."""

    def to_bytes(self) -> bytes: ...


def decode_governance(payload: bytes) -> GovernanceAction:
    """Decode a core governance payload (actions 2 and 3).

    Raises:
        GovernanceError: Another module or action, or a length the action does not have.
    """
    if len(payload) < _HEADER:
        raise GovernanceError(
            f"a governance payload has at least {_HEADER} bytes, got {len(payload)}"
        )
    if payload[:32] != CORE_MODULE:
        raise GovernanceError(f"module is not Core: 0x{payload[:32].hex()}")
    action = payload[32]
    chain = int.from_bytes(payload[33:35], "big")
    if action == SET_MESSAGE_FEE:
        if len(payload) != _HEADER + 32:
            raise GovernanceError(f"a set message fee payload is 67 bytes, got {len(payload)}")
        return SetMessageFee(chain, int.from_bytes(payload[_HEADER:], "big"))
    if action == GUARDIAN_SET_UPGRADE:
        if len(payload) < _HEADER + 5:
            raise GovernanceError(f"a guardian set upgrade is truncated: {len(payload)} bytes")
        count = payload[_HEADER + 4]
        expected = _HEADER + 5 + 20 * count
        if len(payload) != expected:
            raise GovernanceError(
                f"a guardian set upgrade of {count} keys is {expected} bytes, got {len(payload)}"
            )
        new_index = int.from_bytes(payload[_HEADER : _HEADER + 4], "big")
        keys = tuple(payload[_HEADER + 5 + 20 * i : _HEADER + 25 + 20 * i] for i in range(count))
        return GuardianSetUpgrade(chain, new_index, keys)
    raise GovernanceError(f"unknown core governance action {action} (2 and 3 are known)")


def governance_vaa(
    action: GovernancePayload,
    guardians: Sequence[GuardianSigner],
    guardian_set_index: int,
    sequence: int,
    *,
    timestamp: int = 0,
    emitter_chain: int = GOVERNANCE_CHAIN,
    emitter_address: bytes = GOVERNANCE_EMITTER,
) -> Vaa:
    """Sign ``action`` as a governance VAA with a quorum of the current guardian set.

    Args:
        action: The payload.
        guardians: The signers of the current set, in guardian index order (the first
            floor(2n/3)+1 sign).
        guardian_set_index: The current set's index (the core refuses any other).
        sequence: The governance emitter's sequence; a distinct one makes a distinct VAA (the
            core applies each digest once).
        timestamp: The body's timestamp.
        emitter_chain: The governance chain the core trusts.
        emitter_address: The governance emitter the core trusts.
    """
    body = VaaBody(
        timestamp=timestamp,
        nonce=0,
        emitter_chain=emitter_chain,
        emitter_address=emitter_address,
        sequence=sequence,
        consistency_level=GOVERNANCE_CONSISTENCY,
        payload=action.to_bytes(),
    )
    signers = list(enumerate(guardians))[: quorum(len(guardians))]
    return sign_vaa(body, guardian_set_index, signers)


def _header(action: int, chain: int) -> bytes:
    return CORE_MODULE + bytes([action]) + chain.to_bytes(2, "big")


def _check_chain(chain: int) -> None:
    if not 0 <= chain <= 0xFFFF:
        raise GovernanceError(f"chain must fit a u16, got {chain}")
