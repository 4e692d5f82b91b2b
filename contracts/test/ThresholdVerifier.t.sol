// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../src/interfaces/IMessageCore.sol";
import {ThresholdKeys} from "../src/base/ThresholdKeys.sol";
import {MessageCore} from "../src/MessageCore.sol";
import {ThresholdVerifier} from "../src/ThresholdVerifier.sol";
import {IThresholdTarget, MessageCoreHarness, ThresholdVerifierHarness} from "./harness/ThresholdVerifierHarness.sol";
import {Guardians} from "./utils/Guardians.sol";

/// Version-2 verification (`ThresholdKeys`): the shared vectors of tests/vectors/threshold.json
/// (signed in Python), key governance and rotation, and v1 VAAs beside v2 ones. Run twice: on
/// ThresholdVerifier beside a core, and on MessageCore itself.
abstract contract ThresholdKeysTest is Guardians {
    uint32 internal constant EXPIRY = 1;
    uint32 internal constant GRACE = 86_400;
    bytes32 internal constant GOVERNANCE = bytes32(uint256(4));
    string internal vectors;
    string internal v1Vectors;

    function setUp() public {
        vectors = vm.readFile(string.concat(vm.projectRoot(), "/../tests/vectors/threshold.json"));
        v1Vectors = vm.readFile(string.concat(vm.projectRoot(), "/../tests/vectors/vaas.json"));
    }

    function _count(string memory key) internal view returns (uint256 n) {
        while (vm.keyExistsJson(vectors, string.concat(key, "[", vm.toString(n), "]"))) ++n;
    }

    function _at(string memory list, uint256 i) internal pure returns (string memory) {
        return string.concat(".", list, "[", vm.toString(i), "]");
    }

    function _uint(string memory at, string memory field) internal view returns (uint256) {
        return vm.parseJsonUint(vectors, string.concat(at, field));
    }

    /// A core holding the vector's guardian sets (each replaced set expiring when the vector says)
    /// and a verifier holding its keys; the clock ends at the vector's `now`.
    function _stateFor(string memory at) internal returns (MessageCore core, IThresholdTarget verifier) {
        string memory sets = string.concat(at, ".guardian_sets");
        uint256 count;
        while (vm.keyExistsJson(vectors, _at2(sets, count))) ++count;
        vm.warp(1_000);
        core = _newCore(vm.parseJsonAddressArray(vectors, string.concat(_at2(sets, 0), ".addresses")), EXPIRY);
        for (uint256 i = 1; i < count; ++i) {
            vm.warp(_uint(_at2(sets, i - 1), ".expiration_time") - EXPIRY);
            core.submitNewGuardianSet(vm.parseJsonAddressArray(vectors, string.concat(_at2(sets, i), ".addresses")));
        }
        verifier = _verifierBeside(core);
        string memory keys = string.concat(at, ".keys");
        for (uint256 i = 0; vm.keyExistsJson(vectors, _at2(keys, i)); ++i) {
            string memory key = _at2(keys, i);
            verifier.forceKey(
                uint256(bytes32(vm.parseJsonBytes(vectors, string.concat(key, ".px")))),
                uint8(_uint(key, ".parity")),
                uint32(_uint(key, ".guardian_set_index")),
                uint32(_uint(key, ".expiration_time"))
            );
        }
        vm.warp(_uint(at, ".now"));
    }

    function _at2(string memory list, uint256 i) internal pure returns (string memory) {
        return string.concat(list, "[", vm.toString(i), "]");
    }

    function _vaa(string memory at) internal view returns (bytes memory) {
        return vm.parseJsonBytes(vectors, string.concat(at, ".vaa"));
    }

    function test_vectors_validV2VaasVerifyWithTheV1Digest() public {
        uint256 n = _count(".valid");
        assertTrue(n >= 6, "valid vectors");
        for (uint256 i = 0; i < n; ++i) {
            string memory at = _at("valid", i);
            (, IThresholdTarget verifier) = _stateFor(at);
            (IMessageCore.VM memory parsed, bool valid, string memory reason) = verifier.parseAndVerifyVM(_vaa(at));
            assertTrue(valid, string.concat(vm.parseJsonString(vectors, string.concat(at, ".name")), ": ", reason));
            assertEq(parsed.hash, bytes32(vm.parseJsonBytes(vectors, string.concat(at, ".decoded.digest"))), "digest");
            assertEq(parsed.payload, vm.parseJsonBytes(vectors, string.concat(at, ".decoded.payload")), "payload");
            assertEq(parsed.sequence, _uint(at, ".decoded.sequence"), "sequence");
            assertEq(uint256(parsed.version), 2, "version");
        }
    }

    function _reason(string memory error) internal pure returns (string memory) {
        bytes32 h = keccak256(bytes(error));
        if (h == keccak256("unknown_threshold_key")) return "unknown threshold key";
        if (h == keccak256("threshold_key_expired")) return "threshold key expired";
        if (h == keccak256("guardian_set_expired")) return "guardian set has expired";
        if (h == keccak256("malformed_signature")) return "threshold signature malformed";
        if (h == keccak256("signer_mismatch")) return "VM signature invalid";
        if (h == keccak256("malformed_vaa")) return "VM version incompatible";
        return "(unmapped error class)";
    }

    function test_vectors_invalidV2VaasRefusedForTheSameReason() public {
        uint256 n = _count(".invalid");
        assertTrue(n >= 16, "invalid vectors");
        for (uint256 i = 0; i < n; ++i) {
            string memory at = _at("invalid", i);
            string memory name = vm.parseJsonString(vectors, string.concat(at, ".name"));
            string memory error = vm.parseJsonString(vectors, string.concat(at, ".error"));
            (, IThresholdTarget verifier) = _stateFor(at);
            try verifier.parseAndVerifyVM(_vaa(at)) returns (IMessageCore.VM memory, bool valid, string memory reason) {
                assertFalse(valid, string.concat(name, " verified"));
                assertEq(reason, _reason(error), name);
            } catch (bytes memory revertData) {
                assertEq(error, "malformed_vaa", string.concat(name, " reverted"));
                assertEq(bytes4(revertData), ThresholdKeys.MalformedVaa.selector, name);
            }
        }
    }

    /// The mulmod cases the C limb arithmetic is checked against hold for the EVM's mulmod too.
    function test_vectors_mulmodCases() public view {
        uint256 n = _count(".mulmod");
        assertTrue(n >= 10, "mulmod cases");
        for (uint256 i = 0; i < n; ++i) {
            string memory at = _at("mulmod", i);
            uint256 a = uint256(bytes32(vm.parseJsonBytes(vectors, string.concat(at, ".a"))));
            uint256 b = uint256(bytes32(vm.parseJsonBytes(vectors, string.concat(at, ".b"))));
            uint256 product = uint256(bytes32(vm.parseJsonBytes(vectors, string.concat(at, ".product"))));
            assertEq(mulmod(a, b, CURVE_ORDER), product, at);
        }
    }

    /// Changing any single byte of a valid vector makes it unverifiable.
    /// forge-config: default.fuzz.runs = 64
    function testFuzz_vectors_anyByteChangeBreaksVerification(uint256 at, uint8 flip) public {
        vm.assume(flip != 0);
        string memory vector = _at("valid", 0);
        (, IThresholdTarget verifier) = _stateFor(vector);
        bytes memory vaa = _vaa(vector);
        at = bound(at, 0, vaa.length - 1);
        vaa[at] = bytes1(uint8(vaa[at]) ^ flip);
        // A changed version byte sends MessageCore to its version-1 parser, which may find the
        // bytes truncated: a revert is a refusal too.
        try verifier.parseAndVerifyVM(vaa) returns (IMessageCore.VM memory, bool valid, string memory) {
            assertFalse(valid, "a changed VAA verified");
        } catch (bytes memory revertData) {
            assertEq(at, 0, "only a changed version byte reverts");
            assertEq(bytes4(revertData), ThresholdKeys.MalformedVaa.selector, "refused as malformed");
        }
    }

    // ------------------------------------------------------------------ governance and rotation

    /// A core whose set 0 is the vectors' 19 guardians and an empty verifier (chain 2, governance
    /// emitter 1/0x..04).
    function _deploy() internal returns (MessageCore core, IThresholdTarget verifier) {
        vm.warp(1_700_000_000);
        core = _newCore(vm.parseJsonAddressArray(v1Vectors, ".guardian_addresses"), GRACE);
        verifier = _verifierBeside(core);
    }

    /// A core of chain 2 with guardian set 0 = `guardians`, owned by the test.
    function _newCore(address[] memory guardians, uint32 expiry) internal virtual returns (MessageCore);

    /// What verifies version-2 VAAs beside `core` (the core itself, or a verifier of its own).
    function _verifierBeside(MessageCore core) internal virtual returns (IThresholdTarget);

    function _governance(uint256 i) internal view returns (bytes memory) {
        return vm.parseJsonBytes(vectors, string.concat(_at("governance", i), ".vaa"));
    }

    /// A governance-like VAA with `payload` signed by the first 13 vector guardians of `setIndex`.
    function _signedByVectorGuardians(uint32 setIndex, uint16 chain, bytes32 emitter, bytes memory payload)
        internal
        view
        returns (bytes memory vaa)
    {
        bytes memory body = vaaBody(chain, emitter, 500, payload);
        bytes32 digest = digestOf(body);
        vaa = abi.encodePacked(uint8(1), setIndex, uint8(13));
        for (uint256 i = 0; i < 13; ++i) {
            uint256 key = vm.parseJsonUint(v1Vectors, string.concat(".guardian_private_keys[", vm.toString(i), "]"));
            vaa = bytes.concat(vaa, signatureEntry(uint8(i), key, digest));
        }
        vaa = bytes.concat(vaa, body);
    }

    function _payload(uint256 i) internal view returns (bytes memory) {
        return vm.parseJsonBytes(vectors, string.concat(_at("governance", i), ".payload"));
    }

    function test_appendKey_thenAValidV2VaaVerifies() public {
        (, IThresholdTarget verifier) = _deploy();
        verifier.appendKey(_governance(0));
        assertEq(verifier.keyCount(), 1, "one key");
        ThresholdKeys.Key memory key = verifier.getKey(0);
        assertEq(key.px, uint256(bytes32(vm.parseJsonBytes(vectors, ".valid[0].keys[0].px"))), "px");
        assertEq(uint256(key.expirationTime), 0, "newest key does not expire");
        (, bool valid, string memory reason) = verifier.parseAndVerifyVM(_vaa(_at("valid", 0)));
        assertTrue(valid, reason);
    }

    function test_rotation_oldKeyValidUntilItsExpiryAndV1StillVerifies() public {
        (MessageCore core, IThresholdTarget verifier) = _deploy();
        verifier.appendKey(_governance(0));
        // The vectors' guardians again, as set 1; key 1 is appended by set 1.
        core.submitNewGuardianSet(vm.parseJsonAddressArray(v1Vectors, ".guardian_addresses"));
        uint256 rotatedAt = block.timestamp;
        verifier.appendKey(_governance(1));
        assertEq(uint256(verifier.getKey(0).expirationTime), rotatedAt + GRACE, "old key expires after the delay");
        bytes memory oldKeyVaa = _vaa(_at("valid", 0));
        bytes memory newKeyVaa = _vaa(_at("valid", 5));
        vm.warp(rotatedAt + GRACE);
        (, bool valid, string memory reason) = verifier.parseAndVerifyVM(oldKeyVaa);
        assertTrue(valid, string.concat("old key at its expiry: ", reason));
        vm.warp(rotatedAt + GRACE + 1);
        (, valid, reason) = verifier.parseAndVerifyVM(oldKeyVaa);
        assertFalse(valid, "old key after its expiry");
        assertEq(reason, "threshold key expired", "reason");
        (, valid, reason) = verifier.parseAndVerifyVM(newKeyVaa);
        assertTrue(valid, string.concat("new key: ", reason));
        // A v1 VAA signed by set 1 still verifies on the core, and through the verifier.
        bytes memory v1 = vm.parseJsonBytes(v1Vectors, ".valid[1].vaa");
        (, valid, reason) = core.parseAndVerifyVM(v1);
        assertTrue(valid, string.concat("v1 after rotation: ", reason));
        (, valid, reason) = verifier.parseAndVerifyVM(v1);
        assertTrue(valid, string.concat("v1 through the verifier after rotation: ", reason));
    }

    /// A VAA of any version but 2 gets exactly the core's verdict (the same return data, or the
    /// same revert): valid, a changed body, version 3, a truncated one, no bytes at all.
    function test_otherVersionsGetTheCoresVerdict() public {
        (MessageCore core, IThresholdTarget verifier) = _deploy();
        // The vectors' 13-of-19 VAAs are signed by their guardians as set 1.
        core.submitNewGuardianSet(vm.parseJsonAddressArray(v1Vectors, ".guardian_addresses"));
        bytes memory valid = vm.parseJsonBytes(v1Vectors, ".valid[1].vaa");
        bytes memory changed = bytes.concat(valid);
        changed[changed.length - 1] = bytes1(uint8(changed[changed.length - 1]) ^ 1);
        bytes memory version3 = bytes.concat(valid);
        version3[0] = 0x03;
        bytes[5] memory cases = [valid, changed, version3, bytes.concat(valid[0], valid[1]), bytes("")];
        for (uint256 i = 0; i < cases.length; ++i) {
            bytes memory call = abi.encodeCall(IMessageCore.parseAndVerifyVM, (cases[i]));
            (bool coreOk, bytes memory coreData) = address(core).staticcall(call);
            (bool ok, bytes memory data) = address(verifier).staticcall(call);
            assertEq(ok, coreOk, vm.toString(i));
            assertEq(data, coreData, vm.toString(i));
            if (i == 0) {
                (, bool isValid, string memory reason) = abi.decode(data, (IMessageCore.VM, bool, string));
                assertTrue(isValid, reason);
            }
        }
    }

    function test_keyRefusedOnceItsGuardianSetExpires() public {
        (MessageCore core, IThresholdTarget verifier) = _deploy();
        verifier.appendKey(_governance(0));
        core.submitNewGuardianSet(vm.parseJsonAddressArray(v1Vectors, ".guardian_addresses"));
        vm.warp(block.timestamp + GRACE + 1);
        (, bool valid, string memory reason) = verifier.parseAndVerifyVM(_vaa(_at("valid", 0)));
        assertFalse(valid, "key of an expired set verified");
        assertEq(reason, "guardian set has expired", "reason");
    }

    function test_appendKey_refusesAnExpiredOrReplacedSetAndReplays() public {
        (MessageCore core, IThresholdTarget verifier) = _deploy();
        verifier.appendKey(_governance(0));
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.WrongKeyIndex.selector, uint32(0), uint256(1)));
        verifier.appendKey(_governance(0));
        core.submitNewGuardianSet(vm.parseJsonAddressArray(v1Vectors, ".guardian_addresses"));
        // Key 1's payload signed by the replaced set 0 (still in its grace period on the core).
        bytes memory bySet0 = _signedByVectorGuardians(0, 1, GOVERNANCE, _payload(1));
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.NotCurrentGuardianSet.selector, uint32(0), uint32(1)));
        verifier.appendKey(bySet0);
        vm.warp(block.timestamp + GRACE + 1);
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.InvalidGovernanceVaa.selector, "guardian set has expired"));
        verifier.appendKey(bySet0);
    }

    function test_appendKey_refusesANonGovernanceEmitter() public {
        (, IThresholdTarget verifier) = _deploy();
        bytes memory vaa = _signedByVectorGuardians(0, 2, GOVERNANCE, _payload(0));
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.NotGovernance.selector, uint16(2), GOVERNANCE));
        verifier.appendKey(vaa);
        vaa = _signedByVectorGuardians(0, 1, bytes32(uint256(5)), _payload(0));
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.NotGovernance.selector, uint16(1), bytes32(uint256(5))));
        verifier.appendKey(vaa);
    }

    function test_appendKey_refusesBadPayloadsAndKeys() public {
        (, IThresholdTarget verifier) = _deploy();
        bytes memory good = _payload(0);
        bytes memory p = bytes.concat(good, hex"00");
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidGovernancePayload.selector);
        p = bytes.concat(good);
        p[31] = 0x54; // module "TST"
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidGovernancePayload.selector);
        p = bytes.concat(good);
        p[32] = 0x02; // action 2
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidGovernancePayload.selector);
        p = bytes.concat(good);
        p[34] = 0x04; // for chain 4, not this chain (2)
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidGovernancePayload.selector);
        p = bytes.concat(good);
        p[39] = 0x04; // not a compressed key
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidKey.selector);
        p = bytes.concat(good);
        // x above the curve order
        for (uint256 i = 40; i < 72; ++i) {
            p[i] = 0xff;
        }
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidKey.selector);
        p = bytes.concat(good);
        // x = 0: no point has it
        for (uint256 i = 40; i < 72; ++i) {
            p[i] = 0x00;
        }
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidKey.selector);
        p = bytes.concat(good);
        p[71] = 0x05; // x = 5: no point has it either
        for (uint256 i = 40; i < 71; ++i) {
            p[i] = 0x00;
        }
        _expectPayloadRefused(verifier, p, ThresholdKeys.InvalidKey.selector);
        p = bytes.concat(good);
        p[34] = 0x02; // for chain 2 (this chain) is accepted
        verifier.appendKey(_signedByVectorGuardians(0, 1, GOVERNANCE, p));
        assertEq(verifier.keyCount(), 1, "appended");
    }

    function _expectPayloadRefused(IThresholdTarget verifier, bytes memory payload, bytes4 selector) internal {
        bytes memory vaa = _signedByVectorGuardians(0, 1, GOVERNANCE, payload);
        vm.expectRevert(selector);
        verifier.appendKey(vaa);
    }

    function test_unknownIndexSAboveQAndZeroRAreRefused() public {
        (, IThresholdTarget verifier) = _deploy();
        verifier.appendKey(_governance(0));
        bytes memory vaa = _vaa(_at("valid", 0));
        bytes memory changed = bytes.concat(vaa);
        changed[4] = 0x01;
        (, bool valid, string memory reason) = verifier.parseAndVerifyVM(changed);
        assertFalse(valid, "unknown index");
        assertEq(reason, "unknown threshold key", "unknown index reason");
        changed = bytes.concat(vaa);
        for (uint256 i = 25; i < 57; ++i) {
            changed[i] = 0xff;
        }
        (, valid, reason) = verifier.parseAndVerifyVM(changed);
        assertEq(reason, "threshold signature malformed", "s >= Q");
        changed = bytes.concat(vaa);
        for (uint256 i = 5; i < 25; ++i) {
            changed[i] = 0x00;
        }
        (, valid, reason) = verifier.parseAndVerifyVM(changed);
        assertEq(reason, "threshold signature malformed", "r = 0");
        assertFalse(valid, "r = 0");
    }
}

