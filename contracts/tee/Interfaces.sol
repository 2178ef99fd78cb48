// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @dev What the TEE dev contracts call on each other (internal plumbing, not protocol surface).

interface IStakeToken {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

interface ITeeManager {
    function isSelectable(address enclaveAddress) external view returns (bool);
    function allowOnlyVerified(address key) external view;
    function getTeeNodeOwner(address enclaveAddress) external view returns (address);
    function getDrainingStatus(address enclaveAddress) external view returns (bool);
    function getTeeNodesStake(address[] calldata enclaveAddresses) external view returns (uint256[] memory);
    function updateTreeState(address enclaveAddress) external;
    function slashTeeNode(address enclaveAddress, uint256 epochs, address recipient) external returns (uint256);
    function ATTESTATION_MAX_AGE() external view returns (uint256);
}

interface ITeeExecutors {
    function registerExecutor(address enclaveAddress, uint256 jobCapacity, uint8 env) external;
    function deregisterExecutor(address enclaveAddress) external;
    function checkIdle(address enclaveAddress) external view;
    function isAvailable(address enclaveAddress) external view returns (bool);
    function initTree(uint8 env) external;
    function selectExecutors(uint8 env, address[] calldata holders, uint256 count, uint256 seed)
        external
        returns (address[] memory);
    function releaseExecutor(address enclaveAddress, uint8 rank) external;
    function slashExecutor(address enclaveAddress, address recipient) external returns (uint256);
}

interface ITeeSecretStore {
    function registerSecretStore(address enclaveAddress, uint256 storageCapacity, uint8 env) external;
    function drainSecretStore(address enclaveAddress) external;
    function reviveSecretStore(address enclaveAddress) external;
    function deregisterSecretStore(address enclaveAddress) external;
    function checkEmpty(address enclaveAddress) external view;
    function updateStoreTree(address enclaveAddress) external;
    function initTree(uint8 env) external;
    function selectStores(uint8 env, uint256 count, uint256 sizeLimit, address[] calldata exclude, uint256 seed)
        external
        returns (address[] memory);
    function releaseStorage(address enclaveAddress, uint256 size) external;
    function markAlive(address enclaveAddress) external returns (uint256 slashed);
    function markDead(address enclaveAddress, address recipient) external returns (uint256 slashed);
    function lastAliveTimestamp(address enclaveAddress) external view returns (uint256);
}

interface ITeeSecretManager {
    function GLOBAL_MAX_SECRET_SIZE() external view returns (uint256);
    function MARK_ALIVE_TIMEOUT() external view returns (uint256);
    function renounceSecrets(address enclaveAddress) external;
    function verifyUserAndGetSelectedStores(uint256 secretId, address jobOwner) external view returns (address[] memory);
}
