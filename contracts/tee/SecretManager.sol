// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Sig} from "../lib/Sig.sol";
import {IStakeToken, ITeeManager, ITeeExecutors, ITeeSecretStore} from "./Interfaces.sol";

/// @title SecretManager — user secrets held by TEE nodes (development version of the TEE generation's contract).
/// @notice Same external surface as the protocol: `createSecret` (0x2c9475f3) selects
///         NO_OF_NODES_TO_SELECT stores; each acknowledges with an enclave-signed EIP-712
///         `Acknowledge(uint256 secretId,uint256 signTimestamp)` (`acknowledgeStore`, 0x7f4e398c) within
///         ACKNOWLEDGEMENT_TIMEOUT, or anyone calls `acknowledgeStoreFailed` after it; stores prove
///         liveness with `Alive(uint256 signTimestamp)` (`markStoreAlive`, 0x76c32e5e), both in
///         (`marlin.oyster.SecretManager`, `1`) and no older than TeeManager.ATTESTATION_MAX_AGE;
///         `markStoreDead` (anyone) slashes the epochs missed after MARK_ALIVE_TIMEOUT and re-assigns
///         the store's secrets (`SecretStoreReplaced`); the owner updates, terminates and removes
///         secrets; Jobs calls `verifyUserAndGetSelectedStores` (user allowed, not ended, acknowledged;
///         returns the acknowledged stores that are available executors). Secret ids start at 1.
///
/// DEVELOPMENT SIMPLIFICATIONS: no proxy; uniform random store draw; on removal the deposit is
/// split between the owners of the acknowledged stores (no per-second accounting); a failed
/// acknowledgement of the original stores voids the secret (refund), of a replacement store
/// only drops that store.
contract SecretManager {
    struct SelectedEnclave {
        address enclaveAddress;
        bool hasAcknowledgedStore;
        uint256 selectTimestamp;
        uint256 replacedAckTimestamp;
    }

    struct UserStorage {
        uint8 env;
        address owner;
        uint256 sizeLimit;
        uint256 usdcDeposit;
        uint256 startTimestamp;
        uint256 endTimestamp;
        uint256 ackTimestamp;
        address[] allowedAddresses;
        SelectedEnclave[] selectedEnclaves;
    }

    bytes32 private constant ACKNOWLEDGE_TYPEHASH = keccak256("Acknowledge(uint256 secretId,uint256 signTimestamp)");
    bytes32 private constant ALIVE_TYPEHASH = keccak256("Alive(uint256 signTimestamp)");

    IStakeToken public immutable USDC_TOKEN;
    uint256 public immutable NO_OF_NODES_TO_SELECT;
    uint256 public immutable GLOBAL_MAX_SECRET_SIZE;
    uint256 public immutable GLOBAL_MIN_STORE_DURATION;
    uint256 public immutable GLOBAL_MAX_STORE_DURATION;
    uint256 public immutable ACKNOWLEDGEMENT_TIMEOUT;
    uint256 public immutable MARK_ALIVE_TIMEOUT;
    uint256 public immutable SECRET_STORE_FEE_RATE;
    address public immutable STAKING_PAYMENT_POOL;
    ITeeManager public immutable TEE_MANAGER;
    ITeeExecutors public immutable EXECUTORS;
    ITeeSecretStore public immutable SECRET_STORE;
    bytes32 public immutable DOMAIN_SEPARATOR;

    mapping(uint256 => UserStorage) public userStorage;
    uint256 public secretId;
    /// store => ids of the secrets it was selected for (may list removed ones)
    mapping(address => uint256[]) private storeSecretIds;

    event SecretCreated(
        uint256 indexed secretId,
        address indexed owner,
        uint256 sizeLimit,
        uint256 endTimestamp,
        uint256 usdcDeposit,
        address[] selectedEnclaves
    );
    event SecretStoreAcknowledgementSuccess(uint256 indexed secretId, address indexed enclaveAddress);
    event SecretStoreAcknowledgementFailed(uint256 indexed secretId);
    event SecretStoreReplaced(
        uint256 indexed secretId, address indexed prevEnclaveAddress, address indexed newEnclaveAddress, bool isMarkedDead
    );
    event SecretStoreAlive(address indexed enclaveAddress);
    event SecretReplicationReduced(uint256 indexed secretId, uint256 replicationCount);
    event SecretEndTimestampUpdated(uint256 indexed secretId, uint256 endTimestamp);
    event SecretTerminated(uint256 indexed secretId, uint256 timestamp);
    event SecretRemoved(uint256 indexed secretId);

    error SecretManagerZeroAddressUsdcToken();
    error SecretManagerZeroAddressAdmin();
    error SecretManagerSignatureTooOld();
    error SecretManagerCallerIsNotSecretStore();
    error SecretManagerInsufficientUsdcDeposit();
    error SecretManagerInvalidSizeLimit();
    error SecretManagerInvalidEndTimestamp();
    error SecretManagerUnavailableResources();
    error SecretManagerAcknowledgementTimeOver();
    error SecretManagerAcknowledgementTimeoutPending(address enclaveAddress);
    error SecretManagerAcknowledgedAlready();
    error SecretManagerUnacknowledged();
    error SecretManagerNodeIsDraining();
    error SecretManagerEnclaveNotFound();
    error SecretManagerStoreIsAlive();
    error SecretManagerInvalidSecretOwner();
    error SecretManagerAlreadyTerminated();
    error SecretManagerCantAckWhileDraining();
    error SecretManagerTerminationPending();
    error SecretManagerAlreadyAcknowledged();
    error SecretManagerUserNotAllowed();
    error SecretManagerInvalidSecret();
    error SecretManagerStoreNotDraining();

    constructor(
        IStakeToken _usdcToken,
        uint256 _noOfNodesToSelect,
        uint256 _globalMaxSecretSize,
        uint256 _globalMinStoreDuration,
        uint256 _globalMaxStoreDuration,
        uint256 _acknowledgementTimeout,
        uint256 _markAliveTimeout,
        uint256 _secretStoreFeeRate,
        address _stakingPaymentPool,
        ITeeManager _teeManager,
        ITeeExecutors _executors,
        ITeeSecretStore _secretStore
    ) {
        if (address(_usdcToken) == address(0)) revert SecretManagerZeroAddressUsdcToken();
        require(_markAliveTimeout > 0 && _noOfNodesToSelect > 0, "SecretManager: bad parameters");
        USDC_TOKEN = _usdcToken;
        NO_OF_NODES_TO_SELECT = _noOfNodesToSelect;
        GLOBAL_MAX_SECRET_SIZE = _globalMaxSecretSize;
        GLOBAL_MIN_STORE_DURATION = _globalMinStoreDuration;
        GLOBAL_MAX_STORE_DURATION = _globalMaxStoreDuration;
        ACKNOWLEDGEMENT_TIMEOUT = _acknowledgementTimeout;
        MARK_ALIVE_TIMEOUT = _markAliveTimeout;
        SECRET_STORE_FEE_RATE = _secretStoreFeeRate;
        STAKING_PAYMENT_POOL = _stakingPaymentPool;
        TEE_MANAGER = _teeManager;
        EXECUTORS = _executors;
        SECRET_STORE = _secretStore;
        DOMAIN_SEPARATOR = Sig.domainSeparator("marlin.oyster.SecretManager", "1");
    }

    // ------------------------------------------------------------------ users

    function createSecret(
        uint8 _env,
        uint256 _sizeLimit,
        uint256 _endTimestamp,
        uint256 _usdcDeposit,
        address[] calldata _allowedAddresses
    ) external {
        if (_sizeLimit == 0 || _sizeLimit > GLOBAL_MAX_SECRET_SIZE) revert SecretManagerInvalidSizeLimit();
        if (
            _endTimestamp < block.timestamp + GLOBAL_MIN_STORE_DURATION
                || _endTimestamp > block.timestamp + GLOBAL_MAX_STORE_DURATION
        ) revert SecretManagerInvalidEndTimestamp();
        uint256 minDeposit = (_endTimestamp - block.timestamp) * _sizeLimit * SECRET_STORE_FEE_RATE * NO_OF_NODES_TO_SELECT;
        if (_usdcDeposit < minDeposit) revert SecretManagerInsufficientUsdcDeposit();
        USDC_TOKEN.transferFrom(msg.sender, address(this), _usdcDeposit);

        uint256 id = ++secretId;
        address[] memory stores =
            SECRET_STORE.selectStores(_env, NO_OF_NODES_TO_SELECT, _sizeLimit, new address[](0), _seed(id));
        if (stores.length < NO_OF_NODES_TO_SELECT) revert SecretManagerUnavailableResources();
        UserStorage storage u = userStorage[id];
        u.env = _env;
        u.owner = msg.sender;
        u.sizeLimit = _sizeLimit;
        u.usdcDeposit = _usdcDeposit;
        u.startTimestamp = block.timestamp;
        u.endTimestamp = _endTimestamp;
        u.allowedAddresses = _allowedAddresses;
        for (uint256 i; i < stores.length; ++i) {
            u.selectedEnclaves.push(SelectedEnclave(stores[i], false, block.timestamp, 0));
            storeSecretIds[stores[i]].push(id);
        }
        emit SecretCreated(id, msg.sender, _sizeLimit, _endTimestamp, _usdcDeposit, stores);
    }

    function updateSecretEndTimestamp(uint256 _secretId, uint256 _endTimestamp, uint256 _usdcDeposit) external {
        UserStorage storage u = _ownedSecret(_secretId);
        if (block.timestamp > u.endTimestamp) revert SecretManagerAlreadyTerminated();
        if (
            _endTimestamp < block.timestamp + GLOBAL_MIN_STORE_DURATION
                || _endTimestamp > u.startTimestamp + GLOBAL_MAX_STORE_DURATION
        ) revert SecretManagerInvalidEndTimestamp();
        if (_endTimestamp > u.endTimestamp) {
            uint256 minDeposit =
                (_endTimestamp - u.endTimestamp) * u.sizeLimit * SECRET_STORE_FEE_RATE * NO_OF_NODES_TO_SELECT;
            if (_usdcDeposit < minDeposit) revert SecretManagerInsufficientUsdcDeposit();
        }
        USDC_TOKEN.transferFrom(msg.sender, address(this), _usdcDeposit);
        u.usdcDeposit += _usdcDeposit;
        u.endTimestamp = _endTimestamp;
        emit SecretEndTimestampUpdated(_secretId, _endTimestamp);
    }

    function terminateSecret(uint256 _secretId) external {
        UserStorage storage u = _ownedSecret(_secretId);
        if (block.timestamp > u.endTimestamp) revert SecretManagerAlreadyTerminated();
        u.endTimestamp = block.timestamp;
        emit SecretTerminated(_secretId, block.timestamp);
    }

    /// @notice After the end: frees the stores and pays them the deposit.
    function removeSecret(uint256 _secretId) external {
        UserStorage storage u = _ownedSecret(_secretId);
        if (block.timestamp <= u.endTimestamp) revert SecretManagerTerminationPending();
        SelectedEnclave[] storage selected = u.selectedEnclaves;
        uint256 acked;
        for (uint256 i; i < selected.length; ++i) {
            if (selected[i].hasAcknowledgedStore) acked++;
        }
        uint256 share = acked == 0 ? 0 : u.usdcDeposit / acked;
        uint256 paid;
        for (uint256 i; i < selected.length; ++i) {
            SECRET_STORE.releaseStorage(selected[i].enclaveAddress, u.sizeLimit);
            address owner = TEE_MANAGER.getTeeNodeOwner(selected[i].enclaveAddress);
            if (selected[i].hasAcknowledgedStore && share > 0 && owner != address(0)) {
                USDC_TOKEN.transfer(owner, share);
                paid += share;
            }
        }
        uint256 refund = u.usdcDeposit - paid;
        address secretOwner = u.owner;
        delete userStorage[_secretId];
        if (refund > 0) USDC_TOKEN.transfer(secretOwner, refund);
        emit SecretRemoved(_secretId);
    }

    function setSecretAllowedAddresses(uint256 _secretId, address[] calldata _allowedAddresses) external {
        _ownedSecret(_secretId).allowedAddresses = _allowedAddresses;
    }

    // ------------------------------------------------------------------ stores

    function acknowledgeStore(uint256 _secretId, uint256 _signTimestamp, bytes calldata _signature) external {
        UserStorage storage u = userStorage[_secretId];
        if (u.owner == address(0)) revert SecretManagerInvalidSecret();
        if (_signTimestamp > u.endTimestamp) revert SecretManagerAlreadyTerminated();
        _checkSignAge(_signTimestamp);
        bytes32 structHash = keccak256(abi.encode(ACKNOWLEDGE_TYPEHASH, _secretId, _signTimestamp));
        address enclave = Sig.recover(Sig.typedDataDigest(DOMAIN_SEPARATOR, structHash), _signature);
        TEE_MANAGER.allowOnlyVerified(enclave);
        if (TEE_MANAGER.getDrainingStatus(enclave)) revert SecretManagerCantAckWhileDraining();
        SelectedEnclave storage sel = u.selectedEnclaves[_indexOf(u, enclave)];
        if (block.timestamp > sel.selectTimestamp + ACKNOWLEDGEMENT_TIMEOUT) revert SecretManagerAcknowledgementTimeOver();
        if (sel.hasAcknowledgedStore) revert SecretManagerAlreadyAcknowledged();
        sel.hasAcknowledgedStore = true;
        if (sel.selectTimestamp != u.startTimestamp) sel.replacedAckTimestamp = _signTimestamp;
        else if (u.ackTimestamp == 0 && _allAcknowledged(u)) u.ackTimestamp = _signTimestamp;
        emit SecretStoreAcknowledgementSuccess(_secretId, enclave);
    }

    /// @notice Anyone, once a selected store let ACKNOWLEDGEMENT_TIMEOUT pass without acknowledging.
    function acknowledgeStoreFailed(uint256 _secretId) external {
        UserStorage storage u = userStorage[_secretId];
        if (u.owner == address(0)) revert SecretManagerInvalidSecret();
        SelectedEnclave[] storage selected = u.selectedEnclaves;
        bool failed;
        for (uint256 i; i < selected.length; ++i) {
            if (selected[i].hasAcknowledgedStore) continue;
            if (block.timestamp <= selected[i].selectTimestamp + ACKNOWLEDGEMENT_TIMEOUT) {
                revert SecretManagerAcknowledgementTimeoutPending(selected[i].enclaveAddress);
            }
            failed = true;
        }
        if (!failed) revert SecretManagerAcknowledgedAlready();
        if (u.ackTimestamp == 0) {
            // the original stores never all acknowledged: the secret is void, the owner refunded
            for (uint256 i; i < selected.length; ++i) {
                SECRET_STORE.releaseStorage(selected[i].enclaveAddress, u.sizeLimit);
            }
            uint256 refund = u.usdcDeposit;
            address owner = u.owner;
            delete userStorage[_secretId];
            if (refund > 0) USDC_TOKEN.transfer(owner, refund);
            emit SecretStoreAcknowledgementFailed(_secretId);
            return;
        }
        // a replacement store failed: drop it
        for (uint256 i = selected.length; i > 0; --i) {
            SelectedEnclave storage sel = selected[i - 1];
            if (!sel.hasAcknowledgedStore) {
                SECRET_STORE.releaseStorage(sel.enclaveAddress, u.sizeLimit);
                selected[i - 1] = selected[selected.length - 1];
                selected.pop();
            }
        }
        emit SecretReplicationReduced(_secretId, selected.length);
    }

    function markStoreAlive(uint256 _signTimestamp, bytes calldata _signature) external {
        _checkSignAge(_signTimestamp);
        bytes32 structHash = keccak256(abi.encode(ALIVE_TYPEHASH, _signTimestamp));
        address enclave = Sig.recover(Sig.typedDataDigest(DOMAIN_SEPARATOR, structHash), _signature);
        TEE_MANAGER.allowOnlyVerified(enclave);
        SECRET_STORE.markAlive(enclave);
        emit SecretStoreAlive(enclave);
    }

    /// @notice Anyone, once a non-draining store missed MARK_ALIVE_TIMEOUT: slashes the missed
    ///         epochs and re-assigns its secrets.
    function markStoreDead(address _enclaveAddress) external {
        if (TEE_MANAGER.getTeeNodeOwner(_enclaveAddress) == address(0)) revert SecretManagerEnclaveNotFound();
        if (TEE_MANAGER.getDrainingStatus(_enclaveAddress)) revert SecretManagerNodeIsDraining();
        if (block.timestamp <= SECRET_STORE.lastAliveTimestamp(_enclaveAddress) + MARK_ALIVE_TIMEOUT) {
            revert SecretManagerStoreIsAlive();
        }
        SECRET_STORE.markDead(_enclaveAddress, STAKING_PAYMENT_POOL);
        _reassign(_enclaveAddress, true);
    }

    /// @notice SecretStore, when the node drains: its secrets go to other stores.
    function renounceSecrets(address _enclaveAddress) external {
        if (msg.sender != address(SECRET_STORE)) revert SecretManagerCallerIsNotSecretStore();
        _reassign(_enclaveAddress, false);
    }

    // ------------------------------------------------------------------ views

    function verifyUserAndGetSelectedStores(uint256 _secretId, address _jobOwner)
        external
        view
        returns (address[] memory stores)
    {
        UserStorage storage u = userStorage[_secretId];
        if (_jobOwner != u.owner || u.owner == address(0)) {
            bool allowed;
            for (uint256 i; i < u.allowedAddresses.length && !allowed; ++i) {
                allowed = u.allowedAddresses[i] == _jobOwner;
            }
            if (!allowed) revert SecretManagerUserNotAllowed();
        }
        if (block.timestamp > u.endTimestamp) revert SecretManagerAlreadyTerminated();
        if (u.ackTimestamp == 0) revert SecretManagerUnacknowledged();
        SelectedEnclave[] storage selected = u.selectedEnclaves;
        address[] memory found = new address[](selected.length);
        uint256 n;
        for (uint256 i; i < selected.length; ++i) {
            address a = selected[i].enclaveAddress;
            if (selected[i].hasAcknowledgedStore && EXECUTORS.isAvailable(a)) found[n++] = a;
        }
        stores = new address[](n);
        for (uint256 i; i < n; ++i) {
            stores[i] = found[i];
        }
    }

    function getSelectedEnclaves(uint256 _secretId) external view returns (SelectedEnclave[] memory) {
        return userStorage[_secretId].selectedEnclaves;
    }

    // ------------------------------------------------------------------ internals

    function _ownedSecret(uint256 _secretId) private view returns (UserStorage storage u) {
        u = userStorage[_secretId];
        if (u.owner == address(0) || u.owner != msg.sender) revert SecretManagerInvalidSecretOwner();
    }

    function _checkSignAge(uint256 _signTimestamp) private view {
        if (block.timestamp > _signTimestamp + TEE_MANAGER.ATTESTATION_MAX_AGE()) revert SecretManagerSignatureTooOld();
    }

    function _indexOf(UserStorage storage u, address enclave) private view returns (uint256) {
        for (uint256 i; i < u.selectedEnclaves.length; ++i) {
            if (u.selectedEnclaves[i].enclaveAddress == enclave) return i;
        }
        revert SecretManagerEnclaveNotFound();
    }

    function _allAcknowledged(UserStorage storage u) private view returns (bool) {
        for (uint256 i; i < u.selectedEnclaves.length; ++i) {
            if (!u.selectedEnclaves[i].hasAcknowledgedStore) return false;
        }
        return true;
    }

    function _seed(uint256 salt) private view returns (uint256) {
        return uint256(keccak256(abi.encode(salt, block.prevrandao, blockhash(block.number - 1))));
    }

    /// Moves every live secret of `enclave` to another store (or drops the copy when none is free).
    function _reassign(address enclave, bool markedDead) private {
        uint256[] memory ids = storeSecretIds[enclave];
        delete storeSecretIds[enclave];
        for (uint256 k; k < ids.length; ++k) {
            uint256 id = ids[k];
            UserStorage storage u = userStorage[id];
            SelectedEnclave[] storage selected = u.selectedEnclaves;
            uint256 idx = type(uint256).max;
            address[] memory current = new address[](selected.length);
            for (uint256 i; i < selected.length; ++i) {
                current[i] = selected[i].enclaveAddress;
                if (current[i] == enclave) idx = i;
            }
            if (idx == type(uint256).max) continue; // removed or already moved
            SECRET_STORE.releaseStorage(enclave, u.sizeLimit);
            address[] memory fresh = block.timestamp > u.endTimestamp
                ? new address[](0)
                : SECRET_STORE.selectStores(u.env, 1, u.sizeLimit, current, _seed(id));
            if (fresh.length == 1) {
                selected[idx] = SelectedEnclave(fresh[0], false, block.timestamp, 0);
                storeSecretIds[fresh[0]].push(id);
                emit SecretStoreReplaced(id, enclave, fresh[0], markedDead);
            } else {
                selected[idx] = selected[selected.length - 1];
                selected.pop();
                emit SecretReplicationReduced(id, selected.length);
            }
        }
    }
}
