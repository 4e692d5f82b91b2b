"""forge (on solcjs) compiles and tests a contract; web3.py deploys it to anvil."""

from __future__ import annotations

from pathlib import Path

import pytest
from web3 import Web3

from fedrelay.adapters.devnet.forge import Forge
from fedrelay.adapters.devnet.services import Anvil

pytestmark = pytest.mark.smoke

COUNTER = """// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

contract Counter {
    uint256 public count;
    event Incremented(uint256 count);

    function add(uint256 by) external {
        count += by;
        emit Incremented(count);
    }
}
"""

COUNTER_TEST = """// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Counter} from "../src/Counter.sol";

contract CounterTest {
    function test_add_accumulates() public {
        Counter c = new Counter();
        c.add(2);
        c.add(3);
        require(c.count() == 5, "count should be 5");
    }
}
"""


@pytest.fixture(scope="module")
def counter_project(tmp_path_factory: pytest.TempPathFactory) -> Forge:
    root = tmp_path_factory.mktemp("forge-smoke")
    (root / "src").mkdir()
    (root / "test").mkdir()
    (root / "foundry.toml").write_text('[profile.default]\nsrc = "src"\ntest = "test"\n')
    (root / "src" / "Counter.sol").write_text(COUNTER)
    (root / "test" / "Counter.t.sol").write_text(COUNTER_TEST)
    forge = Forge(root)
    forge.build()
    return forge


def test_forge_test_passes_on_solcjs(counter_project: Forge) -> None:
    result = counter_project.test()
    assert "[PASS] test_add_accumulates()" in result.stdout
    assert "1 passed; 0 failed" in result.stdout


def test_web3_deploys_and_reads_back(counter_project: Forge, coordinator_chain: Anvil) -> None:
    artifact = counter_project.artifact("Counter")
    w3 = Web3(Web3.HTTPProvider(coordinator_chain.rpc_url))
    assert w3.eth.chain_id == coordinator_chain.chain_id
    account = w3.eth.account.from_key(coordinator_chain.private_keys[0])

    def send(tx: dict[str, object]) -> dict[str, object]:
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        return dict(w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30))

    contract = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    deploy = contract.constructor().build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
    )
    receipt = send(deploy)
    assert receipt["status"] == 1
    counter = w3.eth.contract(address=receipt["contractAddress"], abi=artifact.abi)

    call = counter.functions.add(7).build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
    )
    receipt = send(call)
    assert receipt["status"] == 1
    assert counter.functions.count().call() == 7
    events = counter.events.Incremented().process_receipt(receipt)
    assert [e["args"]["count"] for e in events] == [7]


def test_two_anvil_chains_are_independent(coordinator_chain: Anvil, worker_chain: Anvil) -> None:
    assert coordinator_chain.rpc_url != worker_chain.rpc_url
    assert Web3(Web3.HTTPProvider(worker_chain.rpc_url)).eth.chain_id == 31338
    assert Web3(Web3.HTTPProvider(coordinator_chain.rpc_url)).eth.chain_id == 31337


def test_forge_artifact_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no artifact for Nope"):
        Forge(tmp_path).artifact("Nope")
