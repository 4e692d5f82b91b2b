// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../src/interfaces/IMessageCore.sol";
import {ThresholdKeys} from "../src/base/ThresholdKeys.sol";
import {MessageCore} from "../src/MessageCore.sol";
import {Owned} from "../src/base/Owned.sol";
import {Guardians} from "./utils/Guardians.sol";

contract MessageCoreTest is Guardians {
    uint16 internal constant CHAIN = 2;
    uint32 internal constant EXPIRY = 1 days;
    MessageCore internal core;
    bytes32 internal constant EMITTER = bytes32(uint256(0xE1));

    function setUp() public {
        vm.warp(1_800_000_000);
        core = new MessageCore(CHAIN, guardianAddresses(19, 0), EXPIRY, address(this));
    }

    function body(bytes memory payload) internal view returns (bytes memory) {
        return vaaBody(4, EMITTER, 9, payload);
    }

    function check(bytes memory vaa, bool expectValid, string memory expectReason) internal view {
        (, bool valid, string memory reason) = core.parseAndVerifyVM(vaa);
        assertEq(valid, expectValid, "validity");
        assertEq(reason, expectReason, "reason");
    }

    // ------------------------------------------------------------------ construction and admin

    function test_constructor_rejectsEmptyZeroAndRepeatedKeys() public {
        address[] memory none = new address[](0);
        vm.expectRevert(MessageCore.InvalidGuardianSet.selector);
        new MessageCore(CHAIN, none, EXPIRY, address(this));

        address[] memory withZero = guardianAddresses(2, 0);
        withZero[1] = address(0);
        vm.expectRevert(MessageCore.InvalidGuardianSet.selector);
        new MessageCore(CHAIN, withZero, EXPIRY, address(this));

        address[] memory repeated = guardianAddresses(2, 0);
        repeated[1] = repeated[0];
        vm.expectRevert(MessageCore.InvalidGuardianSet.selector);
        new MessageCore(CHAIN, repeated, EXPIRY, address(this));
    }

    function test_constructor_rejectsZeroOwner() public {
        vm.expectRevert(Owned.ZeroOwner.selector);
        new MessageCore(CHAIN, guardianAddresses(1, 0), EXPIRY, address(0));
    }

    function test_views_reportConfiguration() public view {
        assertEq(core.chainId(), CHAIN, "chain id");
        assertEq(core.getCurrentGuardianSetIndex(), 0, "set index");
        IMessageCore.GuardianSet memory set = core.getGuardianSet(0);
        assertEq(set.keys.length, 19, "set size");
        assertEq(set.keys[3], vm.addr(guardianKey(3)), "key 3");
        assertEq(set.expirationTime, 0, "current set does not expire");
        assertEq(core.guardianSetExpiry(), EXPIRY, "expiry");
    }

    function test_quorum_isTwoThirdsPlusOne() public view {
        assertEq(core.quorum(1), 1, "1");
        assertEq(core.quorum(3), 3, "3");
        assertEq(core.quorum(4), 3, "4");
        assertEq(core.quorum(19), 13, "19");
    }

    function test_transferOwnership_movesOwnerAndRejectsOthers() public {
        address next = address(0xB0B);
        core.transferOwnership(next);
        assertEq(core.owner(), next, "owner");
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, address(this)));
        core.transferOwnership(address(this));
        vm.prank(next);
        vm.expectRevert(Owned.ZeroOwner.selector);
        core.transferOwnership(address(0));
    }

    // ------------------------------------------------------------------ publication

    function test_publishMessage_countsSequencePerEmitterAndEmits() public {
        vm.expectEmit(true, false, false, true);
        emit IMessageCore.LogMessagePublished(address(this), 0, 5, hex"abcd", 202);
        assertEq(core.publishMessage(5, hex"abcd", 202), 0, "first");
        assertEq(core.publishMessage(5, hex"abcd", 202), 1, "second");
        vm.prank(address(0xCAFE));
        assertEq(core.publishMessage(1, hex"", 200), 0, "other emitter starts at zero");
        assertEq(core.nextSequence(address(this)), 2, "next");
    }

    function test_publishMessage_requiresExactFee() public {
        core.setMessageFee(100);
        assertEq(core.messageFee(), 100, "fee");
        vm.expectRevert(abi.encodeWithSelector(MessageCore.WrongMessageFee.selector, 0, 100));
        core.publishMessage(0, hex"01", 202);
        core.publishMessage{value: 100}(0, hex"01", 202);
        assertEq(address(core).balance, 100, "fee held");
    }

    function test_collectFees_sendsBalanceToRecipient() public {
        core.setMessageFee(7);
        core.publishMessage{value: 7}(0, hex"01", 202);
        address payable to = payable(address(0xFEE));
        core.collectFees(to);
        assertEq(to.balance, 7, "collected");
        assertEq(address(core).balance, 0, "emptied");
    }

    function test_adminFunctions_rejectNonOwner() public {
        vm.startPrank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, address(0xBAD)));
        core.setMessageFee(1);
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, address(0xBAD)));
        core.collectFees(payable(address(0xBAD)));
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, address(0xBAD)));
        core.submitNewGuardianSet(guardianAddresses(3, 50));
        vm.stopPrank();
    }

    function test_collectFees_revertsWhenRecipientRefuses() public {
        core.setMessageFee(1);
        core.publishMessage{value: 1}(0, hex"01", 202);
        address payable refuser = payable(address(new Refuser()));
        vm.expectRevert(MessageCore.FeeTransferFailed.selector);
        core.collectFees(refuser);
    }

    // ------------------------------------------------------------------ verification

    function test_parseAndVerifyVM_acceptsQuorumAndParsesFields() public view {
        bytes memory b = body(hex"0102");
        (IMessageCore.VM memory parsed, bool valid, string memory reason) =
            core.parseAndVerifyVM(signVaa(0, 0, firstIndices(13), b));
        assertTrue(valid, reason);
        assertEq(parsed.version, 1, "version");
        assertEq(parsed.timestamp, vaaTimestamp, "timestamp");
        assertEq(parsed.nonce, 7, "nonce");
        assertEq(parsed.emitterChainId, 4, "emitter chain");
        assertEq(parsed.emitterAddress, EMITTER, "emitter");
        assertEq(parsed.sequence, 9, "sequence");
        assertEq(parsed.consistencyLevel, 202, "consistency");
        assertEq(parsed.payload, hex"0102", "payload");
        assertEq(parsed.signatures.length, 13, "signatures");
        assertEq(parsed.signatures[12].guardianIndex, 12, "last index");
        assertEq(parsed.hash, digestOf(b), "digest");
    }

    function test_verifyVM_judgesAParsedVm() public view {
        IMessageCore.VM memory parsed = core.parseVM(signVaa(0, 0, firstIndices(13), body(hex"01")));
        (bool valid,) = core.verifyVM(parsed);
        assertTrue(valid, "valid");
        parsed.hash = keccak256("other"); // signatures are checked against vm.hash

        (bool stillValid, string memory reason) = core.verifyVM(parsed);
        assertFalse(stillValid, "other digest");
        assertEq(reason, "VM signature invalid", "reason");
    }

    function test_verify_rejectsBelowQuorum() public view {
        check(signVaa(0, 0, firstIndices(12), body(hex"01")), false, "no quorum");
    }

    function test_verify_rejectsUnorderedIndices() public view {
        uint8[] memory indices = firstIndices(13);
        (indices[3], indices[4]) = (indices[4], indices[3]);
        check(signVaa(0, 0, indices, body(hex"01")), false, "signature indices must be ascending");
    }

    function test_verify_rejectsDuplicateIndices() public view {
        uint8[] memory indices = firstIndices(13);
        indices[5] = 4;
        check(signVaa(0, 0, indices, body(hex"01")), false, "signature indices must be ascending");
    }

    function test_verify_rejectsIndexOutOfBounds() public view {
        uint8[] memory indices = firstIndices(13);
        indices[12] = 19;
        check(signVaa(0, 0, indices, body(hex"01")), false, "guardian index out of bounds");
    }

    function test_verify_rejectsForgedSignature() public view {
        bytes memory b = body(hex"01");
        bytes memory vaa = signVaa(0, 0, firstIndices(13), b);
        // Replace guardian 0's signature by one from a key outside the set.
        bytes memory forged = signatureEntry(0, 0xBADBAD, digestOf(b));
        for (uint256 i = 0; i < 66; ++i) {
            vaa[6 + i] = forged[i];
        }
        check(vaa, false, "VM signature invalid");
    }

    function test_verify_rejectsHighS() public view {
        bytes memory b = body(hex"01");
        bytes memory vaa = signVaa(0, 0, firstIndices(13), b);
        // (r, n - s, flipped v) recovers the same key: the malleable twin must be refused.
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(guardianKey(0), digestOf(b));
        bytes memory twin =
            abi.encodePacked(uint8(0), r, bytes32(CURVE_ORDER - uint256(s)), v == 27 ? uint8(1) : uint8(0));
        assertEq(
            ecrecover(digestOf(b), v == 27 ? 28 : 27, r, bytes32(CURVE_ORDER - uint256(s))),
            vm.addr(guardianKey(0)),
            "twin recovers"
        );
        for (uint256 i = 0; i < 66; ++i) {
            vaa[6 + i] = twin[i];
        }
        check(vaa, false, "signature s value too high");
    }

    function test_verify_rejectsInvalidV() public view {
        bytes memory vaa = signVaa(0, 0, firstIndices(13), body(hex"01"));
        vaa[6 + 65] = 0x02;
        check(vaa, false, "invalid signature v");
    }

    function test_verify_rejectsUnknownGuardianSet() public view {
        check(signVaa(1, 0, firstIndices(13), body(hex"01")), false, "invalid guardian set");
    }

    function test_verify_rejectsOtherVersion() public view {
        bytes memory vaa = signVaa(0, 0, firstIndices(13), body(hex"01"));
        vaa[0] = 0x03;
        check(vaa, false, "VM version incompatible");
        vaa[0] = 0x00;
        check(vaa, false, "VM version incompatible");
    }

    /// A first byte of 2 is read as a version-2 VAA: with no threshold key appended, none verifies.
    function test_verify_versionTwoGoesToTheThresholdKeys() public view {
        bytes memory vaa = signVaa(0, 0, firstIndices(13), body(hex"01"));
        vaa[0] = 0x02;
        check(vaa, false, "unknown threshold key");
    }

    function test_parseVM_rejectsTruncatedInput() public {
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.MalformedVaa.selector, 3, 6));
        core.parseVM(hex"010000");
        bytes memory vaa = signVaa(0, 0, firstIndices(2), body(hex""));
        bytes memory cut = new bytes(vaa.length - 1);
        for (uint256 i = 0; i < cut.length; ++i) {
            cut[i] = vaa[i];
        }
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.MalformedVaa.selector, cut.length, vaa.length));
        core.parseAndVerifyVM(cut);
    }

    // ------------------------------------------------------------------ guardian set rotation

    function test_rotation_oldSetValidUntilExpiryThenExpired() public {
        bytes memory oldVaa = signVaa(0, 0, firstIndices(13), body(hex"01"));
        vm.expectEmit(true, false, false, true);
        emit MessageCore.GuardianSetAdded(1, guardianAddresses(4, 100), uint32(block.timestamp) + EXPIRY);
        core.submitNewGuardianSet(guardianAddresses(4, 100));
        assertEq(core.getCurrentGuardianSetIndex(), 1, "index");
        assertEq(core.getGuardianSet(0).expirationTime, uint32(block.timestamp) + EXPIRY, "expiry set");

        check(oldVaa, true, "");
        check(signVaa(1, 100, firstIndices(3), body(hex"01")), true, "");

        vm.warp(block.timestamp + EXPIRY);
        check(oldVaa, true, "");
        vm.warp(block.timestamp + 1);
        check(oldVaa, false, "guardian set has expired");
        check(signVaa(1, 100, firstIndices(3), body(hex"01")), true, "");
    }

    function test_rotation_rejectsInvalidSet() public {
        vm.expectRevert(MessageCore.InvalidGuardianSet.selector);
        core.submitNewGuardianSet(new address[](0));
    }

    // ------------------------------------------------------------------ fuzz

    /// Any number of ascending guardian signatures verifies exactly when it reaches quorum.
    function testFuzz_verify_validExactlyAtQuorum(uint256 count, uint64 sequence, bytes memory payload) public view {
        count = bound(count, 0, 19);
        bytes memory vaa = signVaa(0, 0, firstIndices(count), vaaBody(4, EMITTER, sequence, payload));
        (IMessageCore.VM memory parsed, bool valid, string memory reason) = core.parseAndVerifyVM(vaa);
        assertEq(valid, count >= 13, reason);
        assertEq(parsed.sequence, sequence, "sequence");
        assertEq(parsed.payload, payload, "payload");
    }

    /// Changing any byte of a signed body breaks the signatures.
    function testFuzz_verify_rejectsTamperedBody(uint256 at, uint8 flip, bytes memory payload) public view {
        vm.assume(flip != 0);
        bytes memory b = vaaBody(4, EMITTER, 1, payload);
        bytes memory vaa = signVaa(0, 0, firstIndices(13), b);
        uint256 bodyStart = vaa.length - b.length;
        at = bodyStart + bound(at, 0, b.length - 1);
        vaa[at] = bytes1(uint8(vaa[at]) ^ flip);
        check(vaa, false, "VM signature invalid");
    }

    /// Arbitrary bytes either parse or revert with MalformedVaa; they never verify.
    function testFuzz_parse_arbitraryBytesNeverVerify(bytes calldata junk) public view {
        try core.parseAndVerifyVM(junk) returns (IMessageCore.VM memory, bool valid, string memory) {
            assertFalse(valid, "junk verified");
        } catch (bytes memory reason) {
            assertEq(bytes4(reason), ThresholdKeys.MalformedVaa.selector, "unexpected revert");
        }
    }
}

contract Refuser {
    receive() external payable {
        revert("no");
    }
}
