// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Sig} from "../lib/Sig.sol";
import {IStakeToken, ITeeManager, ITeeExecutors, ITeeSecretStore, ITeeSecretManager} from "./Interfaces.sol";

/// @title Jobs — job requests and outputs of the TEE generation (development version).
/// @notice `createJob(uint8 env, uint256 secretId, bytes32 codehash, bytes codeInputs, uint256 deadline)`
///         (0xbff97e1e): with a secret, the job owner must be allowed on it
///         (SecretManager.verifyUserAndGetSelectedStores) and its holders are selected first;
///         `JobCreated` carries `secretId` as its first data word. `submitOutput` (0x4af50fc8) and
///         `slashOnExecutionTimeout` (0x95e11ef7) behave as v2's dev Jobs (contracts/Jobs.sol): job
///         ids from 0, Panic(0x32) for an id never created, the same check order, deletion at the
///         3rd output, callbacks with all remaining gas; the signer must pass
///         TeeManager.allowOnlyVerified. Each release of an executor slot goes through
///         Executors → TeeManager.updateTreeState (the storage-capacity hazard).
///
/// DEVELOPMENT SIMPLIFICATIONS: no proxy, no roles (the deployer wires the contracts); each output
/// pays the executor's owner `escrow / selected`; a slash cuts one slash of stake, sent to the
/// job owner, and refunds the unpaid escrow.
contract Jobs {
    struct Job {
        uint256 execStartTime; // seconds
        uint256 deadline; // milliseconds
        address jobOwner;
        uint8 env;
        uint8 outputCount;
        uint256 escrow;
        uint256 secretId;
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
    uint8 private constant OUTPUTS_TO_DELETE = 3;

    IStakeToken public immutable STAKING_TOKEN;
    IStakeToken public immutable USDC_TOKEN;
    uint256 public immutable SIGN_MAX_AGE;
    uint256 public immutable EXECUTION_BUFFER_TIME;
    uint256 public immutable NO_OF_NODES_TO_SELECT;
    address public immutable STAKING_PAYMENT_POOL;
    address public immutable USDC_PAYMENT_POOL;
    bytes32 public immutable DOMAIN_SEPARATOR;
    address public immutable deployer;

    ITeeManager public teeManager;
    ITeeExecutors public executors;
    ITeeSecretStore public secretStore;
    ITeeSecretManager public secretManager;

    mapping(uint8 => ExecutionEnv) public executionEnv;
    Job[] public jobs;
    mapping(uint256 => mapping(address => uint8)) private executorState;

    event JobCreated(
        uint256 indexed jobId,
        uint8 indexed env,
        address indexed jobOwner,
        uint256 secretId,
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
    event GlobalEnvAdded(uint8 indexed env, uint256 executionFeePerMs, uint256 stakingRewardPerMs);

    error JobsZeroAddressStakingToken();
    error JobsZeroAddressUsdcToken();
    error JobsZeroAddressAdmin();
    error JobsGlobalEnvAlreadySupported();
    error JobsGlobalEnvAlreadyUnsupported();
    error JobsUnavailableResources();
    error JobsExecutionTimeOver();
    error JobsSignatureTooOld();
    error JobsNotSelectedExecutor();
    error JobsExecutorAlreadySubmittedOutput();
    error JobsInvalidJob();
    error JobsDeadlineNotOver();

    constructor(
        IStakeToken _stakingToken,
        IStakeToken _usdcToken,
        uint256 _signMaxAge,
        uint256 _executionBufferTime,
        uint256 _noOfNodesToSelect,
        address _stakingPaymentPoolAddress,
        address _usdcPaymentPoolAddress
    ) {
        if (address(_stakingToken) == address(0)) revert JobsZeroAddressStakingToken();
        if (address(_usdcToken) == address(0)) revert JobsZeroAddressUsdcToken();
        require(_noOfNodesToSelect >= 1 && _noOfNodesToSelect <= type(uint8).max, "Jobs: nodes out of range");
        STAKING_TOKEN = _stakingToken;
        USDC_TOKEN = _usdcToken;
        SIGN_MAX_AGE = _signMaxAge;
        EXECUTION_BUFFER_TIME = _executionBufferTime;
        NO_OF_NODES_TO_SELECT = _noOfNodesToSelect;
        STAKING_PAYMENT_POOL = _stakingPaymentPoolAddress;
        USDC_PAYMENT_POOL = _usdcPaymentPoolAddress;
        DOMAIN_SEPARATOR = Sig.domainSeparator("marlin.oyster.Jobs", "1");
        deployer = msg.sender;
    }

    // ------------------------------------------------------------------ wiring (deployer)

    modifier onlyDeployer() {
        require(msg.sender == deployer, "Jobs: only deployer");
        _;
    }

    function setTeeManager(address _teeManager) external onlyDeployer {
        teeManager = ITeeManager(_teeManager);
    }

    function setExecutors(address _executors) external onlyDeployer {
        executors = ITeeExecutors(_executors);
    }

    function setSecretStore(address _secretStore) external onlyDeployer {
        secretStore = ITeeSecretStore(_secretStore);
    }

    function setSecretManager(address _secretManager) external onlyDeployer {
        secretManager = ITeeSecretManager(_secretManager);
    }

    /// @notice Supports `env` in Executors and SecretStore, with its fees.
    function addGlobalEnv(uint8 _env, uint256 _executionFeePerMs, uint256 _stakingRewardPerMs) external onlyDeployer {
        ExecutionEnv storage e = executionEnv[_env];
        if (e.executionFeePerMs != 0 || e.stakingRewardPerMs != 0) revert JobsGlobalEnvAlreadySupported();
        executionEnv[_env] = ExecutionEnv(_executionFeePerMs, _stakingRewardPerMs);
        executors.initTree(_env);
        secretStore.initTree(_env);
        emit GlobalEnvAdded(_env, _executionFeePerMs, _stakingRewardPerMs);
    }

    // ------------------------------------------------------------------ protocol surface

    function createJob(uint8 _env, uint256 _secretId, bytes32 _codehash, bytes calldata _codeInputs, uint256 _deadline)
        external
        returns (uint256 jobId)
    {
        address[] memory holders = _secretId == 0
            ? new address[](0)
            : secretManager.verifyUserAndGetSelectedStores(_secretId, msg.sender);
        jobId = jobs.length;
        jobs.push();
        uint256 seed = uint256(keccak256(abi.encode(jobId, block.prevrandao, blockhash(block.number - 1))));
        address[] memory selected = executors.selectExecutors(_env, holders, NO_OF_NODES_TO_SELECT, seed);

        ExecutionEnv storage fees = executionEnv[_env];
        uint256 escrow = _deadline * (fees.executionFeePerMs + fees.stakingRewardPerMs);
        Job storage job = jobs[jobId];
        job.execStartTime = block.timestamp;
        job.deadline = _deadline;
        job.jobOwner = msg.sender;
        job.env = _env;
        job.escrow = escrow;
        job.secretId = _secretId;
        job.selectedExecutors = selected;
        for (uint256 i; i < selected.length; ++i) {
            executorState[jobId][selected[i]] = SELECTED;
        }
        if (escrow > 0) USDC_TOKEN.transferFrom(msg.sender, address(this), escrow);
        emit JobCreated(jobId, _env, msg.sender, _secretId, _codehash, _codeInputs, _deadline, selected);
    }

    function submitOutput(
        bytes calldata _signature,
        uint256 _jobId,
        bytes calldata _output,
        uint256 _totalTime,
        uint8 _errorCode,
        uint256 _signTimestamp
    ) external {
        Job storage job = jobs[_jobId]; // Panic(0x32) for an id never created
        if (_windowOver(job)) revert JobsExecutionTimeOver();
        if (block.timestamp > _signTimestamp + SIGN_MAX_AGE) revert JobsSignatureTooOld();
        bytes32 structHash = keccak256(
            abi.encode(SUBMIT_OUTPUT_TYPEHASH, _jobId, keccak256(_output), _totalTime, _errorCode, _signTimestamp)
        );
        address executor = Sig.recover(Sig.typedDataDigest(DOMAIN_SEPARATOR, structHash), _signature);
        teeManager.allowOnlyVerified(executor);
        uint8 state = executorState[_jobId][executor];
        if (state == 0) revert JobsNotSelectedExecutor();
        if (state == RESPONDED) revert JobsExecutorAlreadySubmittedOutput();
        executorState[_jobId][executor] = RESPONDED;
        uint8 outputCount = job.outputCount + 1;
        job.outputCount = outputCount;
        executors.releaseExecutor(executor, outputCount);
        uint256 share = job.escrow / job.selectedExecutors.length;
        if (share > 0) USDC_TOKEN.transfer(teeManager.getTeeNodeOwner(executor), share);
        if (_totalTime > job.deadline) _totalTime = job.deadline;
        emit JobResponded(_jobId, executor, _output, _totalTime, _errorCode, outputCount);

        if (outputCount == OUTPUTS_TO_DELETE) {
            _delete(_jobId, outputCount);
        } else if (outputCount == 1) {
            bool ok = _callback(
                job.jobOwner,
                abi.encodeWithSignature(
                    "oysterResultCall(uint256,bytes,uint8,uint256)", _jobId, _output, _errorCode, _totalTime
                )
            );
            emit JobResultCallbackCalled(_jobId, ok);
        }
    }

    function slashOnExecutionTimeout(uint256 _jobId) external {
        Job storage job = jobs[_jobId]; // Panic(0x32) for an id never created
        address jobOwner = job.jobOwner;
        if (jobOwner == address(0)) revert JobsInvalidJob();
        if (!_windowOver(job)) revert JobsDeadlineNotOver();
        address[] memory selected = job.selectedExecutors;
        uint8 outputCount = job.outputCount;
        uint256 slashAmount;
        for (uint256 i; i < selected.length; ++i) {
            if (executorState[_jobId][selected[i]] != RESPONDED) {
                slashAmount += executors.slashExecutor(selected[i], jobOwner);
                emit SlashedOnExecutionTimeout(_jobId, selected[i]);
            }
        }
        _delete(_jobId, outputCount);
        if (outputCount == 0) {
            bool ok = _callback(
                jobOwner, abi.encodeWithSignature("oysterFailureCall(uint256,uint256)", _jobId, slashAmount)
            );
            emit JobFailureCallbackCalled(_jobId, ok);
        }
    }

    function getSelectedExecutors(uint256 _jobId) external view returns (address[] memory) {
        return jobs[_jobId].selectedExecutors;
    }

    // ------------------------------------------------------------------ internals

    function _windowOver(Job storage job) private view returns (bool) {
        uint256 base = job.execStartTime * 1000 + EXECUTION_BUFFER_TIME * 1000;
        uint256 deadline = job.deadline;
        uint256 end = deadline > type(uint256).max - base ? type(uint256).max : base + deadline;
        return block.timestamp * 1000 > end;
    }

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

    function _callback(address target, bytes memory data) private returns (bool ok) {
        assembly {
            ok := call(gas(), target, 0, add(data, 0x20), mload(data), 0, 0)
        }
    }
}
