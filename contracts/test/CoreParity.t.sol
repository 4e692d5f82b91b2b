// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {MessageReceiver} from "../src/base/MessageReceiver.sol";
import {BatchResults} from "./BatchReceive.t.sol";
import {HubFixture} from "./utils/HubFixture.sol";
import {RequireStyleCore} from "./utils/RequireStyleCore.sol";

/// What a receiver makes of each way a core refuses a VAA, on MessageCore (returns its refusals,
/// rejects high s) and on a core that reverts `Error(string)` and accepts high s, as Wormhole's.
contract CoreParityTest is HubFixture, BatchResults {
    function setUp() public {
        setUpHub();
        ensureRegistered(worker(1));
        stakeAs(worker(1), 20 ether); // room for many tasks' locks
    }

    function assigned(uint64 jobId) internal returns (bytes memory) {
        return signedFromMarket(taskAssignedPayload(jobId, 0, uint64(block.timestamp + 1 days), one(worker(1))));
    }

    function refusal(string memory reason) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(MessageReceiver.InvalidVaa.selector, reason);
    }

    /// The expected revert of `receiveMessage`: MessageCore's or the require-style core's.
    function expectRefusal(bytes memory onMessageCore, bytes memory onRequireStyle) internal {
        vm.expectRevert(requireStyleCore ? onRequireStyle : onMessageCore);
    }

    function withByte(bytes memory vaa, uint256 at, uint8 value) internal pure returns (bytes memory out) {
        out = bytes.concat(vaa);
        out[at] = bytes1(value);
    }

    function test_versionOtherThanOne() public {
        // 3: MessageCore reads a first byte of 2 as a version-2 VAA (ThresholdKeys).
        bytes memory vaa = withByte(assigned(1), 0, 3);
        expectRefusal(refusal("VM version incompatible"), refusal("VM version incompatible"));
        hub.receiveMessage(vaa);
    }

    function test_truncatedInput() public {
        bytes memory full = assigned(1);
        bytes memory vaa = new bytes(6 + 66 * 3 + 50);
        for (uint256 i = 0; i < vaa.length; ++i) {
            vaa[i] = full[i];
        }
        expectRefusal(
            abi.encodeWithSelector(bytes4(keccak256("MalformedVaa(uint256,uint256)")), vaa.length, vaa.length + 1),
            refusal("VM truncated")
        );
        hub.receiveMessage(vaa);
    }

    function test_unorderedIndices() public {
        uint8[] memory indices = new uint8[](3);
        (indices[0], indices[1], indices[2]) = (0, 2, 1);
        bytes memory vaa =
            signVaa(0, 0, indices, vaaBody(COORDINATOR, MARKET, 1, taskAssignedPayload(1, 0, 1, one(worker(1)))));
        expectRefusal(refusal("signature indices must be ascending"), refusal("signature indices must be ascending"));
        hub.receiveMessage(vaa);
    }

    function test_guardianIndexOutOfRange() public {
        uint8[] memory indices = firstIndices(3);
        indices[2] = 9;
        bytes memory vaa =
            signVaa(0, 0, indices, vaaBody(COORDINATOR, MARKET, 1, taskAssignedPayload(1, 0, 1, one(worker(1)))));
        expectRefusal(refusal("guardian index out of bounds"), refusal("guardian index out of bounds"));
        hub.receiveMessage(vaa);
    }

    function test_signatureEcrecoverRejects() public {
        bytes memory vaa = withByte(assigned(1), 6 + 65, 5); // v = 32
        expectRefusal(refusal("invalid signature v"), refusal("ecrecover failed with signature"));
        hub.receiveMessage(vaa);
    }

    function test_coreRevertWithoutAString() public {
        // v byte 230: MessageCore's +27 wraps (v 1, refused); the other core's checked +27 panics
        bytes memory vaa = withByte(assigned(1), 6 + 65, 230);
        expectRefusal(refusal("invalid signature v"), refusal(""));
        hub.receiveMessage(vaa);
    }

    /// The real core accepts high s; the digest (over the body only) still makes a high-s twin
    /// of a consumed VAA a replay, and the low-s original of a consumed twin too.
    function test_highSTwinIsNeverASecondDelivery() public {
        bytes memory vaa = assigned(1);
        bytes32 digest = core.parseVM(vaa).hash;
        hub.receiveMessage(vaa);
        bytes memory twin = highSTwin(vaa, 0);
        assertEq(core.parseVM(twin).hash, digest, "same body, same digest");
        expectRefusal(
            refusal("signature s value too high"),
            abi.encodeWithSelector(MessageReceiver.AlreadyConsumed.selector, digest)
        );
        hub.receiveMessage(twin);

        bytes memory other = highSTwin(assigned(2), 1);
        if (!requireStyleCore) return;
        hub.receiveMessage(other); // a fresh high-s VAA applies on such a core
        vm.expectRevert(abi.encodeWithSelector(MessageReceiver.AlreadyConsumed.selector, core.parseVM(other).hash));
        hub.receiveMessage(highSTwin(other, 1)); // its low-s original
    }

    /// In a batch, every refusal of the core is INVALID and the other entries still apply.
    function test_batchClassifiesEveryCoreRefusalAsInvalid() public {
        bytes[] memory vaas = new bytes[](6);
        vaas[0] = assigned(1);
        vaas[1] = withByte(assigned(2), 0, 3);
        vaas[2] = withByte(assigned(3), 6 + 65, 5);
        vaas[3] = withByte(assigned(4), 6 + 65, 230);
        vaas[4] = hex"01000000000300"; // declares 3 signatures, has none
        vaas[5] = assigned(5);
        vm.recordLogs();
        uint8[] memory results = hub.receiveMessages(vaas);
        Entry[] memory entries = batchEntries(vm.getRecordedLogs(), address(hub));
        uint8[6] memory expected = [APPLIED, INVALID, INVALID, INVALID, INVALID, APPLIED];
        for (uint256 i = 0; i < 6; ++i) {
            assertEq(results[i], expected[i], string.concat("result of entry ", vm.toString(i)));
        }
        assertEq(entries[1].reason, refusal("VM version incompatible"), "version");
        if (requireStyleCore) {
            assertEq(entries[2].reason, refusal("ecrecover failed with signature"), "ecrecover");
            assertEq(entries[3].reason, refusal(""), "panic");
            assertEq(entries[4].reason, refusal("VM truncated"), "truncated");
        } else {
            assertEq(bytes4(entries[4].reason), MALFORMED_VAA, "truncated");
        }
    }

    /// Governance on the require-style core: only the current set's VAA from the governance
    /// emitter changes the fee, each once; MessageCore's owner needs none.
    function test_feeAndGuardianChangesByTheCoresOwnPath() public {
        setCoreFee(7);
        assertEq(core.messageFee(), 7, "fee set");
        rotateGuardians(5, 300);
        assertEq(core.getCurrentGuardianSetIndex(), 1, "rotated");
        assertEq(core.getGuardianSet(1).keys.length, 5, "new set");
        if (!requireStyleCore) return;
        RequireStyleCore rs = RequireStyleCore(address(core));
        bytes memory fee = governanceVaa(abi.encodePacked(CORE_MODULE, uint8(3), WORKERS, uint256(9)));
        rs.submitSetMessageFee(fee);
        vm.expectRevert(bytes("governance action already consumed"));
        rs.submitSetMessageFee(fee);
        bytes memory body =
            vaaBody(COORDINATOR, MARKET, 1, abi.encodePacked(CORE_MODULE, uint8(3), WORKERS, uint256(1)));
        vm.expectRevert(bytes("wrong governance chain"));
        rs.submitSetMessageFee(signVaa(1, 300, firstIndices(4), body));
    }
}

contract CoreParityOnRequireStyleCoreTest is CoreParityTest {
    constructor() {
        requireStyleCore = true;
    }
}
