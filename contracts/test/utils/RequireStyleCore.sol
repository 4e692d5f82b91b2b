// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../../src/interfaces/IMessageCore.sol";

/// @title RequireStyleCore
/// @notice A test double of Wormhole's Ethereum core as its documentation and interface describe
/// it, so that every receiver test also runs against a core that behaves like production's:
/// - parsing and part of verification refuse by reverting `Error(string)` instead of returning
///   `(vm, false, reason)`: a version other than 1, input shorter than it declares, a signature
///   that `ecrecover` rejects, guardian indices that do not ascend, an index outside the set
///   (a `v` byte of 229 or more overflows its +27 and panics);
/// - high-s signatures are accepted (no malleability check: replay protection is the receiver's
///   digest);
/// - a replaced guardian set stays valid for 24 hours, and only through its expiration second;
/// - there is no owner: the guardian set and the message fee change only through governance VAAs
///   (module "Core", action 2 guardian set upgrade, action 3 set message fee) signed by the
///   current set and emitted by the governance chain's governance contract, each applied once.
/// Written for fedrelay's tests; it is not Wormhole's code.
contract RequireStyleCore is IMessageCore {
    /// @dev "Core", left-padded to 32 bytes: the governance module of the core.
    bytes32 internal constant MODULE = bytes32(uint256(0x436f7265));
    uint32 internal constant SET_EXPIRY = 86400;

    uint16 private immutable _chainId;
    /// @notice Chain and emitter whose VAAs carry governance actions.
    uint16 public immutable governanceChainId;
    bytes32 public immutable governanceContract;

    uint256 private _messageFee;
    uint32 private _currentIndex;
    mapping(uint32 => GuardianSet) private _sets;
    mapping(address => uint64) private _sequences;
    mapping(bytes32 => bool) private _governanceDone;

    /// @notice Guardian set `index` became current.
    event GuardianSetAdded(uint32 indexed index);

    constructor(uint16 chainId_, address[] memory guardians, uint16 governanceChain, bytes32 governanceEmitter) {
        require(guardians.length > 0, "no guardians specified");
        _chainId = chainId_;
        governanceChainId = governanceChain;
        governanceContract = governanceEmitter;
        _sets[0].keys = guardians;
    }

    // ------------------------------------------------------------------ publication

    function publishMessage(uint32 nonce, bytes memory payload, uint8 consistencyLevel)
        external
        payable
        returns (uint64 sequence)
    {
        require(msg.value == _messageFee, "invalid fee");
        sequence = _sequences[msg.sender]++;
        emit LogMessagePublished(msg.sender, sequence, nonce, payload, consistencyLevel);
    }

    function nextSequence(address emitter) external view returns (uint64) {
        return _sequences[emitter];
    }

    function messageFee() external view returns (uint256) {
        return _messageFee;
    }

    function chainId() external view returns (uint16) {
        return _chainId;
    }

    function getCurrentGuardianSetIndex() external view returns (uint32) {
        return _currentIndex;
    }

    function getGuardianSet(uint32 index) external view returns (GuardianSet memory) {
        return _sets[index];
    }

    function governanceActionIsConsumed(bytes32 digest) external view returns (bool) {
        return _governanceDone[digest];
    }

    // ------------------------------------------------------------------ verification

    function parseAndVerifyVM(bytes calldata encodedVM)
        external
        view
        returns (VM memory vm, bool valid, string memory reason)
    {
        vm = parseVM(encodedVM);
        (valid, reason) = _verify(vm);
    }

    /// @notice Parse without verifying; reverts `Error(string)` on a version other than 1 or on
    /// input shorter than it declares.
    function parseVM(bytes calldata encoded) public pure returns (VM memory vm) {
        require(encoded.length >= 6, "VM truncated");
        vm.version = uint8(encoded[0]);
        require(vm.version == 1, "VM version incompatible");
        vm.guardianSetIndex = uint32(bytes4(encoded[1:5]));
        uint256 count = uint8(encoded[5]);
        uint256 body = 6 + 66 * count;
        require(encoded.length >= body + 51, "VM truncated");
        vm.signatures = new Signature[](count);
        for (uint256 i = 0; i < count; ++i) {
            bytes calldata entry = encoded[6 + 66 * i:6 + 66 * (i + 1)];
            vm.signatures[i] = Signature({
                guardianIndex: uint8(entry[0]),
                r: bytes32(entry[1:33]),
                s: bytes32(entry[33:65]),
                v: uint8(entry[65]) + 27 // checked: a byte of 229 or more panics
            });
        }
        bytes calldata b = encoded[body:];
        vm.hash = keccak256(abi.encodePacked(keccak256(b)));
        vm.timestamp = uint32(bytes4(b[0:4]));
        vm.nonce = uint32(bytes4(b[4:8]));
        vm.emitterChainId = uint16(bytes2(b[8:10]));
        vm.emitterAddress = bytes32(b[10:42]);
        vm.sequence = uint64(bytes8(b[42:50]));
        vm.consistencyLevel = uint8(b[50]);
        vm.payload = b[51:];
    }

    function _verify(VM memory vm) internal view returns (bool, string memory) {
        GuardianSet storage set = _sets[vm.guardianSetIndex];
        uint256 size = set.keys.length;
        if (size == 0) return (false, "invalid guardian set");
        if (vm.guardianSetIndex != _currentIndex && set.expirationTime < block.timestamp) {
            return (false, "guardian set has expired");
        }
        if (vm.signatures.length < size * 2 / 3 + 1) return (false, "no quorum");
        for (uint256 i = 0; i < vm.signatures.length; ++i) {
            Signature memory sig = vm.signatures[i];
            address signer = ecrecover(vm.hash, sig.v, sig.r, sig.s);
            require(signer != address(0), "ecrecover failed with signature");
            require(
                i == 0 || sig.guardianIndex > vm.signatures[i - 1].guardianIndex, "signature indices must be ascending"
            );
            require(sig.guardianIndex < size, "guardian index out of bounds");
            if (signer != set.keys[sig.guardianIndex]) return (false, "VM signature invalid");
        }
        return (true, "");
    }

    // ------------------------------------------------------------------ governance

    /// @notice Apply a guardian set upgrade: payload module "Core", action 2, chain (this one or
    /// 0), new set index (current + 1), key count, then the 20-byte keys.
    function submitNewGuardianSet(bytes calldata encoded) external {
        bytes memory payload = _governance(encoded, 2);
        require(payload.length >= 40, "invalid GuardianSetUpgrade");
        uint16 chain = _u16(payload, 33);
        require(chain == _chainId || chain == 0, "invalid Chain");
        uint32 index = uint32(_word(payload, 35) >> 224);
        uint256 count = uint8(payload[39]);
        require(payload.length == 40 + 20 * count, "invalid GuardianSetUpgrade");
        require(count > 0, "new guardian set is empty");
        require(index == _currentIndex + 1, "index must increase in steps of 1");
        address[] memory keys = new address[](count);
        for (uint256 i = 0; i < count; ++i) {
            keys[i] = address(uint160(_word(payload, 40 + 20 * i) >> 96));
        }
        _sets[_currentIndex].expirationTime = uint32(block.timestamp) + SET_EXPIRY;
        _sets[index].keys = keys;
        _currentIndex = index;
        emit GuardianSetAdded(index);
    }

    /// @notice Apply a message fee change: payload module "Core", action 3, chain (this one),
    /// then the fee as a uint256.
    function submitSetMessageFee(bytes calldata encoded) external {
        bytes memory payload = _governance(encoded, 3);
        require(payload.length == 67, "invalid SetMessageFee");
        require(_u16(payload, 33) == _chainId, "invalid Chain");
        _messageFee = _word(payload, 35);
    }

    /// @dev Verify a governance VAA for `action`, mark it applied and return its payload.
    function _governance(bytes calldata encoded, uint8 action) internal returns (bytes memory payload) {
        VM memory vm = parseVM(encoded);
        (bool valid, string memory reason) = _verify(vm);
        require(valid, reason);
        require(vm.guardianSetIndex == _currentIndex, "not signed by current guardian set");
        require(vm.emitterChainId == governanceChainId, "wrong governance chain");
        require(vm.emitterAddress == governanceContract, "wrong governance contract");
        require(!_governanceDone[vm.hash], "governance action already consumed");
        payload = vm.payload;
        require(payload.length >= 35, "governance payload truncated");
        require(bytes32(_word(payload, 0)) == MODULE, "invalid Module");
        require(uint8(payload[32]) == action, "invalid governance action");
        _governanceDone[vm.hash] = true;
    }

    function _word(bytes memory data, uint256 at) private pure returns (uint256 value) {
        // callers check the length first; bytes read past the end are shifted out
        assembly ("memory-safe") {
            value := mload(add(add(data, 32), at))
        }
    }

    function _u16(bytes memory data, uint256 at) private pure returns (uint16) {
        return uint16(_word(data, at) >> 240);
    }
}
