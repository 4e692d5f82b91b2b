// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../interfaces/IMessageCore.sol";
import {VaaBody} from "../libraries/VaaBody.sol";

/// @title ThresholdKeys
/// @notice Threshold keys and the verification of version-2 VAAs (docs/protocol.md, section 2a):
/// one Schnorr signature standing for a guardian set, checked with one `ecrecover`.
/// @dev Layout: `u8 2 | u32 tssIndex | r (20-byte address of the nonce point) | s u256 | body`.
/// With the key `P` (`px`, `parity`) and `digest = keccak256(keccak256(body))`:
/// `e = keccak256(px ‖ parity ‖ digest ‖ r)`, and the signature is valid when `s < Q`, `r ≠ 0` and
/// `ecrecover(Q - px·s mod Q, 27 + parity, px, px·e mod Q) == r`, i.e. `address(s·G + e·P) == r`.
///
/// Keys are appended in index order by v1 governance VAAs: emitted by the governance emitter,
/// signed by the current guardian set (the key stands for that set), payload
/// `module "TSS" (32, right-aligned) | action 1 | chain u16 (0 = all) | index u32 |
/// compressed key 33 | expiry delay u32`. Appending a key makes the previous one expire after the
/// delay; a key whose guardian set has expired is refused too.
///
/// Where the guardian sets live and how a governance VAA is verified are the deriving contract's:
/// MessageCore holds them itself, ThresholdVerifier asks a core.
abstract contract ThresholdKeys {
    /// @dev The order of secp256k1.
    uint256 internal constant Q = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141;
    /// @dev "TSS", right-aligned in 32 bytes as Wormhole's governance modules are.
    bytes32 internal constant MODULE = bytes32(uint256(0x545353));
    uint8 internal constant ACTION_APPEND_KEY = 1;
    uint256 internal constant APPEND_KEY_SIZE = 76;
    uint256 internal constant THRESHOLD_HEADER_SIZE = 57;

    /// @notice A threshold key: x coordinate, y parity, the guardian set it stands for, and when it
    /// stops being accepted (0 while it is the newest).
    struct Key {
        uint256 px;
        uint8 parity;
        uint32 guardianSetIndex;
        uint32 expirationTime;
    }

    Key[] internal _keys;

    /// @notice Key `index` was appended for guardian set `guardianSetIndex`; the previous key
    /// expires at `previousExpiresAt` (0 when there was none).
    event KeyAppended(
        uint32 indexed index, uint256 px, uint8 parity, uint32 guardianSetIndex, uint32 previousExpiresAt
    );

    /// @notice The VAA bytes are too short for what they declare.
    error MalformedVaa(uint256 length, uint256 needed);
    /// @notice The governance VAA did not verify.
    error InvalidGovernanceVaa(string reason);
    /// @notice The VAA does not come from the governance emitter.
    error NotGovernance(uint16 chain, bytes32 emitter);
    /// @notice The governance VAA is not signed by the current guardian set.
    error NotCurrentGuardianSet(uint32 signedBy, uint32 current);
    /// @notice The payload is not a TSS append-key action for this chain.
    error InvalidGovernancePayload();
    /// @notice Keys are appended in index order.
    error WrongKeyIndex(uint32 index, uint256 expected);
    /// @notice The key is not a compressed secp256k1 point with x below the curve order.
    error InvalidKey();

    // ------------------------------------------------------------------ what the deriver provides

    /// @dev Parse and verify a v1 governance VAA.
    function _verifyGovernance(bytes calldata vaa)
        internal
        view
        virtual
        returns (IMessageCore.VM memory vm, bool valid, string memory reason);

    /// @dev The current guardian set's index.
    function _currentGuardianSet() internal view virtual returns (uint32);

    /// @dev When guardian set `index` stops being valid (0 for the current set).
    function _guardianSetExpiration(uint32 index) internal view virtual returns (uint32);

    /// @dev The emitter chain and address of governance VAAs, and this chain's Wormhole id.
    function _governance() internal view virtual returns (uint16 chain, bytes32 emitter, uint16 thisChain);

    // ------------------------------------------------------------------ keys

    /// @notice The number of keys appended so far (the next key's index).
    function keyCount() external view returns (uint256) {
        return _keys.length;
    }

    /// @notice Key `index`.
    function getKey(uint32 index) external view returns (Key memory) {
        return _keys[index];
    }

    /// @notice Append the threshold key carried by a governance VAA (see the contract's notes).
    function appendKey(bytes calldata governanceVaa) external {
        (IMessageCore.VM memory vm, bool valid, string memory reason) = _verifyGovernance(governanceVaa);
        if (!valid) revert InvalidGovernanceVaa(reason);
        // Governance speaks for the guardian set itself: its signatures, not a key it appointed.
        if (vm.version != 1) revert InvalidGovernanceVaa("VM version incompatible");
        (uint16 governanceChain, bytes32 governanceEmitter, uint16 thisChain) = _governance();
        if (vm.emitterChainId != governanceChain || vm.emitterAddress != governanceEmitter) {
            revert NotGovernance(vm.emitterChainId, vm.emitterAddress);
        }
        uint32 current = _currentGuardianSet();
        if (vm.guardianSetIndex != current) revert NotCurrentGuardianSet(vm.guardianSetIndex, current);
        bytes memory p = vm.payload;
        if (p.length != APPEND_KEY_SIZE) revert InvalidGovernancePayload();
        bytes32 module;
        uint256 word1;
        uint256 word2;
        uint256 word3;
        assembly ("memory-safe") {
            module := mload(add(p, 32))
            word1 := mload(add(p, 64)) // action 1 | chain 2 | index 4 | prefix 1 | px[0:24]
            word2 := mload(add(p, 96)) // px[24:32] | delay 4 | (past the end)
            word3 := mload(add(p, 72)) // px starts at payload offset 40
        }
        uint16 chain = uint16(word1 >> 232);
        if (module != MODULE || uint8(word1 >> 248) != ACTION_APPEND_KEY || (chain != 0 && chain != thisChain)) {
            revert InvalidGovernancePayload();
        }
        uint32 index = uint32(word1 >> 200);
        if (index != _keys.length) revert WrongKeyIndex(index, _keys.length);
        uint8 prefix = uint8(word1 >> 192);
        uint256 px = word3;
        uint32 delay = uint32(word2 >> 160);
        if ((prefix != 2 && prefix != 3) || px == 0 || px >= Q) revert InvalidKey();
        uint8 parity = prefix - 2;
        // The key is a curve point iff a point with this x recovers from it.
        if (ecrecover(bytes32(uint256(1)), 27 + parity, bytes32(px), bytes32(uint256(1))) == address(0)) {
            revert InvalidKey();
        }
        uint32 previousExpiresAt;
        if (index > 0) {
            // In 256 bits, saturating at the largest u32 time, as guardian sets do.
            uint256 sum = block.timestamp + delay;
            previousExpiresAt = sum > type(uint32).max ? type(uint32).max : uint32(sum);
            _keys[index - 1].expirationTime = previousExpiresAt;
        }
        _keys.push(Key({px: px, parity: parity, guardianSetIndex: current, expirationTime: 0}));
        emit KeyAppended(index, px, parity, current, previousExpiresAt);
    }

    // ------------------------------------------------------------------ verification

    /// @dev Parse a version-2 VAA and verify its threshold signature: `vm.guardianSetIndex` is the
    /// key's guardian set and `vm.signatures` is empty. Reverts `MalformedVaa` on truncated input.
    function _parseAndVerifyThreshold(bytes calldata encoded)
        internal
        view
        returns (IMessageCore.VM memory vm, bool valid, string memory reason)
    {
        if (encoded.length < THRESHOLD_HEADER_SIZE + VaaBody.FIXED_SIZE) {
            revert MalformedVaa(encoded.length, THRESHOLD_HEADER_SIZE + VaaBody.FIXED_SIZE);
        }
        vm.version = uint8(encoded[0]);
        VaaBody.read(encoded[THRESHOLD_HEADER_SIZE:], vm);
        if (vm.version != 2) return (vm, false, "VM version incompatible");
        (valid, reason, vm.guardianSetIndex) = _verifyThreshold(encoded, vm.hash);
    }

    function _verifyThreshold(bytes calldata encoded, bytes32 digest)
        private
        view
        returns (bool, string memory, uint32)
    {
        uint32 index = uint32(bytes4(encoded[1:5]));
        if (index >= _keys.length) return (false, "unknown threshold key", 0);
        Key memory key = _keys[index];
        // Like guardian sets: a superseded key is still valid at its expiration second.
        if (key.expirationTime != 0 && block.timestamp > key.expirationTime) {
            return (false, "threshold key expired", key.guardianSetIndex);
        }
        if (
            key.guardianSetIndex != _currentGuardianSet()
                && block.timestamp > _guardianSetExpiration(key.guardianSetIndex)
        ) return (false, "guardian set has expired", key.guardianSetIndex);
        address r = address(bytes20(encoded[5:25]));
        uint256 s = uint256(bytes32(encoded[25:57]));
        if (s >= Q || r == address(0)) return (false, "threshold signature malformed", key.guardianSetIndex);
        uint256 e = uint256(keccak256(abi.encodePacked(key.px, key.parity, digest, r)));
        address recovered = ecrecover(
            bytes32(Q - mulmod(key.px, s, Q)), 27 + key.parity, bytes32(key.px), bytes32(mulmod(key.px, e, Q))
        );
        if (recovered != r) return (false, "VM signature invalid", key.guardianSetIndex);
        return (true, "", key.guardianSetIndex);
    }
}
