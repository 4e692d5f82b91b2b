// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../src/JobMarket.sol";
import {WorkerHub} from "../src/WorkerHub.sol";
import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {PayloadCodec} from "../src/libraries/PayloadCodec.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
import {Vm} from "./utils/Vm.sol";

/// Results and events of `receiveMessages`, shared by the hub and market tests.
abstract contract BatchResults {
    uint8 internal constant APPLIED = 1;
    uint8 internal constant CONSUMED = 2;
    uint8 internal constant INVALID = 3;
    uint8 internal constant FAILED = 4;
    bytes32 internal constant BATCH_ENTRY = keccak256("BatchEntry(uint256,bytes32,uint8,bytes)");
    bytes4 internal constant MALFORMED_VAA = bytes4(keccak256("MalformedVaa(uint256,uint256)"));

    struct Entry {
        uint256 index;
        bytes32 digest;
        uint8 result;
        bytes reason;
    }

    /// The `BatchEntry` events `receiver` emitted among `logs`, in order.
    function batchEntries(Vm.Log[] memory logs, address receiver) internal pure returns (Entry[] memory entries) {
        uint256 count = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].emitter == receiver && logs[i].topics[0] == BATCH_ENTRY) ++count;
        }
        entries = new Entry[](count);
        uint256 n = 0;
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].emitter != receiver || logs[i].topics[0] != BATCH_ENTRY) continue;
            (uint8 result, bytes memory reason) = abi.decode(logs[i].data, (uint8, bytes));
            entries[n++] = Entry(uint256(logs[i].topics[1]), logs[i].topics[2], result, reason);
        }
    }
}

