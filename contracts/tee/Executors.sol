// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ITeeManager} from "./Interfaces.sol";

/// @title Executors — job capacity and executor selection of the TEE generation (development version).
/// @notice No owner-facing functions: nodes arrive and leave through TeeManager
///         (`ExecutorsNotTeeManager` otherwise); selection, release and slashing come from Jobs.
///         `executors(address) returns (jobCapacity, activeJobs, reputation)` as published.
///         Selection for a job with a secret takes the secret's holders first, highest stake first,
///         then fills the remaining places at random among the other available executors
///         (`ExecutorsUnavailableResources` when too few). Reputation starts at 1000: +10 to the
///         first submitter, −5 to the 2nd and 3rd, −10 per slash, checked arithmetic as published.
///         Every release calls `TeeManager.updateTreeState` (the §3.11 storage hazard lives there).
///
/// DEVELOPMENT SIMPLIFICATIONS: uniform random draw, not stake-weighted; the deployer wires Jobs
/// (instead of JOBS_ROLE).
contract Executors {
    struct Executor {
        uint256 jobCapacity;
        uint256 activeJobs;
        uint256 reputation;
    }

    uint256 public constant INIT_REPUTATION = 1000;
    bytes32 public constant JOBS_ROLE = keccak256("JOBS_ROLE");

    ITeeManager public immutable TEE_MANAGER;
    address public immutable deployer;
    address public jobs;

    mapping(address => Executor) public executors;
    mapping(uint8 => bool) public supportedEnvs;
    mapping(uint8 => address[]) private envExecutors;
    mapping(address => uint256) private envPosition; // 1-based
    mapping(address => uint8) private envOf;

    error ExecutorsZeroAddressTeeManager();
    error ExecutorsZeroAddressAdmin();
    error ExecutorsGlobalEnvAlreadySupported();
    error ExecutorsGlobalEnvAlreadyUnsupported();
    error ExecutorsHasPendingJobs();
    error ExecutorsNotTeeManager();
    error ExecutorsUnsupportedEnv();
    error ExecutorsUnavailableResources();

    constructor(ITeeManager _teeManager) {
        if (address(_teeManager) == address(0)) revert ExecutorsZeroAddressTeeManager();
        TEE_MANAGER = _teeManager;
        deployer = msg.sender;
    }

    function setJobs(address _jobs) external {
        require(msg.sender == deployer, "Executors: only deployer");
        jobs = _jobs;
    }

    modifier onlyTeeManager() {
        if (msg.sender != address(TEE_MANAGER)) revert ExecutorsNotTeeManager();
        _;
    }

    modifier onlyJobs() {
        require(msg.sender == jobs, "Executors: only Jobs");
        _;
    }

    // ------------------------------------------------------------------ TeeManager

    function registerExecutor(address enclaveAddress, uint256 jobCapacity, uint8 env) external onlyTeeManager {
        if (!supportedEnvs[env]) revert ExecutorsUnsupportedEnv();
        executors[enclaveAddress] = Executor({jobCapacity: jobCapacity, activeJobs: 0, reputation: INIT_REPUTATION});
        envExecutors[env].push(enclaveAddress);
        envPosition[enclaveAddress] = envExecutors[env].length;
        envOf[enclaveAddress] = env;
    }

    function deregisterExecutor(address enclaveAddress) external onlyTeeManager {
        checkIdle(enclaveAddress);
        address[] storage list = envExecutors[envOf[enclaveAddress]];
        uint256 pos = envPosition[enclaveAddress];
        address last = list[list.length - 1];
        list[pos - 1] = last;
        envPosition[last] = pos;
        list.pop();
        delete envPosition[enclaveAddress];
        delete envOf[enclaveAddress];
        delete executors[enclaveAddress];
    }

    function checkIdle(address enclaveAddress) public view {
        if (executors[enclaveAddress].activeJobs != 0) revert ExecutorsHasPendingJobs();
    }

    /// @notice In the selection "tree": selectable on TeeManager with a free slot.
    function isAvailable(address enclaveAddress) public view returns (bool) {
        Executor storage e = executors[enclaveAddress];
        return e.activeJobs < e.jobCapacity && TEE_MANAGER.isSelectable(enclaveAddress);
    }

    // ------------------------------------------------------------------ Jobs

    function initTree(uint8 env) external onlyJobs {
        if (supportedEnvs[env]) revert ExecutorsGlobalEnvAlreadySupported();
        supportedEnvs[env] = true;
    }

    /// @notice Holders (already filtered to available ones) first by stake, then a random fill.
    function selectExecutors(uint8 env, address[] calldata holders, uint256 count, uint256 seed)
        external
        onlyJobs
        returns (address[] memory selected)
    {
        if (!supportedEnvs[env]) revert ExecutorsUnsupportedEnv();
        selected = new address[](count);
        uint256 n;
        address[] memory ranked = _byStake(holders);
        for (uint256 i; i < ranked.length && n < count; ++i) {
            selected[n++] = ranked[i];
        }
        address[] storage all = envExecutors[env];
        address[] memory free = new address[](all.length);
        uint256 nFree;
        for (uint256 i; i < all.length; ++i) {
            if (isAvailable(all[i]) && !_contains(selected, n, all[i])) free[nFree++] = all[i];
        }
        if (nFree < count - n) revert ExecutorsUnavailableResources();
        for (uint256 i; n < count; ++i) {
            uint256 j = i + uint256(keccak256(abi.encode(seed, i))) % (nFree - i);
            (free[i], free[j]) = (free[j], free[i]);
            selected[n++] = free[i];
        }
        for (uint256 i; i < count; ++i) {
            executors[selected[i]].activeJobs += 1;
        }
    }

    /// @notice An output was submitted as the `rank`-th: free the slot, adjust the reputation.
    function releaseExecutor(address enclaveAddress, uint8 rank) external onlyJobs {
        Executor storage e = executors[enclaveAddress];
        if (rank == 1) e.reputation += 10;
        else e.reputation -= 5; // checked, as published
        _release(enclaveAddress);
    }

    /// @notice A missed job: free the slot, cut reputation and one slash of stake.
    function slashExecutor(address enclaveAddress, address recipient) external onlyJobs returns (uint256) {
        executors[enclaveAddress].reputation -= 10; // checked, as published
        _release(enclaveAddress);
        return TEE_MANAGER.slashTeeNode(enclaveAddress, 1, recipient);
    }

    function _release(address enclaveAddress) private {
        Executor storage e = executors[enclaveAddress];
        if (e.activeJobs > 0) e.activeJobs -= 1;
        TEE_MANAGER.updateTreeState(enclaveAddress);
    }

    function _contains(address[] memory list, uint256 len, address a) private pure returns (bool) {
        for (uint256 i; i < len; ++i) {
            if (list[i] == a) return true;
        }
        return false;
    }

    function _byStake(address[] calldata holders) private view returns (address[] memory ranked) {
        ranked = holders;
        uint256[] memory stakes = TEE_MANAGER.getTeeNodesStake(holders);
        // insertion sort, highest stake first (a secret has few holders)
        for (uint256 i = 1; i < ranked.length; ++i) {
            for (uint256 j = i; j > 0 && stakes[j] > stakes[j - 1]; --j) {
                (stakes[j], stakes[j - 1]) = (stakes[j - 1], stakes[j]);
                (ranked[j], ranked[j - 1]) = (ranked[j - 1], ranked[j]);
            }
        }
    }
}
