// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IMessageCore} from "../interfaces/IMessageCore.sol";
import {PayloadCodec} from "../libraries/PayloadCodec.sol";
import {Owned} from "./Owned.sol";

/// @title MessageReceiver
/// @notice What every fedrelay receiver does with an incoming VAA before acting on it: signatures
/// and quorum through the verifier (the core, or a ThresholdVerifier beside it), emitter against
/// the registered peer of its source chain, target chain and address against itself, and the
/// message (its emitter chain, emitter and sequence) consumed exactly once. Also publishes this
/// contract's own messages through the core.
///
/// Batches (`_receiveBatch`): each VAA of a batch is received on its own, as a call of the
/// contract's own `receiveMessage(bytes)`, so a refused entry reverts only itself (its consumed
/// flag included) and the others still apply. The result of every entry is returned and logged
/// (`BatchEntry`): APPLIED (1), CONSUMED (2: delivered before, or earlier in the same batch),
/// INVALID (3: not a message for this contract: a VAA the core cannot parse or does not verify, an
/// unknown emitter, a header that does not decode or targets another chain, contract or payload
/// kind) or FAILED (4: a message for this contract whose application reverted, such as a body that
/// does not decode or a state that refuses it; the revert data says why). An entry that runs out
/// of gas is never reported: the whole batch reverts `BatchOutOfGas(index)` and applies nothing, so
/// a relayer that gave too little gas learns it and no entry is misreported as refused.
abstract contract MessageReceiver is Owned {
    /// @notice The Wormhole core (or fedrelay's MessageCore) this contract publishes through and
    /// whose guardian sets it trusts.
    IMessageCore public immutable core;
    /// @dev What verifies incoming VAAs: the core itself, or a `ThresholdVerifier` beside a core
    /// that takes version 1 only (it takes version 2 and hands the rest to the core). Not public,
    /// to keep JobMarket within EIP-170: the `VerifierSet` event of the deployment names it.
    IMessageCore internal immutable verifier;
    /// @notice Wormhole chain id of this chain, read from the core at deployment.
    uint16 public immutable chainId;
    /// @notice Consistency level requested for published messages.
    uint8 public immutable consistencyLevel;

    /// @dev `receiveMessages` results (see the contract's notes).
    uint8 internal constant APPLIED = 1;
    uint8 internal constant CONSUMED = 2;
    uint8 internal constant INVALID = 3;
    uint8 internal constant FAILED = 4;
    /// @dev `receiveMessage(bytes)`, which each receiver defines (payable or not).
    bytes4 internal constant RECEIVE_MESSAGE = bytes4(keccak256("receiveMessage(bytes)"));
    /// @dev `MalformedVaa(uint256,uint256)` (MessageCore and ThresholdVerifier, from `ThresholdKeys`): the core could not parse the VAA.
    bytes4 internal constant MALFORMED_VAA = bytes4(keccak256("MalformedVaa(uint256,uint256)"));

    /// @notice Registered peer (emitter and target address) per Wormhole chain id.
    mapping(uint16 => bytes32) public peers;
    /// @dev Messages already acted upon, one bit per (emitter chain, emitter, sequence): bit
    /// `sequence % 256` of word `sequence / 256`, so a source's consecutive messages share a word
    /// and a batch of them writes it once (read through `isConsumed`).
    mapping(uint16 => mapping(bytes32 => mapping(uint64 => uint256))) internal consumed;

    /// @notice Incoming VAAs are verified by `verifier` (emitted once, at deployment).
    event VerifierSet(address verifier);
    /// @notice The peer for `chain` was set to `peer` (zero removes it).
    event PeerSet(uint16 indexed chain, bytes32 peer);
    /// @notice A VAA was verified and consumed.
    event MessageConsumed(bytes32 indexed digest, uint16 indexed emitterChain, uint64 sequence);

    /// @notice Entry `index` of a `receiveMessages` batch (VAA digest `digest`, zero when the VAA
    /// is too short to have one) ended with `result`; `reason` is a refused entry's revert data.
    event BatchEntry(uint256 indexed index, bytes32 indexed digest, uint8 result, bytes reason);

    /// @notice The core rejected the VAA's signatures or guardian set.
    error InvalidVaa(string reason);
    /// @notice The VAA's message was consumed before (by this VAA, or another of the same
    /// emitter and sequence): it was already delivered. `digest` is this VAA's.
    error AlreadyConsumed(bytes32 digest);
    /// @notice The emitter is not the registered peer for its chain.
    error UnknownEmitter(uint16 chain, bytes32 emitter);
    /// @notice The payload targets another chain.
    error WrongTargetChain(uint16 targetChain);
    /// @notice The payload targets another contract.
    error WrongTargetAddress(bytes32 targetAddress);
    /// @notice The payload is of a kind this contract does not take.
    error UnexpectedPayload(uint8 payloadId);
    /// @notice Entry `index` of a batch ran out of gas: nothing of the batch was applied.
    error BatchOutOfGas(uint256 index);
    /// @notice A peer cannot be set for this contract's own chain id or chain 0.
    error InvalidPeerChain(uint16 chain);
    /// @notice `msg.value` does not pay exactly the core's fee for the messages published.
    error WrongMessageFee(uint256 paid, uint256 required);

    /// @param verifier_ Verifies incoming VAAs; zero for `core_` itself.
    constructor(IMessageCore core_, IMessageCore verifier_, uint8 consistencyLevel_, address initialOwner)
        Owned(initialOwner)
    {
        core = core_;
        IMessageCore verifies = address(verifier_) == address(0) ? core_ : verifier_;
        verifier = verifies;
        emit VerifierSet(address(verifies));
        chainId = core_.chainId();
        consistencyLevel = consistencyLevel_;
    }

    /// @notice Register `peer` as the trusted emitter and target for `chain` (zero removes it).
    function setPeer(uint16 chain, bytes32 peer) external onlyOwner {
        if (chain == 0 || chain == chainId) revert InvalidPeerChain(chain);
        peers[chain] = peer;
        emit PeerSet(chain, peer);
    }

    /// @notice Whether message `sequence` of `emitter` on `emitterChain` has been consumed here, by
    /// a VAA of any version or signature set (they all carry the message's identity).
    function isConsumed(uint16 emitterChain, bytes32 emitter, uint64 sequence) public view returns (bool) {
        return consumed[emitterChain][emitter][sequence >> 8] & (1 << (sequence & 255)) != 0;
    }

    /// @dev Verify `encoded` completely, mark its message consumed and return it with its header.
    function _consume(bytes calldata encoded)
        internal
        returns (IMessageCore.VM memory vm, PayloadCodec.Header memory header)
    {
        vm = _verified(encoded);
        bytes32 peer = peers[vm.emitterChainId];
        if (peer == bytes32(0) || peer != vm.emitterAddress) {
            revert UnknownEmitter(vm.emitterChainId, vm.emitterAddress);
        }
        mapping(uint64 => uint256) storage words = consumed[vm.emitterChainId][vm.emitterAddress];
        uint256 word = words[vm.sequence >> 8];
        uint256 bit = 1 << (vm.sequence & 255);
        if (word & bit != 0) revert AlreadyConsumed(vm.hash);
        header = PayloadCodec.decodeHeader(vm.payload);
        if (header.targetChain != chainId) revert WrongTargetChain(header.targetChain);
        if (header.targetAddress != PayloadCodec.toBytes32(address(this))) {
            revert WrongTargetAddress(header.targetAddress);
        }
        words[vm.sequence >> 8] = word | bit;
        emit MessageConsumed(vm.hash, vm.emitterChainId, vm.sequence);
    }

    /// @dev The verifier's verdict on `encoded`: the parsed VM when it is valid, else `InvalidVaa`.
    /// A core may refuse by reverting instead of returning `(vm, false, reason)` (Wormhole's own
    /// reverts `Error(string)` for a version other than 1, truncated input, unordered guardian
    /// indices, an index outside the set or a signature ecrecover rejects): its string becomes
    /// `InvalidVaa(string)`, and any other revert data (a `Panic`, say) `InvalidVaa("")`.
    /// `MalformedVaa` (MessageCore's parse error) and an empty revert (the core's call ran out of
    /// gas, which `_receiveBatch` relies on) pass unchanged.
    function _verified(bytes calldata encoded) private view returns (IMessageCore.VM memory vm) {
        try verifier.parseAndVerifyVM(encoded) returns (
            IMessageCore.VM memory parsed, bool valid, string memory reason
        ) {
            if (!valid) revert InvalidVaa(reason);
            vm = parsed;
        } catch (bytes memory data) {
            // Selectors: 0xadb5a58b MalformedVaa(uint256,uint256), 0x08c379a0 Error(string),
            // 0x8ee2e336 InvalidVaa(string) (Error's and InvalidVaa's arguments encode alike).
            assembly ("memory-safe") {
                let size := mload(data)
                let head := shr(224, mload(add(data, 32)))
                // some revert data, and not MalformedVaa (sub and mul: non-zero = both differ)
                if mul(size, sub(head, 0xadb5a58b)) {
                    if sub(head, 0x08c379a0) {
                        // InvalidVaa(""), written past the free memory pointer
                        data := mload(0x40)
                        mstore(add(data, 36), 0x20)
                        mstore(add(data, 68), 0)
                        size := 68
                    }
                    mstore(add(data, 4), 0x8ee2e336) // the selector, over the length word's end
                }
                revert(add(data, 32), size)
            }
        }
    }

    /// @dev Receive each of `vaas` on its own (see the contract's notes); the caller guards
    /// against reentrancy and handles `msg.value`.
    function _receiveBatch(bytes[] calldata vaas) internal returns (uint8[] memory results) {
        results = new uint8[](vaas.length);
        for (uint256 i = 0; i < vaas.length; ++i) {
            bytes calldata vaa = vaas[i];
            (bool parsed, bytes32 digest, uint16 emitterChain, bytes32 emitter, uint64 sequence) = _entryOf(vaa);
            uint8 result = CONSUMED;
            bytes memory reason;
            // A consumed message is skipped before the signatures are checked again.
            if (!parsed || !isConsumed(emitterChain, emitter, sequence)) {
                uint256 before = gasleft();
                bool ok;
                (ok, reason) = _receiveOne(vaa);
                if (ok) {
                    result = APPLIED;
                } else {
                    // Every refusal carries an error; an empty one, or a call that took all it was
                    // given, ran out of gas (directly or in the core's call).
                    if (reason.length < 4 || gasleft() <= before / 64) revert BatchOutOfGas(i);
                    result = _classify(bytes4(reason));
                }
            }
            results[i] = result;
            emit BatchEntry(i, digest, result, reason);
        }
    }

    /// @dev Call this contract's `receiveMessage(vaa)` with all the gas the call can have; a
    /// refusal's revert data comes back as `reason`.
    function _receiveOne(bytes calldata vaa) private returns (bool ok, bytes memory reason) {
        bytes4 selector = RECEIVE_MESSAGE;
        assembly ("memory-safe") {
            let input := mload(0x40)
            mstore(input, selector)
            mstore(add(input, 4), 0x20)
            mstore(add(input, 36), vaa.length)
            calldatacopy(add(input, 68), vaa.offset, vaa.length)
            ok := call(gas(), address(), 0, input, add(68, vaa.length), 0, 0)
            if iszero(ok) {
                reason := input
                mstore(reason, returndatasize())
                returndatacopy(add(reason, 32), 0, returndatasize())
                mstore(0x40, add(add(reason, 32), and(add(returndatasize(), 31), not(31))))
            }
        }
    }

    /// @dev The digest (keccak256(keccak256(body))), emitter chain, emitter and sequence of a VAA's
    /// body (after a version-2 VAA's 57-byte header, or a version-1 VAA's signatures); `parsed`
    /// false, and all zero, when it is too short for them.
    function _entryOf(bytes calldata vaa)
        private
        pure
        returns (bool parsed, bytes32 digest, uint16 emitterChain, bytes32 emitter, uint64 sequence)
    {
        assembly ("memory-safe") {
            if gt(vaa.length, 5) {
                let body := add(6, mul(66, byte(0, calldataload(add(vaa.offset, 5)))))
                if eq(byte(0, calldataload(vaa.offset)), 2) { body := 57 }
                if iszero(lt(vaa.length, add(body, 51))) {
                    parsed := 1
                    let at := add(vaa.offset, body)
                    let size := sub(vaa.length, body)
                    let scratch := mload(0x40)
                    calldatacopy(scratch, at, size)
                    mstore(0, keccak256(scratch, size))
                    digest := keccak256(0, 32)
                    emitterChain := shr(240, calldataload(add(at, 8)))
                    emitter := calldataload(add(at, 10))
                    sequence := shr(192, calldataload(add(at, 42)))
                }
            }
        }
    }

    /// @dev The batch result of an entry refused with error `selector`.
    function _classify(bytes4 selector) private pure returns (uint8) {
        if (selector == AlreadyConsumed.selector) return CONSUMED;
        if (
            selector == InvalidVaa.selector || selector == UnknownEmitter.selector || selector == MALFORMED_VAA
                || selector == WrongTargetChain.selector || selector == WrongTargetAddress.selector
                || selector == UnexpectedPayload.selector || selector == PayloadCodec.PayloadTooShort.selector
                || selector == PayloadCodec.UnknownPayloadId.selector
                || selector == PayloadCodec.UnsupportedPayloadVersion.selector
        ) return INVALID;
        return FAILED;
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
