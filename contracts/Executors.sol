// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Sig} from "./lib/Sig.sol";

/// @title Executors — executor registry (development version of the Oyster Serverless contract).
/// @notice Same external surface as the protocol (shared protocol.md): `registerExecutor`,
///         `drainExecutor`, `reviveExecutor`, `deregisterExecutor`, `getOwner`, `executors`, the four
///         events and the nine custom errors, with the same signatures and selectors.
///
/// DEVELOPMENT SIMPLIFICATIONS (do not deploy to a real network):
///  - Attestation is NOT verified: `attestationSignature`, PCR0..2 and `timestampInMilliseconds` are
///    accepted as is. The enclave address IS derived from the attestation's `enclavePubKey`
///    (`address(uint160(uint256(keccak256(enclavePubKey))))`), and `enclavePubKey` must be exactly
///    64 bytes (uncompressed key without the 0x04 prefix), otherwise `ExecutorsInvalidSigner()`.
///  - The registration signature is NOT simplified: EIP-712 `Register(address owner,uint256
///    jobCapacity,uint8 env,uint256 signTimestamp)` in domain (`marlin.oyster.Executors`, `1`), no
///    chainId / verifyingContract, `owner = msg.sender`, recovered with ecrecover (low-s only, v 27/28
///    or 0/1) and compared with the enclave address.
///  - No token: `stakeAmount` is recorded, never transferred; slashing only releases the slot and
///    increments `slashCount` (the Jobs contract emits `SlashedOnExecutionTimeout`).
///  - Supported envs: 1 and 2 (`ExecutorsUnsupportedEnv()` otherwise).
///  - Selection (called by Jobs inside `createJob`) is uniform pseudo-random (seeded by Jobs with
///    keccak of the job id, prevrandao and the previous block hash) among registered, non-draining
///    executors of the env with `activeJobs < jobCapacity` — not stake-weighted.
///  - Dev-only plumbing (not part of the protocol): `setJobsContract(address)` (once, by the
///    deployer), and Jobs-only `selectExecutors`, `releaseExecutor`, `slashExecutor`. They revert with
///    plain `require` strings so that the ABI's custom errors stay exactly the protocol's.
contract Executors {
    struct Executor {
        uint256 jobCapacity;
        uint256 activeJobs;
        uint256 stakeAmount;
        address owner;
        bool draining;
        uint8 env;
    }

    struct Attestation {
        bytes enclavePubKey;
        bytes PCR0;
        bytes PCR1;
        bytes PCR2;
        uint256 timestampInMilliseconds;
    }

    bytes32 private constant REGISTER_TYPEHASH =
        keccak256("Register(address owner,uint256 jobCapacity,uint8 env,uint256 signTimestamp)");

    /// @notice Registration signatures older than this many seconds are rejected.
    uint256 public immutable ATTESTATION_MAX_AGE;
    bytes32 public immutable DOMAIN_SEPARATOR;

    /// @notice Dev-only: the account allowed to call `setJobsContract` once.
    address public immutable deployer;
    /// @notice Dev-only: the Jobs contract allowed to select, release and slash.
    address public jobsContract;

    /// @notice `executors(address) view returns (uint256 jobCapacity, uint256 activeJobs,
    ///         uint256 stakeAmount, address owner, bool draining, uint8 env)`
    mapping(address => Executor) public executors;

    /// @notice Dev-only: how many times an executor was slashed (no tokens move).
    mapping(address => uint256) public slashCount;

    /// registered enclave addresses per env, with 1-based positions for O(1) removal
    mapping(uint8 => address[]) private envExecutors;
    mapping(address => uint256) private envPosition;

    event ExecutorRegistered(address indexed enclaveAddress, address indexed owner, uint256 jobCapacity, uint8 env);
    event ExecutorDrained(address indexed enclaveAddress);
    event ExecutorRevived(address indexed enclaveAddress);
    event ExecutorDeregistered(address indexed enclaveAddress);

    error ExecutorsSignatureTooOld();
    error ExecutorsInvalidSigner();
    error ExecutorsExecutorAlreadyExists();
    error ExecutorsAlreadyDraining();
    error ExecutorsAlreadyRevived();
    error ExecutorsNotDraining();
    error ExecutorsHasPendingJobs();
    error ExecutorsInvalidOwner();
    error ExecutorsUnsupportedEnv();

    /// @param attestationMaxAgeSeconds ATTESTATION_MAX_AGE: maximum age (seconds) of a registration signature.
    constructor(uint256 attestationMaxAgeSeconds) {
        ATTESTATION_MAX_AGE = attestationMaxAgeSeconds;
        DOMAIN_SEPARATOR = Sig.domainSeparator("marlin.oyster.Executors", "1");
        deployer = msg.sender;
    }

    // ------------------------------------------------------------------ dev-only plumbing

    /// @notice Dev-only: wire the Jobs contract. Callable once, by the deployer.
    function setJobsContract(address jobs) external {
        require(msg.sender == deployer, "Executors: only deployer");
        require(jobsContract == address(0), "Executors: jobs already set");
        require(jobs != address(0), "Executors: zero jobs");
        jobsContract = jobs;
    }

    modifier onlyJobs() {
        require(msg.sender == jobsContract, "Executors: only Jobs");
        _;
    }

    /// @notice Jobs-only: pick up to `count` free executors of `env` and take one slot on each.
    /// @return selected fewer than `count` addresses (and no slot taken) when too few are free;
    ///         the Jobs contract then reverts `JobsUnavailableResources()`.
    function selectExecutors(uint8 env, uint256 count, uint256 seed)
        external
        onlyJobs
        returns (address[] memory selected)
    {
        address[] storage all = envExecutors[env];
        uint256 n = all.length;
        address[] memory free = new address[](n);
        uint256 nFree;
        for (uint256 i; i < n; ++i) {
            Executor storage e = executors[all[i]];
            if (!e.draining && e.activeJobs < e.jobCapacity) {
                free[nFree++] = all[i];
            }
        }
        if (nFree < count) return new address[](0);
        selected = new address[](count);
        for (uint256 i; i < count; ++i) {
            // partial Fisher-Yates over the free list
            uint256 j = i + uint256(keccak256(abi.encode(seed, i))) % (nFree - i);
            (free[i], free[j]) = (free[j], free[i]);
            selected[i] = free[i];
            executors[free[i]].activeJobs += 1;
        }
    }

    /// @notice Jobs-only: an output was submitted, free one slot.
    function releaseExecutor(address enclaveAddress) external onlyJobs {
        _release(enclaveAddress);
    }

    /// @notice Jobs-only: the executor missed a job; free its slot and count the slash (no tokens).
    function slashExecutor(address enclaveAddress) external onlyJobs {
        _release(enclaveAddress);
        slashCount[enclaveAddress] += 1;
    }

    function _release(address enclaveAddress) private {
        Executor storage e = executors[enclaveAddress];
        if (e.activeJobs > 0) e.activeJobs -= 1;
    }

    // ------------------------------------------------------------------ protocol surface

    function registerExecutor(
        bytes calldata attestationSignature,
        Attestation calldata attestation,
        uint256 jobCapacity,
        uint256 signTimestamp,
        bytes calldata signature,
        uint256 stakeAmount,
        uint8 env
    ) external {
        attestationSignature; // DEV: attestation not verified
        if (env != 1 && env != 2) revert ExecutorsUnsupportedEnv();
        address enclaveAddress = _enclaveAddress(attestation.enclavePubKey);
        _verifyRegistration(enclaveAddress, msg.sender, jobCapacity, env, signTimestamp, signature);
        if (executors[enclaveAddress].owner != address(0)) revert ExecutorsExecutorAlreadyExists();

        executors[enclaveAddress] = Executor({
            jobCapacity: jobCapacity,
            activeJobs: 0,
            stakeAmount: stakeAmount,
            owner: msg.sender,
            draining: false,
            env: env
        });
        envExecutors[env].push(enclaveAddress);
        envPosition[enclaveAddress] = envExecutors[env].length;

        emit ExecutorRegistered(enclaveAddress, msg.sender, jobCapacity, env);
    }

    function drainExecutor(address enclaveAddress) external {
        Executor storage e = _owned(enclaveAddress);
        if (e.draining) revert ExecutorsAlreadyDraining();
        e.draining = true;
        emit ExecutorDrained(enclaveAddress);
    }

    function reviveExecutor(address enclaveAddress) external {
        Executor storage e = _owned(enclaveAddress);
        if (!e.draining) revert ExecutorsAlreadyRevived();
        e.draining = false;
        emit ExecutorRevived(enclaveAddress);
    }

    function deregisterExecutor(address enclaveAddress) external {
        Executor storage e = _owned(enclaveAddress);
        if (!e.draining) revert ExecutorsNotDraining();
        if (e.activeJobs != 0) revert ExecutorsHasPendingJobs();

        address[] storage list = envExecutors[e.env];
        uint256 pos = envPosition[enclaveAddress]; // 1-based
        address last = list[list.length - 1];
        list[pos - 1] = last;
        envPosition[last] = pos;
        list.pop();
        delete envPosition[enclaveAddress];
        delete executors[enclaveAddress];

        emit ExecutorDeregistered(enclaveAddress);
    }

    function getOwner(address enclaveAddress) external view returns (address) {
        return executors[enclaveAddress].owner;
    }

    // ------------------------------------------------------------------ internals

    function _owned(address enclaveAddress) private view returns (Executor storage e) {
        e = executors[enclaveAddress];
        if (e.owner == address(0) || e.owner != msg.sender) revert ExecutorsInvalidOwner();
    }

    function _enclaveAddress(bytes calldata enclavePubKey) private pure returns (address) {
        if (enclavePubKey.length != 64) revert ExecutorsInvalidSigner();
        return address(uint160(uint256(keccak256(enclavePubKey))));
    }

    function _verifyRegistration(
        address enclaveAddress,
        address owner,
        uint256 jobCapacity,
        uint8 env,
        uint256 signTimestamp,
        bytes calldata signature
    ) private view {
        // block.timestamp > signTimestamp + ATTESTATION_MAX_AGE, written so it cannot overflow
        if (block.timestamp > signTimestamp && block.timestamp - signTimestamp > ATTESTATION_MAX_AGE) {
            revert ExecutorsSignatureTooOld();
        }
        bytes32 structHash = keccak256(abi.encode(REGISTER_TYPEHASH, owner, jobCapacity, env, signTimestamp));
        address signer = Sig.recover(Sig.typedDataDigest(DOMAIN_SEPARATOR, structHash), signature);
        if (signer == address(0) || signer != enclaveAddress) revert ExecutorsInvalidSigner();
    }
}
