// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ITeeManager, ITeeSecretManager} from "./Interfaces.sol";

/// @title SecretStore — storage capacity, store selection and liveness of TEE nodes (development version).
/// @notice Nodes arrive through TeeManager (`SecretStoreNotTeeManager` otherwise); SecretManager
///         selects stores, releases storage and records liveness (`SecretStoreNotSecretManager`).
///         `secretStores(address) returns (storageCapacity, storageOccupied, lastAliveTimestamp,
///         deadTimestamp, env, inTree)`. As published, a node stays selectable only while
///         `storageOccupied <= storageCapacity - GLOBAL_MAX_SECRET_SIZE`, evaluated with checked
///         arithmetic on every `updateStoreTree` (each executor slot release) and every selection:
///         a node registered with less storage than GLOBAL_MAX_SECRET_SIZE reverts Panic(0x11) there.
///         Draining renounces the node's secrets (SecretManager re-assigns them) and empties it.
///
/// DEVELOPMENT SIMPLIFICATIONS: uniform random draw, not stake-weighted; the deployer wires Jobs
/// and SecretManager.
contract SecretStore {
    struct Store {
        uint256 storageCapacity;
        uint256 storageOccupied;
        uint256 lastAliveTimestamp;
        uint256 deadTimestamp;
        uint8 env;
        bool inTree;
    }

    ITeeManager public immutable TEE_MANAGER;
    address public immutable deployer;
    address public jobs;
    ITeeSecretManager public secretManager;

    mapping(address => Store) public secretStores;
    mapping(uint8 => bool) public supportedEnvs;
    mapping(uint8 => address[]) private envStores;
    mapping(address => uint256) private envPosition; // 1-based

    error SecretStoreZeroAddressTeeManager();
    error SecretStoreZeroAddressAdmin();
    error SecretStoreGlobalEnvAlreadySupported();
    error SecretStoreGlobalEnvAlreadyUnsupported();
    error SecretStoreHasOccupiedStorage();
    error SecretStoreNotTeeManager();
    error SecretStoreNotSecretManager();
    error SecretStoreUnsupportedEnv();

    constructor(ITeeManager _teeManager) {
        if (address(_teeManager) == address(0)) revert SecretStoreZeroAddressTeeManager();
        TEE_MANAGER = _teeManager;
        deployer = msg.sender;
    }

    function setJobs(address _jobs) external {
        require(msg.sender == deployer, "SecretStore: only deployer");
        jobs = _jobs;
    }

    function setSecretManager(address _secretManager) external {
        require(msg.sender == deployer, "SecretStore: only deployer");
        secretManager = ITeeSecretManager(_secretManager);
    }

    modifier onlyTeeManager() {
        if (msg.sender != address(TEE_MANAGER)) revert SecretStoreNotTeeManager();
        _;
    }

    modifier onlySecretManager() {
        if (msg.sender != address(secretManager)) revert SecretStoreNotSecretManager();
        _;
    }

    // ------------------------------------------------------------------ TeeManager

    function registerSecretStore(address enclaveAddress, uint256 storageCapacity, uint8 env) external onlyTeeManager {
        if (!supportedEnvs[env]) revert SecretStoreUnsupportedEnv();
        secretStores[enclaveAddress] = Store({
            storageCapacity: storageCapacity,
            storageOccupied: 0,
            lastAliveTimestamp: block.timestamp,
            deadTimestamp: 0,
            env: env,
            // registration does not check the capacity (as published)
            inTree: TEE_MANAGER.isSelectable(enclaveAddress)
        });
        envStores[env].push(enclaveAddress);
        envPosition[enclaveAddress] = envStores[env].length;
    }

    function drainSecretStore(address enclaveAddress) external onlyTeeManager {
        secretStores[enclaveAddress].inTree = false;
        secretManager.renounceSecrets(enclaveAddress);
    }

    function reviveSecretStore(address enclaveAddress) external onlyTeeManager {
        Store storage s = secretStores[enclaveAddress];
        s.inTree = TEE_MANAGER.isSelectable(enclaveAddress);
        s.lastAliveTimestamp = block.timestamp;
    }

    function deregisterSecretStore(address enclaveAddress) external onlyTeeManager {
        checkEmpty(enclaveAddress);
        address[] storage list = envStores[secretStores[enclaveAddress].env];
        uint256 pos = envPosition[enclaveAddress];
        address last = list[list.length - 1];
        list[pos - 1] = last;
        envPosition[last] = pos;
        list.pop();
        delete envPosition[enclaveAddress];
        delete secretStores[enclaveAddress];
    }

    function checkEmpty(address enclaveAddress) public view {
        if (secretStores[enclaveAddress].storageOccupied != 0) revert SecretStoreHasOccupiedStorage();
    }

    /// @notice TeeManager, after an executor slot of a selectable node was released.
    function updateStoreTree(address enclaveAddress) external onlyTeeManager {
        _updateTree(enclaveAddress);
    }

    // ------------------------------------------------------------------ Jobs

    function initTree(uint8 env) external {
        require(msg.sender == jobs, "SecretStore: only Jobs");
        if (supportedEnvs[env]) revert SecretStoreGlobalEnvAlreadySupported();
        supportedEnvs[env] = true;
    }

    // ------------------------------------------------------------------ SecretManager

    /// @notice Up to `count` stores with room for `sizeLimit`, none of `exclude`; occupies the storage.
    function selectStores(uint8 env, uint256 count, uint256 sizeLimit, address[] calldata exclude, uint256 seed)
        external
        onlySecretManager
        returns (address[] memory selected)
    {
        address[] storage all = envStores[env];
        address[] memory free = new address[](all.length);
        uint256 nFree;
        for (uint256 i; i < all.length; ++i) {
            address a = all[i];
            if (secretStores[a].inTree && TEE_MANAGER.isSelectable(a) && !_contains(exclude, a)) free[nFree++] = a;
        }
        uint256 n = count < nFree ? count : nFree;
        selected = new address[](n);
        for (uint256 i; i < n; ++i) {
            uint256 j = i + uint256(keccak256(abi.encode(seed, i))) % (nFree - i);
            (free[i], free[j]) = (free[j], free[i]);
            selected[i] = free[i];
            secretStores[free[i]].storageOccupied += sizeLimit;
            _updateTree(free[i]);
        }
    }

    function releaseStorage(address enclaveAddress, uint256 size) external onlySecretManager {
        Store storage s = secretStores[enclaveAddress];
        s.storageOccupied = s.storageOccupied > size ? s.storageOccupied - size : 0;
        if (TEE_MANAGER.isSelectable(enclaveAddress)) _updateTree(enclaveAddress);
    }

    /// @notice Slashes the epochs missed since the last alive (or dead) mark and restarts the count.
    function markAlive(address enclaveAddress) external onlySecretManager returns (uint256 slashed) {
        slashed = _slashMissedEpochs(enclaveAddress, address(this));
        secretStores[enclaveAddress].lastAliveTimestamp = block.timestamp;
    }

    function markDead(address enclaveAddress, address recipient) external onlySecretManager returns (uint256 slashed) {
        slashed = _slashMissedEpochs(enclaveAddress, recipient);
        Store storage s = secretStores[enclaveAddress];
        s.lastAliveTimestamp = block.timestamp;
        s.deadTimestamp = block.timestamp;
    }

    function lastAliveTimestamp(address enclaveAddress) external view returns (uint256) {
        return secretStores[enclaveAddress].lastAliveTimestamp;
    }

    // ------------------------------------------------------------------ internals

    function _slashMissedEpochs(address enclaveAddress, address recipient) private returns (uint256) {
        uint256 epochs = (block.timestamp - secretStores[enclaveAddress].lastAliveTimestamp) / secretManager.MARK_ALIVE_TIMEOUT();
        if (epochs == 0) return 0;
        // a live store's own slashes stay with this contract (DEV: no payment pool)
        return TEE_MANAGER.slashTeeNode(enclaveAddress, epochs, recipient);
    }

    /// The published condition, with its checked subtraction (Panic 0x11 below GLOBAL_MAX_SECRET_SIZE).
    function _updateTree(address enclaveAddress) private {
        Store storage s = secretStores[enclaveAddress];
        s.inTree = s.storageOccupied <= s.storageCapacity - secretManager.GLOBAL_MAX_SECRET_SIZE();
    }

    function _contains(address[] calldata list, address a) private pure returns (bool) {
        for (uint256 i; i < list.length; ++i) {
            if (list[i] == a) return true;
        }
        return false;
    }
}
