"""Administer a devnet core whichever kind it is: rotate its guardian set, set its message fee.

fedrelay's MessageCore takes both from its owner; Wormhole's core takes governance VAAs signed by
its current guardian set (:mod:`fedrelay.protocol.wormhole.governance`). These helpers pick the
path by the deployed core's kind, so a devnet or a test can point at either.
"""

from __future__ import annotations

from collections.abc import Sequence

from web3.types import TxReceipt

from fedrelay.adapters.evm.chain import EvmChain, Signer
from fedrelay.adapters.evm.core import MessageCoreContract, WormholeCoreContract, open_core
from fedrelay.protocol.wormhole.governance import (
    GovernanceAction,
    GuardianSetUpgrade,
    SetMessageFee,
    governance_vaa,
)
from fedrelay.protocol.wormhole.guardians import GuardianSigner, parse_address


def rotate_guardian_set(
    chain: EvmChain,
    core_address: str,
    signer: Signer,
    current: Sequence[GuardianSigner],
    new_keys: Sequence[str],
) -> TxReceipt:
    """Make `new_keys` the core's next guardian set.

    Args:
        chain: The core's chain.
        core_address: The core.
        signer: MessageCore: its owner. Wormhole core: any funded account (it only submits).
        current: The current guardian set's signers in index order (signs the governance VAA;
            unused for a MessageCore).
        new_keys: The new set's guardian addresses, in index order.
    """
    core = open_core(chain, core_address)
    if isinstance(core, MessageCoreContract):
        return core.submit_new_guardian_set(signer, new_keys)
    upgrade = GuardianSetUpgrade(
        chain=core.wormhole_chain_id(),
        new_index=core.current_guardian_set_index() + 1,
        keys=tuple(parse_address(k) for k in new_keys),
    )
    return core.submit_guardian_set_upgrade(signer, _signed(chain, core, upgrade, current))


def set_message_fee(
    chain: EvmChain,
    core_address: str,
    signer: Signer,
    current: Sequence[GuardianSigner],
    fee: int,
) -> TxReceipt:
    """Set the core's publication fee to `fee` wei (arguments as :func:`rotate_guardian_set`)."""
    core = open_core(chain, core_address)
    if isinstance(core, MessageCoreContract):
        return core.set_message_fee(signer, fee)
    action = SetMessageFee(chain=core.wormhole_chain_id(), fee=fee)
    return core.submit_set_message_fee(signer, _signed(chain, core, action, current))


def _signed(
    chain: EvmChain,
    core: WormholeCoreContract,
    action: GovernanceAction,
    current: Sequence[GuardianSigner],
) -> bytes:
    """The governance VAA for `action`, from the core's own governance emitter, signed by the
    current set; its sequence is the latest block number, so each action gets its own digest."""
    emitter_chain, emitter = core.governance_emitter()
    vaa = governance_vaa(
        action,
        current,
        core.current_guardian_set_index(),
        sequence=int(chain.w3.eth.block_number),
        emitter_chain=emitter_chain,
        emitter_address=emitter,
    )
    return vaa.to_bytes()