/// On ThresholdVerifier, beside a MessageCore that holds the guardian sets.
contract ThresholdVerifierTest is ThresholdKeysTest {
    function _newCore(address[] memory guardians, uint32 expiry) internal override returns (MessageCore) {
        return new MessageCore(2, guardians, expiry, address(this));
    }

    function _verifierBeside(MessageCore core) internal override returns (IThresholdTarget) {
        return IThresholdTarget(address(new ThresholdVerifierHarness(core)));
    }
}

/// On MessageCore, which verifies version 2 in its own `parseAndVerifyVM`.
contract MessageCoreThresholdTest is ThresholdKeysTest {
    function _newCore(address[] memory guardians, uint32 expiry) internal override returns (MessageCore) {
        return new MessageCoreHarness(2, guardians, expiry, address(this));
    }

    function _verifierBeside(MessageCore core) internal pure override returns (IThresholdTarget) {
        return IThresholdTarget(address(core));
    }

    /// MessageCore verifies governance VAAs as version 1 only: a first byte of 2 is not sent to
    /// the threshold keys there.
    function test_appendKey_readsGovernanceAsVersionOne() public {
        (, IThresholdTarget verifier) = _deploy();
        bytes memory vaa = _signedByVectorGuardians(0, 1, GOVERNANCE, _payload(0));
        vaa[0] = 0x02;
        vm.expectRevert(abi.encodeWithSelector(ThresholdKeys.InvalidGovernanceVaa.selector, "VM version incompatible"));
        verifier.appendKey(vaa);
        assertEq(verifier.keyCount(), 0, "no key appended");
    }
}

