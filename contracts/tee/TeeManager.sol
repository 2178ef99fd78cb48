// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {Sig} from "../lib/Sig.sol";
import {Attestation, IAttestationVerifier} from "../DevAttestationVerifier.sol";
import {ITeeExecutors, ITeeSecretStore, IStakeToken} from "./Interfaces.sol";

/// @title TeeManager — TEE node registry (development version of the TEE generation's contract).
/// @notice One enclave key registers once as both an executor and a secret store, with one POND
///         stake. Same external surface as the protocol (`registerTeeNode` 0xade8dec6,
///         `drainTeeNode`, `reviveTeeNode`, `deregisterTeeNode`, stake add/remove, `teeNodes`,
///         `getTeeNodeOwner`, `getDrainingStatus`, `allowOnlyVerified`, the TeeNode* events and the
///         TeeManager* / AttestationAuther* errors), checked in the published order:
///  - registration: node exists (`TeeManagerEnclaveAlreadyExists`), the attestation (64-byte key,
///    48-byte PCRs, whitelisted image, age within ATTESTATION_MAX_AGE, then the verifier), the
///    signature age (`TeeManagerSignatureTooOld`), the EIP-712 `Register(address owner,uint256
///    jobCapacity,uint256 storageCapacity,uint8 env,uint256 signTimestamp)` signer in
///    (`marlin.oyster.TeeManager`, `1`) (`TeeManagerInvalidSigner`), Executors then SecretStore
///    (`ExecutorsUnsupportedEnv` / `SecretStoreUnsupportedEnv`), and last the stake `transferFrom`;
///    a stake below MIN_STAKE_AMOUNT is accepted (the node is then never selected);
///  - `updateTreeState` on every release of an executor slot re-evaluates the node's place in the
///    store selection, where SecretStore computes `storageCapacity - GLOBAL_MAX_SECRET_SIZE`: a node
///    registered with less storage makes every output and slash revert with Panic(0x11), as published.
///
/// DEVELOPMENT SIMPLIFICATIONS: no proxy, no roles (the deployer wires and manages images);
/// slashed stake goes to the given recipient at once.
contract TeeManager {
    struct TeeNode {
        uint256 stakeAmount;
        address owner;
        uint8 env;
        bool draining;
    }

    bytes32 private constant REGISTER_TYPEHASH = keccak256(
        "Register(address owner,uint256 jobCapacity,uint256 storageCapacity,uint8 env,uint256 signTimestamp)"
    );

    IAttestationVerifier public immutable ATTESTATION_VERIFIER;
    uint256 public immutable ATTESTATION_MAX_AGE;
    IStakeToken public immutable STAKING_TOKEN;
    uint256 public immutable MIN_STAKE_AMOUNT;
    uint256 public immutable SLASH_PERCENT_IN_BIPS;
    uint256 public immutable SLASH_MAX_BIPS;
    bytes32 public immutable DOMAIN_SEPARATOR;
    address public immutable deployer;

    ITeeExecutors public executors;
    ITeeSecretStore public secretStore;

    mapping(address => TeeNode) public teeNodes;
    mapping(bytes32 => bool) public whitelistedImages;
    /// enclave address => the image its attestation proved (0: not verified)
    mapping(address => bytes32) public verifiedKeys;

    event TeeNodeRegistered(
        address indexed enclaveAddress, address indexed owner, uint256 jobCapacity, uint256 storageCapacity, uint8 env
    );
    event TeeNodeDrained(address indexed enclaveAddress);
    event TeeNodeRevived(address indexed enclaveAddress);
    event TeeNodeDeregistered(address indexed enclaveAddress);
    event TeeNodeStakeAdded(address indexed enclaveAddress, uint256 addedAmount);
    event TeeNodeStakeRemoved(address indexed enclaveAddress, uint256 removedAmount);
    event EnclaveKeyVerified(address indexed enclaveAddress, bytes32 indexed imageId, bytes enclavePubKey);

    error TeeManagerZeroAddressStakingToken();
    error TeeManagerZeroMinStakeAmount();
    error TeeManagerInvalidSlashParams();
    error TeeManagerZeroAddressAdmin();
    error TeeManagerSignatureTooOld();
    error TeeManagerInvalidSigner();
    error TeeManagerEnclaveAlreadyExists();
    error TeeManagerEnclaveAlreadyDraining();
    error TeeManagerEnclaveAlreadyRevived();
    error TeeManagerEnclaveNotDraining();
    error TeeManagerInvalidEnclaveOwner();
    error TeeManagerInvalidExecutors();
    error TeeManagerInvalidSecretStoreManager();
    error TeeManagerInvalidCaller();

    error AttestationAutherPubkeyLengthInvalid();
    error AttestationAutherPCRsInvalid();
    error AttestationAutherImageNotWhitelisted();
    error AttestationAutherKeyNotVerified();
    error AttestationAutherAttestationTooOld();

    constructor(
        IAttestationVerifier attestationVerifier,
        uint256 maxAge,
        IStakeToken _stakingToken,
        uint256 _minStakeAmount,
        uint256 _slashPercentInBips,
        uint256 _slashMaxBips
    ) {
        if (address(_stakingToken) == address(0)) revert TeeManagerZeroAddressStakingToken();
        if (_minStakeAmount == 0) revert TeeManagerZeroMinStakeAmount();
        if (_slashPercentInBips > _slashMaxBips || _slashMaxBips > 1e6) revert TeeManagerInvalidSlashParams();
        ATTESTATION_VERIFIER = attestationVerifier;
        ATTESTATION_MAX_AGE = maxAge;
        STAKING_TOKEN = _stakingToken;
        MIN_STAKE_AMOUNT = _minStakeAmount;
        SLASH_PERCENT_IN_BIPS = _slashPercentInBips;
        SLASH_MAX_BIPS = _slashMaxBips;
        DOMAIN_SEPARATOR = Sig.domainSeparator("marlin.oyster.TeeManager", "1");
        deployer = msg.sender;
    }

    // ------------------------------------------------------------------ wiring (deployer)

    modifier onlyDeployer() {
        require(msg.sender == deployer, "TeeManager: only deployer");
        _;
    }

    function setExecutors(address _executors) external onlyDeployer {
        if (_executors == address(0)) revert TeeManagerInvalidExecutors();
        executors = ITeeExecutors(_executors);
    }

    function setSecretStore(address _secretStore) external onlyDeployer {
        if (_secretStore == address(0)) revert TeeManagerInvalidSecretStoreManager();
        secretStore = ITeeSecretStore(_secretStore);
    }

    function whitelistEnclaveImage(bytes calldata PCR0, bytes calldata PCR1, bytes calldata PCR2)
        external
        onlyDeployer
        returns (bytes32 imageId)
    {
        _checkPCRs(PCR0, PCR1, PCR2);
        imageId = keccak256(abi.encodePacked(PCR0, PCR1, PCR2));
        whitelistedImages[imageId] = true;
    }

    function revokeEnclaveImage(bytes32 imageId) external onlyDeployer {
        whitelistedImages[imageId] = false;
    }

    // ------------------------------------------------------------------ operator surface

    function registerTeeNode(
        bytes calldata _attestationSignature,
        Attestation calldata _attestation,
        uint256 _jobCapacity,
        uint256 _storageCapacity,
        uint8 _env,
        uint256 _signTimestamp,
        bytes calldata _signature,
        uint256 _stakeAmount
    ) external {
        address enclaveAddress = _addressOf(_attestation.enclavePubKey);
        if (teeNodes[enclaveAddress].owner != address(0)) revert TeeManagerEnclaveAlreadyExists();
        _verifyEnclaveKey(_attestationSignature, _attestation, enclaveAddress);
        _verifyRegistration(enclaveAddress, _jobCapacity, _storageCapacity, _env, _signTimestamp, _signature);

        teeNodes[enclaveAddress] = TeeNode({stakeAmount: _stakeAmount, owner: msg.sender, env: _env, draining: false});
        executors.registerExecutor(enclaveAddress, _jobCapacity, _env);
        secretStore.registerSecretStore(enclaveAddress, _storageCapacity, _env);
        emit TeeNodeRegistered(enclaveAddress, msg.sender, _jobCapacity, _storageCapacity, _env);
        STAKING_TOKEN.transferFrom(msg.sender, address(this), _stakeAmount);
        emit TeeNodeStakeAdded(enclaveAddress, _stakeAmount);
    }

    function drainTeeNode(address _enclaveAddress) external {
        TeeNode storage node = _owned(_enclaveAddress);
        if (node.draining) revert TeeManagerEnclaveAlreadyDraining();
        node.draining = true;
        secretStore.drainSecretStore(_enclaveAddress);
        emit TeeNodeDrained(_enclaveAddress);
    }

    function reviveTeeNode(address _enclaveAddress) external {
        TeeNode storage node = _owned(_enclaveAddress);
        if (!node.draining) revert TeeManagerEnclaveAlreadyRevived();
        node.draining = false;
        secretStore.reviveSecretStore(_enclaveAddress);
        emit TeeNodeRevived(_enclaveAddress);
    }

    function deregisterTeeNode(address _enclaveAddress) external {
        TeeNode storage node = _owned(_enclaveAddress);
        if (!node.draining) revert TeeManagerEnclaveNotDraining();
        executors.deregisterExecutor(_enclaveAddress);
        secretStore.deregisterSecretStore(_enclaveAddress);
        uint256 stake = node.stakeAmount;
        delete teeNodes[_enclaveAddress];
        delete verifiedKeys[_enclaveAddress];
        STAKING_TOKEN.transfer(msg.sender, stake);
        emit TeeNodeDeregistered(_enclaveAddress);
    }

    function addTeeNodeStake(address _enclaveAddress, uint256 _amount) external {
        TeeNode storage node = _owned(_enclaveAddress);
        node.stakeAmount += _amount;
        STAKING_TOKEN.transferFrom(msg.sender, address(this), _amount);
        emit TeeNodeStakeAdded(_enclaveAddress, _amount);
    }

    function removeTeeNodeStake(address _enclaveAddress, uint256 _amount) external {
        TeeNode storage node = _owned(_enclaveAddress);
        if (!node.draining) revert TeeManagerEnclaveNotDraining();
        executors.checkIdle(_enclaveAddress);
        secretStore.checkEmpty(_enclaveAddress);
        node.stakeAmount -= _amount;
        STAKING_TOKEN.transfer(msg.sender, _amount);
        emit TeeNodeStakeRemoved(_enclaveAddress, _amount);
    }

    // ------------------------------------------------------------------ views

    function getTeeNodeOwner(address _enclaveAddress) external view returns (address) {
        return teeNodes[_enclaveAddress].owner;
    }

    function getTeeNodesStake(address[] calldata _enclaveAddresses) external view returns (uint256[] memory stakes) {
        stakes = new uint256[](_enclaveAddresses.length);
        for (uint256 i; i < _enclaveAddresses.length; ++i) {
            stakes[i] = teeNodes[_enclaveAddresses[i]].stakeAmount;
        }
    }

    function getDrainingStatus(address _enclaveAddress) external view returns (bool) {
        return teeNodes[_enclaveAddress].draining;
    }

    /// @notice Reverts `AttestationAutherKeyNotVerified()` unless the key proved a still-whitelisted image.
    function allowOnlyVerified(address _key) external view {
        bytes32 imageId = verifiedKeys[_key];
        if (imageId == bytes32(0) || !whitelistedImages[imageId]) revert AttestationAutherKeyNotVerified();
    }

    /// @notice Whether the node may be selected (registered, not draining, enough stake).
    function isSelectable(address _enclaveAddress) public view returns (bool) {
        TeeNode storage node = teeNodes[_enclaveAddress];
        return node.owner != address(0) && !node.draining && node.stakeAmount >= MIN_STAKE_AMOUNT;
    }

    // ------------------------------------------------------------------ hooks (Executors, SecretStore)

    /// @notice After an executor slot is released: re-evaluates the node's place in the store
    ///         selection (which underflows for a storage capacity below GLOBAL_MAX_SECRET_SIZE).
    function updateTreeState(address _enclaveAddress) external {
        if (msg.sender != address(executors)) revert TeeManagerInvalidCaller();
        if (isSelectable(_enclaveAddress)) secretStore.updateStoreTree(_enclaveAddress);
    }

    /// @notice Cuts `epochs` slashes (compounding) from the node's stake and sends them to `_recipient`.
    function slashTeeNode(address _enclaveAddress, uint256 _epochs, address _recipient) external returns (uint256 total) {
        if (msg.sender != address(executors) && msg.sender != address(secretStore)) revert TeeManagerInvalidCaller();
        TeeNode storage node = teeNodes[_enclaveAddress];
        uint256 stake = node.stakeAmount;
        for (uint256 i; i < _epochs; ++i) {
            uint256 cut = (stake * SLASH_PERCENT_IN_BIPS) / SLASH_MAX_BIPS;
            if (cut == 0) break;
            stake -= cut;
            total += cut;
        }
        node.stakeAmount = stake;
        if (total > 0) STAKING_TOKEN.transfer(_recipient, total);
    }

    // ------------------------------------------------------------------ internals

    function _owned(address _enclaveAddress) private view returns (TeeNode storage node) {
        node = teeNodes[_enclaveAddress];
        if (node.owner == address(0) || node.owner != msg.sender) revert TeeManagerInvalidEnclaveOwner();
    }

    function _addressOf(bytes calldata pubKey) private pure returns (address) {
        if (pubKey.length != 64) revert AttestationAutherPubkeyLengthInvalid();
        return address(uint160(uint256(keccak256(pubKey))));
    }

    function _checkPCRs(bytes calldata PCR0, bytes calldata PCR1, bytes calldata PCR2) private pure {
        if (PCR0.length != 48 || PCR1.length != 48 || PCR2.length != 48) revert AttestationAutherPCRsInvalid();
    }

    function _verifyEnclaveKey(bytes calldata signature, Attestation calldata attestation, address enclaveAddress) private {
        _checkPCRs(attestation.PCR0, attestation.PCR1, attestation.PCR2);
        bytes32 imageId = keccak256(abi.encodePacked(attestation.PCR0, attestation.PCR1, attestation.PCR2));
        if (!whitelistedImages[imageId]) revert AttestationAutherImageNotWhitelisted();
        if (attestation.timestampInMilliseconds / 1000 + ATTESTATION_MAX_AGE <= block.timestamp) {
            revert AttestationAutherAttestationTooOld();
        }
        ATTESTATION_VERIFIER.verify(signature, attestation);
        verifiedKeys[enclaveAddress] = imageId;
        emit EnclaveKeyVerified(enclaveAddress, imageId, attestation.enclavePubKey);
    }

    function _verifyRegistration(
        address enclaveAddress,
        uint256 jobCapacity,
        uint256 storageCapacity,
        uint8 env,
        uint256 signTimestamp,
        bytes calldata signature
    ) private view {
        if (block.timestamp > signTimestamp + ATTESTATION_MAX_AGE) revert TeeManagerSignatureTooOld();
        bytes32 structHash =
            keccak256(abi.encode(REGISTER_TYPEHASH, msg.sender, jobCapacity, storageCapacity, env, signTimestamp));
        address signer = Sig.recover(Sig.typedDataDigest(DOMAIN_SEPARATOR, structHash), signature);
        if (signer != enclaveAddress) revert TeeManagerInvalidSigner();
    }
}
