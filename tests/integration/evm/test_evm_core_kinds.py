"""Both kinds of core on anvil: fedrelay's MessageCore (owner calls) and a core that behaves like
Wormhole's (governance VAAs; `contracts/test/utils/RequireStyleCore.sol`). The binding is chosen
by probing the deployed core, and the devnet admin helpers take each core's own path."""

from __future__ import annotations

import pytest

from fedrelay.adapters.devnet.core_admin import rotate_guardian_set, set_message_fee
from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.guardians import guardian_signers
from fedrelay.adapters.devnet.services import Anvil
from fedrelay.adapters.evm import ContractRevert, EvmChain, Signer
from fedrelay.adapters.evm.core import (
    CoreKind,
    MessageCoreContract,
    WormholeCoreContract,
    core_kind,
    open_core,
)
from fedrelay.adapters.evm.deploy import deploy_contract, deploy_message_core
from fedrelay.protocol.wormhole.governance import (
    GOVERNANCE_CHAIN,
    GOVERNANCE_EMITTER,
    SetMessageFee,
    governance_vaa,
)
from fedrelay.protocol.wormhole.guardians import GuardianSigner

pytestmark = pytest.mark.integration

WORKERS = 4


def _hex(signer: GuardianSigner) -> str:
    return "0x" + signer.address.hex()


def _checksummed(chain: EvmChain, keys: list[str]) -> list[str]:
    return [chain.w3.to_checksum_address(k) for k in keys]


@pytest.mark.parametrize("kind", [CoreKind.MESSAGE_CORE, CoreKind.WORMHOLE])
def test_admin_helpers_take_each_cores_own_path(
    forge_project: Forge, worker_chain: Anvil, kind: CoreKind
) -> None:
    chain = EvmChain(worker_chain.rpc_url)
    owner = Signer(worker_chain.private_keys[0])
    first = guardian_signers(4)
    keys = [_hex(s) for s in first]
    if kind is CoreKind.MESSAGE_CORE:
        address = deploy_message_core(chain, owner, WORKERS, keys).address
    else:
        address = deploy_contract(
            chain, owner, "RequireStyleCore", WORKERS, _checksummed(chain, keys), GOVERNANCE_CHAIN,
            GOVERNANCE_EMITTER,
        )  # fmt: skip
    assert core_kind(chain, address) is kind
    core = open_core(chain, address)
    expected = MessageCoreContract if kind is CoreKind.MESSAGE_CORE else WormholeCoreContract
    assert isinstance(core, expected)

    set_message_fee(chain, address, owner, first, 5)
    assert core.message_fee() == 5
    second = [GuardianSigner(bytes([i + 1]) * 32) for i in range(5)]
    rotate_guardian_set(chain, address, owner, first, [_hex(s) for s in second])
    assert core.current_guardian_set_index() == 1
    assert [k.lower() for k in core.guardian_set(1).keys] == [_hex(s) for s in second]
    assert core.guardian_set(0).expiration_time > 0, "the replaced set expires"
    set_message_fee(chain, address, owner, second, 7)  # the new set governs now
    assert core.message_fee() == 7


def test_wormhole_core_refuses_governance_signed_by_a_replaced_set(
    forge_project: Forge, worker_chain: Anvil
) -> None:
    chain = EvmChain(worker_chain.rpc_url)
    owner = Signer(worker_chain.private_keys[0])
    first = guardian_signers(4)
    address = deploy_contract(
        chain, owner, "RequireStyleCore", WORKERS, _checksummed(chain, [_hex(s) for s in first]),
        GOVERNANCE_CHAIN,
        GOVERNANCE_EMITTER,
    )  # fmt: skip
    core = WormholeCoreContract(chain, address)
    rotate_guardian_set(chain, address, owner, first, [_hex(s) for s in guardian_signers(5)])
    stale = governance_vaa(SetMessageFee(WORKERS, 9), first, 0, sequence=1).to_bytes()
    with pytest.raises(ContractRevert) as refused:
        core.submit_set_message_fee(owner, stale)
    assert refused.value.name == "Error"
    assert refused.value.arguments == ("not signed by current guardian set",)
