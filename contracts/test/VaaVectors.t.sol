// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../src/interfaces/IMessageCore.sol";
import {ThresholdKeys} from "../src/base/ThresholdKeys.sol";
import {MessageCore} from "../src/MessageCore.sol";
import {Test} from "./utils/Test.sol";

/// MessageCore against the shared VAA vectors of tests/vectors/vaas.json (signed in Python).
contract VaaVectorsTest is Test {
    uint32 internal constant EXPIRY = 1;
    string internal vectors;

    function setUp() public {
        vectors = vm.readFile(string.concat(vm.projectRoot(), "/../tests/vectors/vaas.json"));
    }

    function _count(string memory key) internal view returns (uint256 n) {
        while (vm.keyExistsJson(vectors, string.concat(key, "[", vm.toString(n), "]"))) ++n;
    }

    function _at(string memory list, uint256 i) internal pure returns (string memory) {
        return string.concat(".", list, "[", vm.toString(i), "]");
    }

    /// A core holding the vector's guardian sets at their indices (placeholders in between),
    /// with each replaced set expiring when the vector says; the clock ends at the vector's `now`.
    function _coreFor(string memory at) internal returns (MessageCore core) {
        string memory sets = string.concat(at, ".guardian_sets");
        uint256 count = _count(sets);
        uint256 last = vm.parseJsonUint(vectors, string.concat(_at(sets, count - 1), ".index"));
        address[][] memory keys = new address[][](last + 1);
        uint256[] memory expires = new uint256[](last + 1);
        for (uint256 i = 0; i < count; ++i) {
            string memory set = string.concat(sets, "[", vm.toString(i), "]");
            uint256 index = vm.parseJsonUint(vectors, string.concat(set, ".index"));
            keys[index] = vm.parseJsonAddressArray(vectors, string.concat(set, ".addresses"));
            expires[index] = vm.parseJsonUint(vectors, string.concat(set, ".expiration_time"));
        }
        address[] memory placeholder = new address[](1);
        placeholder[0] = address(0xDEAD);
        vm.warp(1_000);
        core = new MessageCore(2, keys[0].length > 0 ? keys[0] : placeholder, EXPIRY, address(this));
        for (uint256 index = 1; index <= last; ++index) {
            if (expires[index - 1] != 0) vm.warp(expires[index - 1] - EXPIRY);
            core.submitNewGuardianSet(keys[index].length > 0 ? keys[index] : placeholder);
        }
        vm.warp(vm.parseJsonUint(vectors, string.concat(at, ".now")));
    }

    function _vaa(string memory at) internal view returns (bytes memory) {
        return vm.parseJsonBytes(vectors, string.concat(at, ".vaa"));
    }

    function test_vectors_validVaasVerifyWithTheSameDigest() public {
        uint256 n = _count(".valid");
        assertTrue(n >= 7, "valid VAA vectors");
        for (uint256 i = 0; i < n; ++i) {
            string memory at = _at("valid", i);
            MessageCore core = _coreFor(at);
            (IMessageCore.VM memory parsed, bool valid, string memory reason) = core.parseAndVerifyVM(_vaa(at));
            assertTrue(valid, string.concat(vm.parseJsonString(vectors, string.concat(at, ".name")), ": ", reason));
            assertEq(parsed.hash, bytes32(vm.parseJsonBytes(vectors, string.concat(at, ".decoded.digest"))), "digest");
            assertEq(parsed.sequence, vm.parseJsonUint(vectors, string.concat(at, ".decoded.sequence")), "sequence");
            assertEq(parsed.payload, vm.parseJsonBytes(vectors, string.concat(at, ".decoded.payload")), "payload");
        }
    }

    /// The core's reasons for each error class the Python verifier names.
    function _reasons(string memory error) internal pure returns (string memory a, string memory b) {
        bytes32 h = keccak256(bytes(error));
        if (h == keccak256("malformed_vaa")) return ("VM version incompatible", "");
        if (h == keccak256("unknown_guardian_set")) return ("invalid guardian set", "");
        if (h == keccak256("guardian_set_expired")) return ("guardian set has expired", "");
        if (h == keccak256("no_quorum")) return ("no quorum", "");
        if (h == keccak256("signature_indices_not_ascending")) return ("signature indices must be ascending", "");
        if (h == keccak256("guardian_index_out_of_range")) return ("guardian index out of bounds", "");
        if (h == keccak256("high_s")) return ("signature s value too high", "");
        if (h == keccak256("malformed_signature")) return ("invalid signature v", "VM signature invalid");
        if (h == keccak256("signer_mismatch")) return ("VM signature invalid", "");
        return ("(unmapped error class)", "");
    }

    function test_vectors_invalidVaasRejectedForTheSameReason() public {
        uint256 n = _count(".invalid");
        assertTrue(n >= 16, "invalid VAA vectors");
        for (uint256 i = 0; i < n; ++i) {
            string memory at = _at("invalid", i);
            string memory name = vm.parseJsonString(vectors, string.concat(at, ".name"));
            string memory error = vm.parseJsonString(vectors, string.concat(at, ".error"));
            (string memory a, string memory b) = _reasons(error);
            MessageCore core = _coreFor(at);
            try core.parseAndVerifyVM(_vaa(at)) returns (IMessageCore.VM memory, bool valid, string memory reason) {
                assertFalse(valid, string.concat(name, " verified"));
                bytes32 got = keccak256(bytes(reason));
                assertTrue(got == keccak256(bytes(a)) || got == keccak256(bytes(b)), string.concat(name, ": ", reason));
            } catch (bytes memory revertData) {
                assertEq(error, "malformed_vaa", string.concat(name, " reverted"));
                assertEq(bytes4(revertData), ThresholdKeys.MalformedVaa.selector, name);
            }
        }
    }

    /// Changing any single byte of a valid single-set vector makes it unverifiable.
    /// (Each run deploys a core and parses JSON, so fewer runs than the default.)
    /// forge-config: default.fuzz.runs = 64
    function testFuzz_vectors_anyByteChangeBreaksVerification(uint256 which, uint256 at, uint8 flip) public {
        vm.assume(flip != 0);
        string memory vector = _at("valid", bound(which, 0, 5));
        MessageCore core = _coreFor(vector);
        bytes memory vaa = _vaa(vector);
        at = bound(at, 0, vaa.length - 1);
        vaa[at] = bytes1(uint8(vaa[at]) ^ flip);
        try core.parseAndVerifyVM(vaa) returns (IMessageCore.VM memory, bool valid, string memory) {
            assertFalse(valid, "a changed VAA verified");
        } catch (bytes memory revertData) {
            assertEq(bytes4(revertData), ThresholdKeys.MalformedVaa.selector, "unexpected revert");
        }
    }
}
