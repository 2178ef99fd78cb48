// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Sig} from "./lib/Sig.sol";

/// @dev What Jobs uses of Executors.sol.
interface IExecutorsForJobs {
    function selectExecutors(uint8 env, uint256 count, uint256 seed) external returns (address[] memory);
    function releaseExecutor(address enclaveAddress) external;
    function slashExecutor(address enclaveAddress) external;
    function allowOnlyVerified(address enclaveAddress) external view;
    function getOwner(address enclaveAddress) external view returns (address);
}

/// @dev The part of ERC20 Jobs uses.
interface IERC20Fees {
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// @title Jobs — job requests and outputs (development version of the Oyster Serverless contract).
/// @notice Same external surface as the protocol (shared protocol.md): `createJob`, `submitOutput`
///         (0x4af50fc8), `slashOnExecutionTimeout` (0x95e11ef7), `getSelectedExecutors`, the five
///         events and the custom errors, and what Marlin's published Jobs does where an executor
///         can tell (see contracts/README.md):
///  - job ids start at 0; an id never created reverts `Panic(0x32)` (array index out of bounds);
///  - `createJob` escrows `deadline × (executionFeePerMs + stakingRewardPerMs)` of USDC_TOKEN from
///    the job owner with `transferFrom` (ERC20 errors bubble up);
///  - `submitOutput` checks, in order: `JobsExecutionTimeOver`, `JobsSignatureTooOld`, OpenZeppelin's
///    ECDSA errors, `AttestationAutherKeyNotVerified` (the signer is not a verified enclave key),
///    `JobsNotSelectedExecutor`, `JobsExecutorAlreadySubmittedOutput`; `totalTime` is capped at
///    `deadline` in `JobResponded`; each output pays the executor's owner its share of the escrow;
///  - the job is deleted at the 3rd output, whatever NO_OF_NODES_TO_SELECT is: afterwards
///    `submitOutput` reverts `JobsExecutionTimeOver` and `slashOnExecutionTimeout` `JobsInvalidJob`;
///  - the first output calls `jobOwner.oysterResultCall(jobId, output, errorCode, totalTime)` with
///    ALL remaining gas (63/64), and a timeout with no output `oysterFailureCall(jobId, slashAmount)`
///    the same way; a failed callback does not revert.
///
/// DEVELOPMENT SIMPLIFICATIONS (do not deploy to a real network): no proxy; the same fees for every
/// env; selection is uniform pseudo-random among free executors (Executors.selectExecutors); a
/// slash frees the slot and refunds the unpaid escrow to the job owner (`slashAmount` is 0).
contract Jobs {
    struct Job {
        uint256 execStartTime; // seconds
        uint256 deadline; // milliseconds
        address jobOwner;
        uint8 env;
        uint8 outputCount;
        uint256 escrow; // USDC held for this job
        address[] selectedExecutors;
    }

    struct ExecutionEnv {
        uint256 executionFeePerMs;
        uint256 stakingRewardPerMs;
    }

    bytes32 private constant SUBMIT_OUTPUT_TYPEHASH =
        keccak256("SubmitOutput(uint256 jobId,bytes output,uint256 totalTime,uint8 errorCode,uint256 signTimestamp)");

    uint8 private constant SELECTED = 1;
    uint8 private constant RESPONDED = 2;
    /// @dev As published: the job's record goes at this many outputs.
    uint8 private constant OUTPUTS_TO_DELETE = 3;

    IExecutorsForJobs public immutable EXECUTORS;
    /// @notice The fee token (USDC on Marlin's network).
    IERC20Fees public immutable USDC_TOKEN;
    /// @notice seconds
    uint256 public immutable EXECUTION_BUFFER_TIME;
    /// @notice seconds
    uint256 public immutable SIGN_MAX_AGE;
    uint256 public immutable NO_OF_NODES_TO_SELECT;
    bytes32 public immutable DOMAIN_SEPARATOR;

    /// @notice Fees per env, USDC base units per millisecond of `deadline`.
    mapping(uint8 => ExecutionEnv) public executionEnv;

    /// @notice `jobs(uint256) view returns (uint256 execStartTime, uint256 deadline, address jobOwner,
    ///         uint8 env, uint8 outputCount, uint256 escrow)`; all zero once deleted.
    Job[] public jobs;
    /// jobId => enclave => 0 (not selected) / SELECTED / RESPONDED
    mapping(uint256 => mapping(address => uint8)) private executorState;

    event JobCreated(
        uint256 indexed jobId,
        uint8 indexed env,
        address indexed jobOwner,
        bytes32 codehash,
        bytes codeInputs,
        uint256 deadline,
        address[] selectedExecutors
    );
    event JobResponded(
        uint256 indexed jobId, address indexed executor, bytes output, uint256 totalTime, uint8 errorCode, uint8 outputCount
    );
    event SlashedOnExecutionTimeout(uint256 indexed jobId, address indexed enclaveAddress);
    event JobResultCallbackCalled(uint256 indexed jobId, bool callback_success);
    event JobFailureCallbackCalled(uint256 indexed jobId, bool callback_success);

    error JobsUnavailableResources();
    error JobsExecutionTimeOver();
    error JobsSignatureTooOld();
    error JobsNotSelectedExecutor();
    error JobsExecutorAlreadySubmittedOutput();
    error JobsInvalidJob();
    error JobsDeadlineNotOver();

    /// @param executors the Executors contract (its `setJobsContract` must then be called with this address)
    /// @param usdc the fee token
    /// @param executionBufferTimeSeconds EXECUTION_BUFFER_TIME, seconds
    /// @param signMaxAgeSeconds SIGN_MAX_AGE, seconds
    /// @param noOfNodesToSelect NO_OF_NODES_TO_SELECT, 1..255
    /// @param executionFeePerMs fee of envs 1 and 2, per ms of deadline
    /// @param stakingRewardPerMs staking reward of envs 1 and 2, per ms of deadline
    constructor(
        address executors,
        address usdc,
        uint256 executionBufferTimeSeconds,
        uint256 signMaxAgeSeconds,
        uint256 noOfNodesToSelect,
        uint256 executionFeePerMs,
        uint256 stakingRewardPerMs
    ) {
        require(executors != address(0) && usdc != address(0), "Jobs: zero address");
        require(noOfNodesToSelect >= 1 && noOfNodesToSelect <= type(uint8).max, "Jobs: nodes out of range");
        require(executionBufferTimeSeconds <= type(uint64).max, "Jobs: buffer too large");
        EXECUTORS = IExecutorsForJobs(executors);
        USDC_TOKEN = IERC20Fees(usdc);
        EXECUTION_BUFFER_TIME = executionBufferTimeSeconds;
        SIGN_MAX_AGE = signMaxAgeSeconds;
        NO_OF_NODES_TO_SELECT = noOfNodesToSelect;
        DOMAIN_SEPARATOR = Sig.domainSeparator("marlin.oyster.Jobs", "1");
        executionEnv[1] = ExecutionEnv(executionFeePerMs, stakingRewardPerMs);
        executionEnv[2] = ExecutionEnv(executionFeePerMs, stakingRewardPerMs);
    }

    /// @notice What `createJob` escrows for a job of `env` with `deadline` ms.
    function _jobPrice(uint8 env, uint256 deadline) private view returns (uint256) {
        ExecutionEnv storage e = executionEnv[env];
        return deadline * (e.executionFeePerMs + e.stakingRewardPerMs);
    }

    /// @param deadline execution time budget in milliseconds
    function createJob(uint8 env, bytes32 codehash, bytes calldata codeInputs, uint256 deadline)
        external
        returns (uint256 jobId)
    {
        jobId = jobs.length;
        jobs.push();
        uint256 seed = uint256(keccak256(abi.encode(jobId, block.prevrandao, blockhash(block.number - 1))));
        address[] memory selected = EXECUTORS.selectExecutors(env, NO_OF_NODES_TO_SELECT, seed);
        if (selected.length < NO_OF_NODES_TO_SELECT) revert JobsUnavailableResources();

        uint256 escrow = _jobPrice(env, deadline);
        Job storage job = jobs[jobId];
        job.execStartTime = block.timestamp;
        job.deadline = deadline;
        job.jobOwner = msg.sender;
        job.env = env;
        job.escrow = escrow;
        job.selectedExecutors = selected;
        for (uint256 i; i < selected.length; ++i) {
            executorState[jobId][selected[i]] = SELECTED;
        }
        if (escrow > 0) USDC_TOKEN.transferFrom(msg.sender, address(this), escrow);

        emit JobCreated(jobId, env, msg.sender, codehash, codeInputs, deadline, selected);
    }

    function submitOutput(
        bytes calldata signature,
        uint256 jobId,
        bytes calldata output,
        uint256 totalTime,
        uint8 errorCode,
        uint256 signTimestamp
    ) external {
        Job storage job = jobs[jobId]; // Panic(0x32) for an id never created
        if (_windowOver(job)) revert JobsExecutionTimeOver(); // also a deleted job
        address executor = _outputSigner(signature, jobId, output, totalTime, errorCode, signTimestamp);
        uint8 outputCount = _acceptOutput(job, jobId, executor);
        if (totalTime > job.deadline) totalTime = job.deadline;
        emit JobResponded(jobId, executor, output, totalTime, errorCode, outputCount);

        if (outputCount == OUTPUTS_TO_DELETE) {
            _delete(jobId, outputCount);
        } else if (outputCount == 1) {
            bool ok = _callback(
                job.jobOwner,
                abi.encodeWithSignature(
                    "oysterResultCall(uint256,bytes,uint8,uint256)", jobId, output, errorCode, totalTime
                )
            );
            emit JobResultCallbackCalled(jobId, ok);
        }
    }

    function slashOnExecutionTimeout(uint256 jobId) external {
        Job storage job = jobs[jobId]; // Panic(0x32) for an id never created
        address jobOwner = job.jobOwner;
        if (jobOwner == address(0)) revert JobsInvalidJob();
        if (!_windowOver(job)) revert JobsDeadlineNotOver();

        address[] memory selected = job.selectedExecutors;
        uint8 outputCount = job.outputCount;
        for (uint256 i; i < selected.length; ++i) {
            if (executorState[jobId][selected[i]] != RESPONDED) {
                EXECUTORS.slashExecutor(selected[i]);
                emit SlashedOnExecutionTimeout(jobId, selected[i]);
            }
        }
        _delete(jobId, outputCount);

        if (outputCount == 0) {
            uint256 slashAmount = 0; // DEV: stakes are not cut
            bool ok = _callback(
                jobOwner, abi.encodeWithSignature("oysterFailureCall(uint256,uint256)", jobId, slashAmount)
            );
            emit JobFailureCallbackCalled(jobId, ok);
        }
    }

    function getSelectedExecutors(uint256 jobId) external view returns (address[] memory) {
        return jobs[jobId].selectedExecutors;
    }

    // ------------------------------------------------------------------ internals

    /// block.timestamp*1000 > execStartTime*1000 + deadline + EXECUTION_BUFFER_TIME*1000 (saturating)
    function _windowOver(Job storage job) private view returns (bool) {
        uint256 base = job.execStartTime * 1000 + EXECUTION_BUFFER_TIME * 1000;
        uint256 deadline = job.deadline;
        uint256 end = deadline > type(uint256).max - base ? type(uint256).max : base + deadline;
        return block.timestamp * 1000 > end;
    }

    function _outputSigner(
        bytes calldata signature,
        uint256 jobId,
        bytes calldata output,
        uint256 totalTime,
        uint8 errorCode,
        uint256 signTimestamp
    ) private view returns (address) {
        // block.timestamp > signTimestamp + SIGN_MAX_AGE, written so it cannot overflow
        if (block.timestamp > signTimestamp && block.timestamp - signTimestamp > SIGN_MAX_AGE) {
            revert JobsSignatureTooOld();
        }
        bytes32 structHash = keccak256(
            abi.encode(SUBMIT_OUTPUT_TYPEHASH, jobId, keccak256(output), totalTime, errorCode, signTimestamp)
        );
        return Sig.recover(Sig.typedDataDigest(DOMAIN_SEPARATOR, structHash), signature);
    }

    /// Checks the signer may answer, records its output, frees its slot and pays its owner.
    function _acceptOutput(Job storage job, uint256 jobId, address executor) private returns (uint8 outputCount) {
        EXECUTORS.allowOnlyVerified(executor);
        uint8 state = executorState[jobId][executor];
        if (state == 0) revert JobsNotSelectedExecutor();
        if (state == RESPONDED) revert JobsExecutorAlreadySubmittedOutput();
        executorState[jobId][executor] = RESPONDED;
        outputCount = job.outputCount + 1;
        job.outputCount = outputCount;
        EXECUTORS.releaseExecutor(executor);
        uint256 share = job.escrow / job.selectedExecutors.length;
        if (share > 0) USDC_TOKEN.transfer(EXECUTORS.getOwner(executor), share);
    }

    /// Deletes the job's record and refunds the escrow not paid out to the job owner.
    function _delete(uint256 jobId, uint8 outputCount) private {
        Job storage job = jobs[jobId];
        address[] storage selected = job.selectedExecutors;
        uint256 n = selected.length;
        for (uint256 i; i < n; ++i) {
            delete executorState[jobId][selected[i]];
        }
        uint256 refund = job.escrow - (job.escrow / n) * outputCount;
        address jobOwner = job.jobOwner;
        delete jobs[jobId];
        if (refund > 0) USDC_TOKEN.transfer(jobOwner, refund);
    }

    /// Low-level call with all remaining gas, as published; never reverts, return data is not copied.
    function _callback(address target, bytes memory data) private returns (bool ok) {
        assembly {
            ok := call(gas(), target, 0, add(data, 0x20), mload(data), 0, 0)
        }
    }
}