contract HubBatchReceiveTest is HubFixture, BatchResults {
    function setUp() public {
        setUpHub();
    }

    function assigned(uint64 jobId, address w) internal returns (bytes memory) {
        return signedFromMarket(taskAssignedPayload(jobId, 0, uint64(block.timestamp + 1 days), one(w)));
    }

    function digest(bytes memory vaa) internal view returns (bytes32) {
        return core.parseVM(vaa).hash;
    }

    function taskState(uint64 jobId, address w) internal view returns (WorkerHub.TaskState) {
        return hub.getTask(jobId, 0, toBytes32(w)).state;
    }

    function test_receiveMessages_appliesEachEntryOnItsOwn() public {
        ensureRegistered(worker(1));
        ensureRegistered(worker(2));
        stakeAs(worker(1), 2 ether); // room for a second task's lock
        bytes memory old = assigned(1, worker(1));
        hub.receiveMessage(old);
        setCoreFee(5); // a refused entry must pay a STAKE_CHANGED; the reserve is empty

        bytes memory applied = assigned(2, worker(1));
        bytes memory payload = taskAssignedPayload(3, 0, uint64(block.timestamp + 1 days), one(worker(2)));
        bytes[] memory vaas = new bytes[](11);
        vaas[0] = applied;
        vaas[1] = applied; // the same VAA again, in the same batch
        vaas[2] = old; // delivered before
        vaas[3] = signVaa(0, 10, firstIndices(3), vaaBody(COORDINATOR, MARKET, nextSequence++, payload));
        vaas[4] = signVaa(0, 0, firstIndices(3), vaaBody(COORDINATOR, bytes32(uint256(0xBAD)), 1, payload));
        PayloadCodec.TaskAssigned memory elsewhere;
        elsewhere.header = PayloadCodec.Header(2, 9, toBytes32(address(hub)), 3);
        elsewhere.round = 0;
        elsewhere.minStake = 1;
        elsewhere.stakeLock = 1;
        elsewhere.assignments = new PayloadCodec.Assignment[](1);
        elsewhere.assignments[0] = PayloadCodec.Assignment(toBytes32(worker(2)), 0);
        vaas[5] = signedFromMarket(PayloadCodec.encode(elsewhere));
        vaas[6] = hex"0100000000"; // too short to parse
        vaas[7] = signedFromMarket(
            PayloadCodec.encode(
                PayloadCodec.WorkerRegistered(
                    PayloadCodec.Header(1, WORKERS, toBytes32(address(hub)), 0), bytes32(uint256(1)), 1, bytes32(0), 0
                )
            )
        );
        vaas[8] = signedFromMarket(bytes.concat(payload, hex"00")); // a body with a trailing byte
        vaas[9] = assigned(4, worker(9)); // unregistered: the refusal's fee cannot be paid
        vaas[10] = signedFromMarket(payload);

        vm.recordLogs();
        uint8[] memory results = hub.receiveMessages(vaas);
        Entry[] memory entries = batchEntries(vm.getRecordedLogs(), address(hub));

        uint8[11] memory expected =
            [APPLIED, CONSUMED, CONSUMED, INVALID, INVALID, INVALID, INVALID, INVALID, FAILED, FAILED, APPLIED];
        assertEq(results.length, 11, "one result per entry");
        assertEq(entries.length, 11, "one event per entry");
        for (uint256 i = 0; i < 11; ++i) {
            assertEq(results[i], expected[i], string.concat("result of entry ", vm.toString(i)));
            assertEq(entries[i].index, i, "event index");
            assertEq(entries[i].result, expected[i], "event result");
            bytes32 d = i == 6 ? bytes32(0) : digest(vaas[i]);
            assertEq(entries[i].digest, d, "event digest");
            bool consumedNow = i == 6 ? false : consumedBy(hub, vaas[i]);
            assertEq(consumedNow, expected[i] != INVALID && expected[i] != FAILED, "consumed only if applied");
        }
        assertEq(entries[0].reason.length, 0, "applied: no reason");
        assertEq(entries[1].reason.length, 0, "consumed earlier in the batch: skipped, no reason");
        assertEq(entries[2].reason.length, 0, "skipped before verification: no reason");
        assertEq(
            entries[3].reason,
            abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "VM signature invalid"),
            "bad signature"
        );
        assertEq(
            entries[4].reason,
            abi.encodeWithSelector(MessageReceiver.UnknownEmitter.selector, COORDINATOR, bytes32(uint256(0xBAD))),
            "unknown emitter"
        );
        assertEq(entries[5].reason, abi.encodeWithSelector(MessageReceiver.WrongTargetChain.selector, 9), "wrong chain");
        // MessageCore's own parse error; Wormhole's core refuses with a string
        bytes4 malformed = requireStyleCore ? MessageReceiver.InvalidVaa.selector : MALFORMED_VAA;
        assertEq(bytes4(entries[6].reason), malformed, "malformed VAA");
        assertEq(entries[7].reason, abi.encodeWithSelector(MessageReceiver.UnexpectedPayload.selector, 1), "unexpected");
        assertEq(bytes4(entries[8].reason), PayloadCodec.PayloadLengthMismatch.selector, "malformed body");
        assertEq(
            entries[9].reason, abi.encodeWithSelector(WorkerHub.InsufficientFeeReserve.selector, 5, 0), "fee reserve"
        );
        assertTrue(taskState(2, worker(1)) == WorkerHub.TaskState.Assigned, "entry 0 applied");
        assertTrue(taskState(3, worker(2)) == WorkerHub.TaskState.Assigned, "entry 10 applied");
        assertEq(hub.getStaker(worker(9)).stakeNonce, 0, "the failed entry published nothing");
    }

    function test_receiveMessages_paysRefusalsFromValueThenReserve() public {
        setCoreFee(5);
        bytes[] memory vaas = new bytes[](2);
        vaas[0] = assigned(1, worker(8));
        vaas[1] = assigned(1, worker(9));
        vm.deal(address(this), 7);
        uint8[] memory results = hub.receiveMessages{value: 7}(vaas);
        assertEq(results[0], APPLIED, "the first refusal is paid");
        assertEq(results[1], FAILED, "the second finds 2 in the reserve");
        assertEq(hub.feeReserve(), 2, "value went to the reserve, one fee was spent");
        assertFalse(consumedBy(hub, vaas[1]), "not consumed");
        vm.deal(address(this), 3);
        results = hub.receiveMessages{value: 3}(vaas);
        assertEq(results[0], CONSUMED, "delivered before");
        assertEq(results[1], APPLIED, "paid now");
        assertEq(hub.feeReserve(), 0, "reserve spent");
        assertEq(address(hub).balance, hub.feeReserve() + hub.totalStaked(), "no value left unaccounted");
    }

    function test_receiveMessages_outOfGasAppliesNothing() public {
        ensureRegistered(worker(1));
        bytes[] memory vaas = new bytes[](3);
        for (uint256 i = 0; i < 3; ++i) {
            vaas[i] = assigned(uint64(10 + i), worker(1));
        }
        // Enough for the first entry, not the second: the first is applied, then undone.
        try hub.receiveMessages{gas: 150_000}(vaas) {
            fail("a batch that ran out of gas was accepted");
        } catch (bytes memory reason) {
            assertEq(reason, abi.encodeWithSelector(MessageReceiver.BatchOutOfGas.selector, 1), "BatchOutOfGas(1)");
        }
        for (uint256 i = 0; i < 3; ++i) {
            assertFalse(consumedBy(hub, vaas[i]), "nothing consumed");
        }
        uint8[] memory results = hub.receiveMessages(vaas);
        assertEq(results[2], APPLIED, "with enough gas every entry applies");
    }

    function test_receiveMessages_emptyBatchDoesNothing() public {
        uint8[] memory results = hub.receiveMessages(new bytes[](0));
        assertEq(results.length, 0, "no entries, no results");
    }

    /// Stake rules hold inside a batch: an assignment locks, its slashed settlement takes the lock
    /// to the recipient (paying its STAKE_CHANGED from the value sent), and a repeat changes nothing.
    function test_receiveMessages_keepsTheStakeRulesAcrossEntries() public {
        ensureRegistered(worker(1));
        stakeAs(worker(1), 1 ether);
        setCoreFee(3);
        bytes memory settled = signedFromMarket(settledPayload(5, 0, worker(1), PayloadCodec.OUTCOME_SLASHED, 1e8));
        bytes[] memory vaas = new bytes[](4);
        vaas[0] = assigned(5, worker(1));
        vaas[1] = settled;
        vaas[2] = settled;
        vaas[3] = assigned(6, worker(1)); // after the slash 1 ether is left, none of it locked
        vm.deal(address(this), 3);
        uint8[] memory results = hub.receiveMessages{value: 3}(vaas);
        assertEq(results[0], APPLIED, "assigned");
        assertEq(results[1], APPLIED, "settled");
        assertEq(results[2], CONSUMED, "settled once");
        assertEq(results[3], APPLIED, "assigned again");
        WorkerHub.Staker memory s = hub.getStaker(worker(1));
        assertEq(s.staked, 1 ether, "the slash took the task's lock");
        assertEq(s.locked, 1 ether, "only the new task's lock remains");
        assertEq(hub.claimableOf(POSTER), 1 ether, "credited to the job's recipient");
        assertEq(hub.feeReserve(), 0, "the slash's STAKE_CHANGED was paid from the value");
        assertTrue(taskState(5, worker(1)) == WorkerHub.TaskState.Settled, "task settled");
    }

    function _thirtyTwo(uint64 firstJob) internal returns (bytes[] memory vaas) {
        ensureRegistered(worker(1));
        stakeAs(worker(1), 80 ether); // every task locks 1 ether
        vaas = new bytes[](32);
        for (uint256 i = 0; i < 32; ++i) {
            vaas[i] = assigned(firstJob + uint64(i), worker(1));
        }
    }

    /// Gas of 32 TASK_ASSIGNED delivered one by one (snapshot; compare with the batch test).
    function test_gas_receive32Singly() public {
        bytes[] memory vaas = _thirtyTwo(100);
        for (uint256 i = 0; i < 32; ++i) {
            hub.receiveMessage(vaas[i]);
        }
    }

    /// Gas of the same 32 TASK_ASSIGNED in one `receiveMessages` (snapshot).
    function test_gas_receive32InOneBatch() public {
        bytes[] memory vaas = _thirtyTwo(100);
        hub.receiveMessages(vaas);
    }

    /// A batch entry costs less than a delivery of its own once the 21,000 gas every transaction
    /// pays is counted: the batch's overhead per entry (a self-call, a result and an event) is
    /// far below it.
    function test_receiveMessages_costsLessPerMessageThanSingleDeliveries() public {
        bytes[] memory vaas = _thirtyTwo(100);
        bytes[] memory more = new bytes[](32);
        for (uint256 i = 0; i < 32; ++i) {
            more[i] = assigned(200 + uint64(i), worker(1));
        }
        // The batch goes first: the single deliveries then find the worker's records warm.
        uint256 start = gasleft();
        hub.receiveMessages(vaas);
        uint256 batched = (start - gasleft() + 21_000) / 32;
        start = gasleft();
        for (uint256 i = 0; i < 32; ++i) {
            hub.receiveMessage(more[i]);
        }
        uint256 single = (start - gasleft()) / 32 + 21_000;
        assertLe(batched + 10_000, single, "batching saves most of a transaction's base cost per message");
    }
}

