// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title IMessageCore
/// @notice The subset of Wormhole's core contract interface that fedrelay's receivers use.
/// @dev Struct layouts and function signatures match Wormhole's `IWormhole`, so production
/// deployments point receivers at the real core contract of their chain.
interface IMessageCore {
    /// @notice One guardian signature as carried in a VAA (`v` already shifted to 27/28).
    struct Signature {
        bytes32 r;
        bytes32 s;
        uint8 v;
        uint8 guardianIndex;
    }

    /// @notice A parsed VAA. `hash` is the digest keccak256(keccak256(body)).
    struct VM {
        uint8 version;
        uint32 timestamp;
        uint32 nonce;
        uint16 emitterChainId;
        bytes32 emitterAddress;
        uint64 sequence;
        uint8 consistencyLevel;
        bytes payload;
        uint32 guardianSetIndex;
        Signature[] signatures;
        bytes32 hash;
    }

    /// @notice A guardian set; `expirationTime` 0 means it does not expire.
    struct GuardianSet {
        address[] keys;
        uint32 expirationTime;
    }

    /// @notice Emitted for every published message; guardians observe this event.
    event LogMessagePublished(
        address indexed sender, uint64 sequence, uint32 nonce, bytes payload, uint8 consistencyLevel
    );

    /// @notice Publish `payload` from `msg.sender`; pays `messageFee()`.
    /// @return sequence The per-emitter sequence number of the message.
    function publishMessage(uint32 nonce, bytes memory payload, uint8 consistencyLevel)
        external
        payable
        returns (uint64 sequence);

    /// @notice Parse a VAA and verify its signatures against the guardian set it names.
    /// @return vm The parsed VAA.
    /// @return valid Whether the signatures reach quorum of a valid guardian set.
    /// @return reason Why the VAA is invalid (empty when valid).
    function parseAndVerifyVM(bytes calldata encodedVM)
        external
        view
        returns (VM memory vm, bool valid, string memory reason);

    /// @notice Fee in native units to publish one message.
    function messageFee() external view returns (uint256);

    /// @notice Wormhole chain id of this chain.
    function chainId() external view returns (uint16);

    /// @notice Index of the current guardian set.
    function getCurrentGuardianSetIndex() external view returns (uint32);

    /// @notice The guardian set stored at `index`.
    function getGuardianSet(uint32 index) external view returns (GuardianSet memory);
}