/// The gas of one verification at 13 of 19 guardians: v1 on the core, v2 on the verifier
/// (`forge test --match-contract VerificationGasTest --gas-report`).
contract VerificationGasTest is Guardians {
    MessageCore internal core;
    ThresholdVerifier internal verifier;
    MessageCore internal coreV2;
    bytes internal v1;
    bytes internal v2;

    function setUp() public {
        string memory threshold = vm.readFile(string.concat(vm.projectRoot(), "/../tests/vectors/threshold.json"));
        string memory vaas = vm.readFile(string.concat(vm.projectRoot(), "/../tests/vectors/vaas.json"));
        vm.warp(1_767_225_600);
        address[] memory guardians = vm.parseJsonAddressArray(vaas, ".guardian_addresses");
        core = new MessageCore(2, guardians, 86_400, address(this));
        verifier = new ThresholdVerifier(core, 1, bytes32(uint256(4)));
        verifier.appendKey(vm.parseJsonBytes(threshold, ".governance[0].vaa"));
        core.submitNewGuardianSet(guardians); // the v1 vector is signed by set 1
        verifier.appendKey(vm.parseJsonBytes(threshold, ".governance[1].vaa"));
        coreV2 = new MessageCore(2, guardians, 86_400, address(this));
        coreV2.appendKey(vm.parseJsonBytes(threshold, ".governance[0].vaa"));
        coreV2.submitNewGuardianSet(guardians);
        coreV2.appendKey(vm.parseJsonBytes(threshold, ".governance[1].vaa"));
        v1 = vm.parseJsonBytes(vaas, ".valid[1].vaa"); // quorum_13_of_19_task_assigned
        v2 = vm.parseJsonBytes(threshold, ".valid[5].vaa"); // the same body, signed by key 1
    }

    function test_gas_v1_13of19() public view {
        (IMessageCore.VM memory parsed, bool valid,) = core.parseAndVerifyVM(v1);
        assertTrue(valid, "v1");
        assertEq(parsed.signatures.length, 13, "13 signatures");
    }

    function test_gas_v2_threshold() public view {
        (, bool valid, string memory reason) = verifier.parseAndVerifyVM(v2);
        assertTrue(valid, reason);
    }

    function test_gas_v2_onMessageCore() public view {
        (, bool valid, string memory reason) = coreV2.parseAndVerifyVM(v2);
        assertTrue(valid, reason);
    }
}
