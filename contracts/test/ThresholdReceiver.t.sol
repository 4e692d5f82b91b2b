// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../src/interfaces/IMessageCore.sol";
import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {WorkerHub} from "../src/WorkerHub.sol";
import {BatchResults} from "./BatchReceive.t.sol";
import {ThresholdVerifierHarness} from "./harness/ThresholdVerifierHarness.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {Vm} from "./utils/Vm.sol";

/// A receiver on a core that takes version 1 only and reverts its refusals (Wormhole's behaviour,
/// `RequireStyleCore`), deployed with a ThresholdVerifier beside that core as its verifier: it takes
/// version-2 VAAs, still takes version 1 through the core, and keeps one consumed flag per body.
contract ThresholdReceiverTest is HubFixture, BatchResults {
    /// The group secret the test's threshold key stands for (one key signing alone: what a
    /// verifier checks is the same for a signature the shares of t guardians made).
    uint256 internal constant GROUP_SECRET = 0x7E57C0FFEE;
    uint256 internal px;
    uint8 internal parity;
    ThresholdVerifierHarness internal verifier;

    constructor() {
        requireStyleCore = true;
    }

    function hubVerifier() internal override returns (IMessageCore) {
        verifier = new ThresholdVerifierHarness(core);
        Vm.Wallet memory group = vm.createWallet(GROUP_SECRET);
        (px, parity) = (group.publicKeyX, uint8(group.publicKeyY & 1));
        verifier.forceKey(px, parity, 0, 0);
        return IMessageCore(address(verifier));
    }

    function setUp() public {
        setUpHub();
        ensureRegistered(worker(1));
        stakeAs(worker(1), 20 ether);
    }

    /// `payload` from the market as a version-2 VAA of key 0 (docs/protocol.md, "VAA version 2":
    /// `r` the address of `k·G`, `s = k - e·x mod Q`).
    function signedV2(uint64 sequence, bytes memory payload) internal view returns (bytes memory) {
        bytes memory body = vaaBody(COORDINATOR, MARKET, sequence, payload);
        bytes32 digest = digestOf(body);
        uint256 nonce = uint256(keccak256(abi.encode("nonce", digest))) % CURVE_ORDER;
        address r = vm.addr(nonce);
        uint256 e = uint256(keccak256(abi.encodePacked(px, parity, digest, r))) % CURVE_ORDER;
        uint256 s = addmod(nonce, CURVE_ORDER - mulmod(e, GROUP_SECRET, CURVE_ORDER), CURVE_ORDER);
        return abi.encodePacked(uint8(2), uint32(0), r, s, body);
    }

    function assignment(uint64 jobId) internal view returns (bytes memory) {
        return taskAssignedPayload(jobId, 0, uint64(block.timestamp + 1 days), one(worker(1)));
    }

    function taskState(uint64 jobId) internal view returns (WorkerHub.TaskState) {
        return hub.getTask(jobId, 0, toBytes32(worker(1))).state;
    }

    function test_aVersion2VaaIsApplied() public {
        bytes memory vaa = signedV2(1, assignment(1));
        hub.receiveMessage(vaa);
        assertEq(uint8(taskState(1)), uint8(WorkerHub.TaskState.Assigned), "assigned");
        // The same body signed by the guardians (version 1) is the same message: consumed.
        bytes memory body = vaaBody(COORDINATOR, MARKET, 1, assignment(1));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.AlreadyConsumed.selector, digestOf(body)));
        hub.receiveMessage(signVaa(0, 0, firstIndices(3), body));
    }

    function test_version1StillVerifiedByTheCore() public {
        hub.receiveMessage(signedFromMarket(assignment(2)));
        assertEq(uint8(taskState(2)), uint8(WorkerHub.TaskState.Assigned), "assigned");
        // Refused the core's way: its Error(string) becomes InvalidVaa(string).
        bytes memory vaa = signedFromMarket(assignment(3));
        vaa[0] = 0x03;
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "VM version incompatible"));
        hub.receiveMessage(vaa);
    }

    function test_aForgedOrUnknownKeyVersion2VaaIsRefused() public {
        bytes memory vaa = signedV2(4, assignment(4));
        bytes memory forged = bytes.concat(vaa);
        forged[56] = bytes1(uint8(forged[56]) ^ 1); // the last byte of s
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "VM signature invalid"));
        hub.receiveMessage(forged);
        bytes memory otherKey = bytes.concat(vaa);
        otherKey[4] = 0x01; // key index 1: none
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "unknown threshold key"));
        hub.receiveMessage(otherKey);
        // Another job's body under this signature is refused too.
        bytes memory swapped = bytes.concat(slice(vaa, 0, 57), vaaBody(COORDINATOR, MARKET, 4, assignment(5)));
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, "VM signature invalid"));
        hub.receiveMessage(swapped);
        hub.receiveMessage(vaa);
        assertEq(uint8(taskState(4)), uint8(WorkerHub.TaskState.Assigned), "the genuine one applies");
    }

    /// In a batch, a version-2 VAA's `BatchEntry` carries its digest, keccak256(keccak256(body))
    /// of the body after its 57-byte header (not of bytes found with version 1's layout), applied
    /// or skipped as consumed, and the same digest as a version-1 VAA of the body; zero for a
    /// version-2 VAA too short to have a body.
    function test_receiveMessages_logsAVersion2VaasDigest() public {
        bytes memory body = vaaBody(COORDINATOR, MARKET, 6, assignment(6));
        bytes memory vaa = signedV2(6, assignment(6));
        assertEq(keccak256(slice(vaa, 57, vaa.length)), keccak256(body), "the body follows the header");
        bytes[] memory vaas = new bytes[](4);
        vaas[0] = vaa;
        vaas[1] = vaa; // the same VAA again: skipped before its signature
        vaas[2] = signVaa(0, 0, firstIndices(3), body); // the same body, version 1
        vaas[3] = slice(vaa, 0, 57 + 50); // one byte short of a body

        vm.recordLogs();
        uint8[] memory results = hub.receiveMessages(vaas);
        Entry[] memory entries = batchEntries(vm.getRecordedLogs(), address(hub));

        uint8[4] memory expected = [APPLIED, CONSUMED, CONSUMED, INVALID];
        assertEq(entries.length, 4, "one event per entry");
        for (uint256 i = 0; i < 4; ++i) {
            assertEq(results[i], expected[i], string.concat("result of entry ", vm.toString(i)));
            assertEq(entries[i].index, i, "event index");
            assertEq(entries[i].result, expected[i], "event result");
            assertEq(entries[i].digest, i == 3 ? bytes32(0) : digestOf(body), "event digest");
        }
        assertEq(uint8(taskState(6)), uint8(WorkerHub.TaskState.Assigned), "assigned");
    }

    function slice(bytes memory data, uint256 from, uint256 to) internal pure returns (bytes memory out) {
        out = new bytes(to - from);
        for (uint256 i = from; i < to; ++i) {
            out[i - from] = data[i];
        }
    }
}
