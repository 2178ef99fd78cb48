// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Sig} from "./lib/Sig.sol";
import {Attestation, IAttestationVerifier} from "./DevAttestationVerifier.sol";

/// @dev The part of ERC20 the registry uses.
interface IERC20Stake {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// @title Executors — executor registry (development version of the Oyster Serverless contract).
/// @notice Same external surface as the protocol (shared protocol.md): `registerExecutor`,
///         `drainExecutor`, `reviveExecutor`, `deregisterExecutor`, `getOwner`, `executors`, the four
///         events and the nine custom errors, and what the published contracts add where an
///         executor can tell (see contracts/README.md):
///  - the attestation is checked as the published AttestationAuther does: `enclavePubKey` 64 bytes
///    (`AttestationAutherPubkeyLengthInvalid`), PCR0..2 48 bytes each (`AttestationAutherPCRsInvalid`),
///    the image `keccak256(PCR0 ‖ PCR1 ‖ PCR2)` whitelisted (`AttestationAutherImageNotWhitelisted`),
///    `timestampInMilliseconds` within ATTESTATION_MAX_AGE (`AttestationAutherAttestationTooOld`),
///    then `IAttestationVerifier.verify(attestationSignature, attestation)`; the enclave key is
///    then verified until its image is revoked;
///  - `stakeAmount` of TOKEN is pulled from the owner with `transferFrom` (ERC20 errors bubble up),
///    returned on deregistration; only executors with at least MIN_STAKE_AMOUNT are selected;
///  - the registration signature is EIP-712 `Register(address owner,uint256 jobCapacity,uint8 env,
///    uint256 signTimestamp)` in (`marlin.oyster.Executors`, `1`), recovered with OpenZeppelin's rules.
///
/// DEVELOPMENT SIMPLIFICATIONS (do not deploy to a real network): no proxy; the deployer whitelists
/// and revokes images; selection is uniform pseudo-random, not stake-weighted; a slash frees the
/// slot and counts it (`slashCount`), the stake is not cut. Dev-only plumbing (plain `require`
/// strings, so the ABI's custom errors stay the protocol's): `setJobsContract`, `whitelistEnclaveImage`,
/// `revokeEnclaveImage`, and the Jobs-only `selectExecutors`, `releaseExecutor`, `slashExecutor`.
contract Executors {
    struct Executor {
        uint256 jobCapacity;
        uint256 activeJobs;
        uint256 stakeAmount;
        address owner;
        bool draining;
        uint8 env;
    }

    bytes32 private constant REGISTER_TYPEHASH =
        keccak256("Register(address owner,uint256 jobCapacity,uint8 env,uint256 signTimestamp)");

    /// @notice Oldest accepted attestation and registration signature, seconds.
    uint256 public immutable ATTESTATION_MAX_AGE;
    bytes32 public immutable DOMAIN_SEPARATOR;
    /// @notice The stake token (POND on Marlin's network).
    IERC20Stake public immutable TOKEN;
    IAttestationVerifier public immutable ATTESTATION_VERIFIER;
    /// @notice Executors with less stake are never selected.
    uint256 public immutable MIN_STAKE_AMOUNT;

    /// @notice Dev-only: the account allowed to wire Jobs and manage images.
    address public immutable deployer;
    /// @notice Dev-only: the Jobs contract allowed to select, release and slash.
    address public jobsContract;

    /// @notice `executors(address) view returns (uint256 jobCapacity, uint256 activeJobs,
    ///         uint256 stakeAmount, address owner, bool draining, uint8 env)`
    mapping(address => Executor) public executors;
    /// @notice Dev-only: how many times an executor was slashed.
    mapping(address => uint256) public slashCount;
    /// @notice image id => whitelisted
    mapping(bytes32 => bool) public whitelistedImages;
    /// @notice enclave address => the image its attestation proved (0: not verified)
    mapping(address => bytes32) public verifiedKeys;

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

    error AttestationAutherPubkeyLengthInvalid();
    error AttestationAutherPCRsInvalid();
    error AttestationAutherImageNotWhitelisted();
    error AttestationAutherAttestationTooOld();
    error AttestationAutherKeyNotVerified();

    constructor(IERC20Stake token, IAttestationVerifier verifier, uint256 attestationMaxAgeSeconds, uint256 minStakeAmount) {
        TOKEN = token;
        ATTESTATION_VERIFIER = verifier;
        ATTESTATION_MAX_AGE = attestationMaxAgeSeconds;
        MIN_STAKE_AMOUNT = minStakeAmount;
        DOMAIN_SEPARATOR = Sig.domainSeparator("marlin.oyster.Executors", "1");
        deployer = msg.sender;
    }

    // ------------------------------------------------------------------ dev-only plumbing

    modifier onlyDeployer() {
        require(msg.sender == deployer, "Executors: only deployer");
        _;
    }

    /// @notice Dev-only: wire the Jobs contract. Callable once, by the deployer.
    function setJobsContract(address jobs) external onlyDeployer {
        require(jobsContract == address(0), "Executors: jobs already set");
        require(jobs != address(0), "Executors: zero jobs");
        jobsContract = jobs;
    }

    /// @notice Dev-only: allow enclaves running this image to register.
    function whitelistEnclaveImage(bytes calldata PCR0, bytes calldata PCR1, bytes calldata PCR2)
        external
        onlyDeployer
        returns (bytes32 imageId)
    {
        _checkPCRs(PCR0, PCR1, PCR2);
        imageId = keccak256(abi.encodePacked(PCR0, PCR1, PCR2));
        whitelistedImages[imageId] = true;
    }

    /// @notice Dev-only: enclaves of this image are no longer verified (their outputs are refused
    ///         with `AttestationAutherKeyNotVerified`).
    function revokeEnclaveImage(bytes32 imageId) external onlyDeployer {
        whitelistedImages[imageId] = false;
    }

    modifier onlyJobs() {
        require(msg.sender == jobsContract, "Executors: only Jobs");
        _;
    }

    /// @notice Reverts `AttestationAutherKeyNotVerified()` unless `enclaveAddress` proved a
    ///         still-whitelisted image.
    function allowOnlyVerified(address enclaveAddress) external view {
        bytes32 imageId = verifiedKeys[enclaveAddress];
        if (imageId == bytes32(0) || !whitelistedImages[imageId]) revert AttestationAutherKeyNotVerified();
    }

    /// @notice Jobs-only: pick `count` free executors of `env` and take one slot on each.
    /// @return selected an empty list (and no slot taken) when too few are free.
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
            if (!e.draining && e.activeJobs < e.jobCapacity && e.stakeAmount >= MIN_STAKE_AMOUNT) {
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

    /// @notice Jobs-only: the executor missed a job; free its slot and count the slash.
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
        if (env != 1 && env != 2) revert ExecutorsUnsupportedEnv();
        address enclaveAddress = _verifyEnclaveKey(attestationSignature, attestation);
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
        if (stakeAmount > 0) TOKEN.transferFrom(msg.sender, address(this), stakeAmount);

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
        uint256 stake = e.stakeAmount;
        delete envPosition[enclaveAddress];
        delete executors[enclaveAddress];
        delete verifiedKeys[enclaveAddress];
        if (stake > 0) TOKEN.transfer(msg.sender, stake);

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

    function _checkPCRs(bytes calldata PCR0, bytes calldata PCR1, bytes calldata PCR2) private pure {
        if (PCR0.length != 48 || PCR1.length != 48 || PCR2.length != 48) revert AttestationAutherPCRsInvalid();
    }

    function _verifyEnclaveKey(bytes calldata attestationSignature, Attestation calldata attestation)
        private
        returns (address enclaveAddress)
    {
        if (attestation.enclavePubKey.length != 64) revert AttestationAutherPubkeyLengthInvalid();
        _checkPCRs(attestation.PCR0, attestation.PCR1, attestation.PCR2);
        bytes32 imageId = keccak256(abi.encodePacked(attestation.PCR0, attestation.PCR1, attestation.PCR2));
        if (!whitelistedImages[imageId]) revert AttestationAutherImageNotWhitelisted();
        // timestamp/1000 + ATTESTATION_MAX_AGE < block.timestamp, written so it cannot overflow
        if (block.timestamp > ATTESTATION_MAX_AGE && attestation.timestampInMilliseconds / 1000 < block.timestamp - ATTESTATION_MAX_AGE) {
            revert AttestationAutherAttestationTooOld();
        }
        ATTESTATION_VERIFIER.verify(attestationSignature, attestation);
        enclaveAddress = address(uint160(uint256(keccak256(attestation.enclavePubKey))));
        verifiedKeys[enclaveAddress] = imageId;
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
        if (signer != enclaveAddress) revert ExecutorsInvalidSigner();
    }
}
