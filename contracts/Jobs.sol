// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Sig} from "./lib/Sig.sol";

/// @dev The dev-only plumbing of Executors.sol that Jobs uses.
interface IExecutorsPlumbing {
    function selectExecutors(uint8 env, uint256 count, uint256 seed) external returns (address[] memory);
    function releaseExecutor(address enclaveAddress) external;
    function slashExecutor(address enclaveAddress) external;
}

/// @title Jobs — job requests and outputs (development version of the Oyster Serverless contract).
/// @notice Same external surface as the protocol (shared protocol.md): `createJob`, `submitOutput`
///         (0x4af50fc8), `slashOnExecutionTimeout` (0x95e11ef7), `getSelectedExecutors`, the five
///         events and the custom errors, with the same signatures and selectors.
///
/// Job ids start at 1 and increase by one per `createJob` (0 is never a job).
///
/// DEVELOPMENT SIMPLIFICATIONS (do not deploy to a real network):
///  - No token escrow, fees or rewards. Slashing releases the executor's slot, increments
///    `Executors.slashCount` and emits `SlashedOnExecutionTimeout`; `oysterFailureCall` receives
///    `slashAmount = 0`.
///  - Selection: `NO_OF_NODES_TO_SELECT` executors drawn uniformly (not stake-weighted) with the seed
///    `keccak256(jobId, block.prevrandao, blockhash(block.number - 1))` among registered, non-draining
///    executors of `env` with `activeJobs < jobCapacity`. `createJob` reverts
///    `JobsUnavailableResources()` when fewer than `NO_OF_NODES_TO_SELECT` are free (no partial
///    selection).
///  - No user-chosen callback gas: the callbacks get at most CALLBACK_GAS_LIMIT gas, are only made
///    when the job owner has code, never revert the caller, and their return data is ignored. When
///    the job owner is an EOA no callback is made and no JobResult/FailureCallbackCalled is emitted.
///  - Output signatures are NOT simplified: EIP-712 `SubmitOutput(uint256 jobId,bytes output,
///    uint256 totalTime,uint8 errorCode,uint256 signTimestamp)` (`output` hashed with keccak256) in
///    domain (`marlin.oyster.Jobs`, `1`), no chainId / verifyingContract, recovered with ecrecover
///    (low-s only, v 27/28 or 0/1). A signer that is not one of the job's selected executors (which
///    includes any unregistered key and any malformed signature) gets `JobsNotSelectedExecutor()`.
///  - A job is settled (deleted: `JobsInvalidJob()` afterwards) when every selected executor has
///    responded, or by `slashOnExecutionTimeout`.
contract Jobs {
    struct Job {
        uint256 execStartTime; // seconds
        uint256 deadline; // milliseconds
        address jobOwner;
        uint8 env;
        uint8 outputCount;
        address[] selectedExecutors;
    }

    bytes32 private constant SUBMIT_OUTPUT_TYPEHASH =
        keccak256("SubmitOutput(uint256 jobId,bytes output,uint256 totalTime,uint8 errorCode,uint256 signTimestamp)");

    uint8 private constant SELECTED = 1;
    uint8 private constant RESPONDED = 2;

    /// @notice Gas forwarded to oysterResultCall / oysterFailureCall (dev choice).
    uint256 public constant CALLBACK_GAS_LIMIT = 500_000;

    IExecutorsPlumbing public immutable EXECUTORS;
    /// @notice seconds
    uint256 public immutable EXECUTION_BUFFER_TIME;
    /// @notice seconds
    uint256 public immutable SIGN_MAX_AGE;
    uint256 public immutable NO_OF_NODES_TO_SELECT;
    bytes32 public immutable DOMAIN_SEPARATOR;

    /// @notice Id of the next job (ids start at 1).
    uint256 public nextJobId = 1;

    /// @notice `jobs(uint256) view returns (uint256 execStartTime, uint256 deadline, address jobOwner,
    ///         uint8 env, uint8 outputCount)`; all zero once settled.
    mapping(uint256 => Job) public jobs;
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
    /// @param executionBufferTimeSeconds EXECUTION_BUFFER_TIME, seconds
    /// @param signMaxAgeSeconds SIGN_MAX_AGE, seconds
    /// @param noOfNodesToSelect NO_OF_NODES_TO_SELECT, 1..255
    constructor(address executors, uint256 executionBufferTimeSeconds, uint256 signMaxAgeSeconds, uint256 noOfNodesToSelect) {
        require(executors != address(0), "Jobs: zero executors");
        require(noOfNodesToSelect >= 1 && noOfNodesToSelect <= type(uint8).max, "Jobs: nodes out of range");
        require(executionBufferTimeSeconds <= type(uint64).max, "Jobs: buffer too large");
        EXECUTORS = IExecutorsPlumbing(executors);
        EXECUTION_BUFFER_TIME = executionBufferTimeSeconds;
        SIGN_MAX_AGE = signMaxAgeSeconds;
        NO_OF_NODES_TO_SELECT = noOfNodesToSelect;
        DOMAIN_SEPARATOR = Sig.domainSeparator("marlin.oyster.Jobs", "1");
    }

    /// @param deadline execution time budget in milliseconds
    function createJob(uint8 env, bytes32 codehash, bytes calldata codeInputs, uint256 deadline)
        external
        returns (uint256 jobId)
    {
        jobId = nextJobId++;
        uint256 seed = uint256(keccak256(abi.encode(jobId, block.prevrandao, blockhash(block.number - 1))));
        address[] memory selected = EXECUTORS.selectExecutors(env, NO_OF_NODES_TO_SELECT, seed);
        if (selected.length < NO_OF_NODES_TO_SELECT) revert JobsUnavailableResources();

        Job storage job = jobs[jobId];
        job.execStartTime = block.timestamp;
        job.deadline = deadline;
        job.jobOwner = msg.sender;
        job.env = env;
        job.selectedExecutors = selected;
        for (uint256 i; i < selected.length; ++i) {
            executorState[jobId][selected[i]] = SELECTED;
        }

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
        Job storage job = jobs[jobId];
        address jobOwner = job.jobOwner;
        if (jobOwner == address(0)) revert JobsInvalidJob();
        if (_windowOver(job)) revert JobsExecutionTimeOver();

        address executor = _outputSigner(signature, jobId, output, totalTime, errorCode, signTimestamp);
        uint8 state = executorState[jobId][executor];
        if (state == 0) revert JobsNotSelectedExecutor();
        if (state == RESPONDED) revert JobsExecutorAlreadySubmittedOutput();

        executorState[jobId][executor] = RESPONDED;
        uint8 outputCount = job.outputCount + 1;
        job.outputCount = outputCount;
        EXECUTORS.releaseExecutor(executor);

        emit JobResponded(jobId, executor, output, totalTime, errorCode, outputCount);

        if (outputCount == job.selectedExecutors.length) _settle(jobId);

        if (outputCount == 1 && jobOwner.code.length > 0) {
            bool ok = _callback(
                jobOwner,
                abi.encodeWithSignature(
                    "oysterResultCall(uint256,bytes,uint8,uint256)", jobId, output, errorCode, totalTime
                )
            );
            emit JobResultCallbackCalled(jobId, ok);
        }
    }

    function slashOnExecutionTimeout(uint256 jobId) external {
        Job storage job = jobs[jobId];
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
        _settle(jobId);

        if (outputCount == 0 && jobOwner.code.length > 0) {
            uint256 slashAmount = 0; // DEV: no tokens
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

    function _settle(uint256 jobId) private {
        address[] storage selected = jobs[jobId].selectedExecutors;
        for (uint256 i; i < selected.length; ++i) {
            delete executorState[jobId][selected[i]];
        }
        delete jobs[jobId];
    }

    /// Low-level call with capped gas; never reverts, return data is not copied.
    function _callback(address target, bytes memory data) private returns (bool ok) {
        uint256 gasLimit = CALLBACK_GAS_LIMIT;
        assembly {
            ok := call(gasLimit, target, 0, add(data, 0x20), mload(data), 0, 0)
        }
    }
}
