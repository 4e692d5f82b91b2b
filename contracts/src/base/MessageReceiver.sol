// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../interfaces/IMessageCore.sol";
import {PayloadCodec} from "../libraries/PayloadCodec.sol";
import {Owned} from "./Owned.sol";

/// @title MessageReceiver
/// @notice What every fedrelay receiver does with an incoming VAA before acting on it: signatures
/// and quorum through the core, emitter against the registered peer of its source chain, target
/// chain and address against itself, and the digest consumed exactly once. Also publishes this
/// contract's own messages through the core.
abstract contract MessageReceiver is Owned {
    /// @notice The Wormhole core (or fedrelay's MessageCore) this contract trusts.
    IMessageCore public immutable core;
    /// @notice Wormhole chain id of this chain, read from the core at deployment.
    uint16 public immutable chainId;
    /// @notice Consistency level requested for published messages.
    uint8 public immutable consistencyLevel;

    /// @notice Registered peer (emitter and target address) per Wormhole chain id.
    mapping(uint16 => bytes32) public peers;
    /// @notice VAA digests already acted upon.
    mapping(bytes32 => bool) public consumed;

    /// @notice The peer for `chain` was set to `peer` (zero removes it).
    event PeerSet(uint16 indexed chain, bytes32 peer);
    /// @notice A VAA was verified and consumed.
    event MessageConsumed(bytes32 indexed digest, uint16 indexed emitterChain, uint64 sequence);

    /// @notice The core rejected the VAA's signatures or guardian set.
    error InvalidVaa(string reason);
    /// @notice The VAA's digest was consumed before: the message was already delivered.
    error AlreadyConsumed(bytes32 digest);
    /// @notice The emitter is not the registered peer for its chain.
    error UnknownEmitter(uint16 chain, bytes32 emitter);
    /// @notice The payload targets another chain.
    error WrongTargetChain(uint16 targetChain);
    /// @notice The payload targets another contract.
    error WrongTargetAddress(bytes32 targetAddress);
    /// @notice A peer cannot be set for this contract's own chain id or chain 0.
    error InvalidPeerChain(uint16 chain);
    /// @notice `msg.value` does not pay exactly the core's fee for the messages published.
    error WrongMessageFee(uint256 paid, uint256 required);

    constructor(IMessageCore core_, uint8 consistencyLevel_, address initialOwner) Owned(initialOwner) {
        core = core_;
        chainId = core_.chainId();
        consistencyLevel = consistencyLevel_;
    }

    /// @notice Register `peer` as the trusted emitter and target for `chain` (zero removes it).
    function setPeer(uint16 chain, bytes32 peer) external onlyOwner {
        if (chain == 0 || chain == chainId) revert InvalidPeerChain(chain);
        peers[chain] = peer;
        emit PeerSet(chain, peer);
    }

    /// @notice Whether the VAA with `digest` has been consumed here.
    function isConsumed(bytes32 digest) external view returns (bool) {
        return consumed[digest];
    }

    /// @dev Verify `encoded` completely, mark its digest consumed and return it with its header.
    function _consume(bytes calldata encoded)
        internal
        returns (IMessageCore.VM memory vm, PayloadCodec.Header memory header)
    {
        bool valid;
        string memory reason;
        (vm, valid, reason) = core.parseAndVerifyVM(encoded);
        if (!valid) revert InvalidVaa(reason);
        bytes32 peer = peers[vm.emitterChainId];
        if (peer == bytes32(0) || peer != vm.emitterAddress) {
            revert UnknownEmitter(vm.emitterChainId, vm.emitterAddress);
        }
        if (consumed[vm.hash]) revert AlreadyConsumed(vm.hash);
        header = PayloadCodec.decodeHeader(vm.payload);
        if (header.targetChain != chainId) revert WrongTargetChain(header.targetChain);
        if (header.targetAddress != PayloadCodec.toBytes32(address(this))) {
            revert WrongTargetAddress(header.targetAddress);
        }
        consumed[vm.hash] = true;
        emit MessageConsumed(vm.hash, vm.emitterChainId, vm.sequence);
    }

    /// @dev Require `msg.value` to pay the core's fee for `messages` publications.
    function _requireFees(uint256 messages) internal view returns (uint256 fee) {
        fee = core.messageFee();
        if (msg.value != fee * messages) revert WrongMessageFee(msg.value, fee * messages);
    }

    /// @dev Publish `payload` through the core, paying `fee`.
    function _publish(bytes memory payload, uint256 fee) internal returns (uint64 sequence) {
        sequence = core.publishMessage{value: fee}(0, payload, consistencyLevel);
    }
}
