// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "./interfaces/IMessageCore.sol";
import {Owned} from "./base/Owned.sol";
import {ThresholdKeys} from "./base/ThresholdKeys.sol";
import {VaaBody} from "./libraries/VaaBody.sol";

/// @title MessageCore
/// @notice fedrelay's own implementation of the Wormhole core subset in `IMessageCore`: message
/// publication with per-emitter sequences, and VAA verification against rotating guardian sets:
/// version 1 (a quorum of guardian signatures) and version 2 (one threshold signature under a key
/// appended by a governance VAA, `ThresholdKeys`).
/// @dev Devnet deploys this contract; production points receivers at the real Wormhole core.
/// Guardian sets rotate by the owner; a replaced set stays valid for `guardianSetExpiry` seconds.
contract MessageCore is IMessageCore, Owned, ThresholdKeys {
    /// @dev secp256k1 group order divided by two; signatures with a larger `s` are malleable.
    uint256 internal constant HALF_CURVE_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    uint256 internal constant SIGNATURE_SIZE = 66;
    uint256 internal constant BODY_HEADER_SIZE = VaaBody.FIXED_SIZE;
    /// @notice Wormhole's governance emitter, which signs threshold keys in (chain 1, 0x00…04).
    uint16 public constant GOVERNANCE_CHAIN = 1;
    bytes32 public constant GOVERNANCE_EMITTER = bytes32(uint256(4));

    uint16 private immutable _chainId;
    /// @notice Seconds a replaced guardian set stays valid.
    uint32 public immutable guardianSetExpiry;

    uint256 private _messageFee;
    uint32 private _currentIndex;
    mapping(uint32 => GuardianSet) private _guardianSets;
    mapping(address => uint64) private _sequences;

    /// @notice A new guardian set became current.
    event GuardianSetAdded(uint32 indexed index, address[] keys, uint32 previousExpiresAt);
    /// @notice The publication fee changed.
    event MessageFeeChanged(uint256 fee);
    /// @notice Accumulated fees were sent to `to`.
    event FeesCollected(address indexed to, uint256 amount);

    /// @notice A guardian set must hold at least one key, none zero, none repeated.
    error InvalidGuardianSet();
    /// @notice `msg.value` differs from the publication fee.
    error WrongMessageFee(uint256 paid, uint256 fee);
    /// @notice Sending collected fees failed.
    error FeeTransferFailed();

    /// @param chainId_ Wormhole chain id of this chain.
    /// @param initialGuardians Keys of guardian set 0.
    /// @param guardianSetExpiry_ Seconds a replaced guardian set stays valid.
    /// @param initialOwner Account allowed to rotate guardians and set the fee.
    constructor(uint16 chainId_, address[] memory initialGuardians, uint32 guardianSetExpiry_, address initialOwner)
        Owned(initialOwner)
    {
        _checkKeys(initialGuardians);
        _chainId = chainId_;
        guardianSetExpiry = guardianSetExpiry_;
        _guardianSets[0].keys = initialGuardians;
        emit GuardianSetAdded(0, initialGuardians, 0);
    }

    // ------------------------------------------------------------------ publication

    /// @inheritdoc IMessageCore
    function publishMessage(uint32 nonce, bytes memory payload, uint8 consistencyLevel)
        external
        payable
        returns (uint64 sequence)
    {
        if (msg.value != _messageFee) revert WrongMessageFee(msg.value, _messageFee);
        sequence = _sequences[msg.sender]++;
        emit LogMessagePublished(msg.sender, sequence, nonce, payload, consistencyLevel);
    }

    /// @notice The sequence the next message from `emitter` will carry.
    function nextSequence(address emitter) external view returns (uint64) {
        return _sequences[emitter];
    }

    /// @inheritdoc IMessageCore
    function messageFee() external view returns (uint256) {
        return _messageFee;
    }

    /// @inheritdoc IMessageCore
    function chainId() external view returns (uint16) {
        return _chainId;
    }

    // ------------------------------------------------------------------ verification

    /// @inheritdoc IMessageCore
    /// @dev A first byte of 2 is a version-2 VAA, verified against the threshold keys; anything
    /// else is read as version 1 (and refused unless it is 1).
    function parseAndVerifyVM(bytes calldata encodedVM)
        external
        view
        returns (VM memory vm, bool valid, string memory reason)
    {
        if (encodedVM.length > 0 && uint8(encodedVM[0]) == 2) return _parseAndVerifyThreshold(encodedVM);
        vm = parseVM(encodedVM);
        (valid, reason) = verifyVM(vm);
    }

    /// @notice Parse a Wormhole v1 VAA without verifying it; reverts on truncated input.
    function parseVM(bytes calldata encoded) public pure returns (VM memory vm) {
        if (encoded.length < 6) revert MalformedVaa(encoded.length, 6);
        vm.version = uint8(encoded[0]);
        vm.guardianSetIndex = uint32(bytes4(encoded[1:5]));
        uint256 count = uint8(encoded[5]);
        uint256 bodyStart = 6 + SIGNATURE_SIZE * count;
        if (encoded.length < bodyStart + BODY_HEADER_SIZE) {
            revert MalformedVaa(encoded.length, bodyStart + BODY_HEADER_SIZE);
        }
        vm.signatures = new Signature[](count);
        for (uint256 i = 0; i < count; ++i) {
            uint256 at = 6 + SIGNATURE_SIZE * i;
            Signature memory signature = vm.signatures[i];
            signature.guardianIndex = uint8(encoded[at]);
            signature.r = bytes32(encoded[at + 1:at + 33]);
            signature.s = bytes32(encoded[at + 33:at + 65]);
            unchecked {
                // The VAA carries 0/1; ecrecover wants 27/28. Anything else fails verification.
                signature.v = uint8(encoded[at + 65]) + 27;
            }
        }
        VaaBody.read(encoded[bodyStart:], vm);
    }

    /// @notice Check a parsed VAA's version, guardian set, quorum and signatures.
    /// @return valid Whether the VAA is valid.
    /// @return reason Why not, when it is not.
    function verifyVM(VM memory vm) public view returns (bool valid, string memory reason) {
        if (vm.version != 1) return (false, "VM version incompatible");
        GuardianSet storage set = _guardianSets[vm.guardianSetIndex];
        uint256 size = set.keys.length;
        if (size == 0) return (false, "invalid guardian set");
        // Like Wormhole's core: a replaced set is still valid at its expiration second.
        if (vm.guardianSetIndex != _currentIndex && block.timestamp > set.expirationTime) {
            return (false, "guardian set has expired");
        }
        if (vm.signatures.length < quorum(size)) return (false, "no quorum");
        return _verifySignatures(vm.hash, vm.signatures, set.keys);
    }

    /// @notice Signatures needed from a guardian set of `size` keys: floor(2n/3) + 1.
    function quorum(uint256 size) public pure returns (uint256) {
        return (size * 2) / 3 + 1;
    }

    function _verifySignatures(bytes32 digest, Signature[] memory signatures, address[] storage keys)
        private
        view
        returns (bool, string memory)
    {
        uint256 next = 0; // lowest guardian index the next signature may use
        for (uint256 i = 0; i < signatures.length; ++i) {
            Signature memory signature = signatures[i];
            uint256 index = signature.guardianIndex;
            if (index < next) return (false, "signature indices must be ascending");
            if (index >= keys.length) return (false, "guardian index out of bounds");
            if (uint256(signature.s) > HALF_CURVE_ORDER) return (false, "signature s value too high");
            if (signature.v != 27 && signature.v != 28) return (false, "invalid signature v");
            address signer = ecrecover(digest, signature.v, signature.r, signature.s);
            if (signer == address(0) || signer != keys[index]) return (false, "VM signature invalid");
            next = index + 1;
        }
        return (true, "");
    }

    // ------------------------------------------------------------------ guardian sets

    /// @inheritdoc IMessageCore
    function getCurrentGuardianSetIndex() external view returns (uint32) {
        return _currentIndex;
    }

    /// @inheritdoc IMessageCore
    function getGuardianSet(uint32 index) external view returns (GuardianSet memory) {
        return _guardianSets[index];
    }

    /// @notice Make `keys` the current guardian set; the replaced set expires after
    /// `guardianSetExpiry` seconds.
    function submitNewGuardianSet(address[] calldata keys) external onlyOwner {
        _checkKeys(keys);
        uint32 previous = _currentIndex;
        // In 256 bits, saturating at the largest u32 time: an expiry near type(uint32).max (a set
        // that practically never expires) must not overflow and block every later rotation.
        uint256 sum = block.timestamp + guardianSetExpiry;
        uint32 expiresAt = sum > type(uint32).max ? type(uint32).max : uint32(sum);
        _guardianSets[previous].expirationTime = expiresAt;
        uint32 index = previous + 1;
        _currentIndex = index;
        _guardianSets[index].keys = keys;
        emit GuardianSetAdded(index, keys, expiresAt);
    }

    /// @notice Set the fee `publishMessage` charges.
    function setMessageFee(uint256 fee) external onlyOwner {
        _messageFee = fee;
        emit MessageFeeChanged(fee);
    }

    /// @notice Send the fees collected so far to `to`.
    function collectFees(address payable to) external onlyOwner {
        uint256 amount = address(this).balance;
        emit FeesCollected(to, amount);
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert FeeTransferFailed();
    }

    // ------------------------------------------------------------------ threshold keys' hooks

    function _verifyGovernance(bytes calldata vaa)
        internal
        view
        override
        returns (VM memory vm, bool valid, string memory reason)
    {
        vm = parseVM(vaa);
        (valid, reason) = verifyVM(vm);
    }

    function _currentGuardianSet() internal view override returns (uint32) {
        return _currentIndex;
    }

    function _guardianSetExpiration(uint32 index) internal view override returns (uint32) {
        return _guardianSets[index].expirationTime;
    }

    function _governance() internal view override returns (uint16, bytes32, uint16) {
        return (GOVERNANCE_CHAIN, GOVERNANCE_EMITTER, _chainId);
    }

    function _checkKeys(address[] memory keys) private pure {
        if (keys.length == 0 || keys.length > 255) revert InvalidGuardianSet();
        for (uint256 i = 0; i < keys.length; ++i) {
            if (keys[i] == address(0)) revert InvalidGuardianSet();
            for (uint256 j = 0; j < i; ++j) {
                if (keys[j] == keys[i]) revert InvalidGuardianSet();
            }
        }
    }
}