contract MarketBatchReceiveTest is MarketFixture, BatchResults {
    function setUp() public {
        setUpMarket();
    }

    function test_receiveMessages_appliesRegistrationsAndSkipsTheRest() public {
        bytes memory first = signed(EVM_WORKERS, HUB, registeredPayload(workerKey(1), 500, payoutOf(1)));
        PayloadCodec.TaskAssigned memory m;
        m.header = PayloadCodec.Header(2, COORDINATOR, toBytes32(address(market)), 1);
        m.assignments = assignments(0, 1);
        bytes[] memory vaas = new bytes[](5);
        vaas[0] = first;
        vaas[1] = first;
        vaas[2] = signed(EVM_WORKERS, HUB, committedPayload(77, 0, workerKey(1))); // no such job
        vaas[3] = signed(EVM_WORKERS, HUB, PayloadCodec.encode(m)); // a worker chain's payload
        vaas[4] = signed(SOLANA, SOLANA_PROGRAM, registeredPayload(workerKey(2), 700, payoutOf(2)));

        vm.recordLogs();
        uint8[] memory results = market.receiveMessages(vaas);
        Entry[] memory entries = batchEntries(vm.getRecordedLogs(), address(market));

        uint8[5] memory expected = [APPLIED, CONSUMED, FAILED, INVALID, APPLIED];
        for (uint256 i = 0; i < 5; ++i) {
            assertEq(results[i], expected[i], string.concat("result of entry ", vm.toString(i)));
            assertEq(entries[i].result, expected[i], "event result");
            assertEq(consumedBy(market, vaas[i]), expected[i] <= CONSUMED, "consumed");
        }
        assertEq(
            entries[2].reason, abi.encodeWithSelector(JobMarket.WrongRound.selector, 77, 0, 0), "application revert"
        );
        assertTrue(market.getWorker(market.workerIdOf(EVM_WORKERS, workerKey(1))).registered, "first applied");
        assertEq(market.getWorker(market.workerIdOf(SOLANA, workerKey(2))).stake, 700, "last applied");
    }
}

/// The same tests against a core that behaves like Wormhole's (see `RequireStyleCore`).
contract HubBatchReceiveOnRequireStyleCoreTest is HubBatchReceiveTest {
    constructor() {
        requireStyleCore = true;
    }
}

/// The same tests against a core that behaves like Wormhole's (see `RequireStyleCore`).
contract MarketBatchReceiveOnRequireStyleCoreTest is MarketBatchReceiveTest {
    constructor() {
        requireStyleCore = true;
    }
}
