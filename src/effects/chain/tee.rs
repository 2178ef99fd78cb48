//! The TEE generation's chain surface: bindings of TeeManager, the TEE Jobs and SecretManager
//! (from human-readable ABI, like `bindings.rs`), the follower's filter and decoding of their
//! logs into the same domain events v2 produces, and the SecretManager events that concern us.

#![allow(clippy::too_many_arguments)]

use std::collections::HashSet;

use ethers::contract::{abigen, EthEvent};
use ethers::providers::{Http, Provider};
use ethers::types::{Address, Log, H256, U256};

use super::bindings::{JobRespondedFilter, SlashedOnExecutionTimeoutFilter};
use crate::domain::model::{ChainEvent, Job, SecretEvent};

abigen!(
    TeeManager,
    r#"[
        struct Attestation { bytes enclavePubKey; bytes PCR0; bytes PCR1; bytes PCR2; uint256 timestampInMilliseconds; }
        function registerTeeNode(bytes attestationSignature, Attestation attestation, uint256 jobCapacity, uint256 storageCapacity, uint8 env, uint256 signTimestamp, bytes signature, uint256 stakeAmount)
        function drainTeeNode(address enclaveAddress)
        function reviveTeeNode(address enclaveAddress)
        function deregisterTeeNode(address enclaveAddress)
        function addTeeNodeStake(address enclaveAddress, uint256 amount)
        function removeTeeNodeStake(address enclaveAddress, uint256 amount)
        function getTeeNodeOwner(address enclaveAddress) view returns (address)
        function getDrainingStatus(address enclaveAddress) view returns (bool)
        function teeNodes(address enclaveAddress) view returns (uint256 stakeAmount, address owner, uint8 env, bool draining)
        function allowOnlyVerified(address enclaveAddress) view
        function STAKING_TOKEN() view returns (address)
        function MIN_STAKE_AMOUNT() view returns (uint256)
        event TeeNodeRegistered(address indexed enclaveAddress, address indexed owner, uint256 jobCapacity, uint256 storageCapacity, uint8 env)
        event TeeNodeDrained(address indexed enclaveAddress)
        event TeeNodeRevived(address indexed enclaveAddress)
        event TeeNodeDeregistered(address indexed enclaveAddress)
    ]"#
);

abigen!(
    TeeJobs,
    r#"[
        function createJob(uint8 env, uint256 secretId, bytes32 codehash, bytes codeInputs, uint256 deadline) returns (uint256)
        event JobCreated(uint256 indexed jobId, uint8 indexed env, address indexed jobOwner, uint256 secretId, bytes32 codehash, bytes codeInputs, uint256 deadline, address[] selectedExecutors)
    ]"#
);

abigen!(
    SecretManager,
    r#"[
        struct SelectedEnclave { address enclaveAddress; bool hasAcknowledgedStore; uint256 selectTimestamp; uint256 replacedAckTimestamp; }
        function createSecret(uint8 env, uint256 sizeLimit, uint256 endTimestamp, uint256 usdcDeposit, address[] allowedAddresses)
        function acknowledgeStore(uint256 secretId, uint256 signTimestamp, bytes signature)
        function acknowledgeStoreFailed(uint256 secretId)
        function markStoreAlive(uint256 signTimestamp, bytes signature)
        function markStoreDead(address enclaveAddress)
        function updateSecretEndTimestamp(uint256 secretId, uint256 endTimestamp, uint256 usdcDeposit)
        function terminateSecret(uint256 secretId)
        function removeSecret(uint256 secretId)
        function getSelectedEnclaves(uint256 secretId) view returns (SelectedEnclave[])
        function GLOBAL_MAX_SECRET_SIZE() view returns (uint256)
        function ACKNOWLEDGEMENT_TIMEOUT() view returns (uint256)
        function MARK_ALIVE_TIMEOUT() view returns (uint256)
        function USDC_TOKEN() view returns (address)
        function SECRET_STORE_FEE_RATE() view returns (uint256)
        function NO_OF_NODES_TO_SELECT() view returns (uint256)
        event SecretCreated(uint256 indexed secretId, address indexed owner, uint256 sizeLimit, uint256 endTimestamp, uint256 usdcDeposit, address[] selectedEnclaves)
        event SecretStoreAcknowledgementSuccess(uint256 indexed secretId, address indexed enclaveAddress)
        event SecretStoreAcknowledgementFailed(uint256 indexed secretId)
        event SecretStoreReplaced(uint256 indexed secretId, address indexed prevEnclaveAddress, address indexed newEnclaveAddress, bool isMarkedDead)
        event SecretEndTimestampUpdated(uint256 indexed secretId, uint256 endTimestamp)
        event SecretTerminated(uint256 indexed secretId, uint256 timestamp)
        event SecretRemoved(uint256 indexed secretId)
    ]"#
);

/// The selector of the TEE generation's `createJob(uint8,uint256,bytes32,bytes,uint256)`.
pub const CREATE_JOB_SELECTOR: [u8; 4] = [0xbf, 0xf9, 0x7e, 0x1e];
/// The selector of `registerTeeNode(bytes,(bytes,bytes,bytes,bytes,uint256),uint256,uint256,uint8,uint256,bytes,uint256)`.
pub const REGISTER_TEE_NODE_SELECTOR: [u8; 4] = [0xad, 0xe8, 0xde, 0xc6];

/// The registry events (TeeManager), each indexed by the enclave address first.
pub fn registry_topics() -> [H256; 4] {
    [
        TeeNodeRegisteredFilter::signature(),
        TeeNodeDrainedFilter::signature(),
        TeeNodeRevivedFilter::signature(),
        TeeNodeDeregisteredFilter::signature(),
    ]
}

/// The SecretManager events a store follows.
pub fn secret_topics() -> [H256; 7] {
    [
        SecretCreatedFilter::signature(),
        SecretStoreAcknowledgementSuccessFilter::signature(),
        SecretStoreAcknowledgementFailedFilter::signature(),
        SecretStoreReplacedFilter::signature(),
        SecretEndTimestampUpdatedFilter::signature(),
        SecretTerminatedFilter::signature(),
        SecretRemovedFilter::signature(),
    ]
}

/// Every topic0 the follower asks for in tee mode.
pub fn topics() -> Vec<H256> {
    let mut topics = registry_topics().to_vec();
    topics.extend([
        JobCreatedFilter::signature(),
        JobRespondedFilter::signature(),
        SlashedOnExecutionTimeoutFilter::signature(),
    ]);
    topics.extend(secret_topics());
    topics
}

/// The secrets whose later (id-only) events concern this enclave: those whose `SecretCreated`
/// selected it or whose `SecretStoreReplaced` named it. Kept across reconnects; after a restart
/// only the secrets seen since the cursor (or given with `LogFollower::with_known_secrets`).
#[derive(Debug, Default)]
pub struct SecretInterest {
    ids: HashSet<U256>,
}

impl SecretInterest {
    pub fn add(&mut self, ids: impl IntoIterator<Item = U256>) {
        self.ids.extend(ids);
    }

    pub fn contains(&self, id: &U256) -> bool {
        self.ids.contains(id)
    }
}

/// Why a log is not delivered.
pub enum Skip {
    /// Not ours (another enclave, another secret, wrong contract, unknown topic).
    NotOurs,
    /// Malformed: logged and dropped.
    Malformed(String),
}

/// The contracts a tee-mode follower reads.
#[derive(Debug, Clone, Copy)]
pub struct TeeContracts {
    pub tee_manager: Address,
    pub jobs: Address,
    pub secret_manager: Option<Address>,
}

/// The protocol event a TEE-generation log carries; None when `log` is no TEE event at all.
/// `enclave` zero accepts every enclave (the follower of an enclave not known yet).
pub fn decode(
    contracts: &TeeContracts,
    enclave: Address,
    interest: &mut SecretInterest,
    log: &Log,
) -> Result<ChainEvent, Skip> {
    let Some(topic0) = log.topics.first().copied() else {
        return Err(Skip::NotOurs);
    };
    let raw = ethers::abi::RawLog {
        topics: log.topics.clone(),
        data: log.data.to_vec(),
    };
    let malformed = |e: ethers::abi::Error| Skip::Malformed(e.to_string());
    let ours = |topic: Option<&H256>| enclave.is_zero() || topic == Some(&H256::from(enclave));

    if registry_topics().contains(&topic0) {
        if log.address != contracts.tee_manager || !ours(log.topics.get(1)) {
            return Err(Skip::NotOurs);
        }
        return if topic0 == TeeNodeRegisteredFilter::signature() {
            let e = <TeeNodeRegisteredFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorRegistered {
                enclave: e.enclave_address,
                owner: e.owner,
                job_capacity: e.job_capacity,
                env: e.env,
            })
        } else if topic0 == TeeNodeDrainedFilter::signature() {
            let e = <TeeNodeDrainedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorDrained {
                enclave: e.enclave_address,
            })
        } else if topic0 == TeeNodeRevivedFilter::signature() {
            let e = <TeeNodeRevivedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorRevived {
                enclave: e.enclave_address,
            })
        } else {
            let e = <TeeNodeDeregisteredFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
            Ok(ChainEvent::ExecutorDeregistered {
                enclave: e.enclave_address,
            })
        };
    }
    if secret_topics().contains(&topic0) {
        if Some(log.address) != contracts.secret_manager {
            return Err(Skip::NotOurs);
        }
        return decode_secret(topic0, &raw, enclave, interest)
            .map(ChainEvent::Secret)
            .map_err(|skip| match skip {
                DecodeSkip::NotOurs => Skip::NotOurs,
                DecodeSkip::Malformed(e) => malformed(e),
            });
    }
    if log.address != contracts.jobs {
        return Err(Skip::NotOurs);
    }
    if topic0 == JobCreatedFilter::signature() {
        let e = <JobCreatedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
        Ok(ChainEvent::JobCreated(Job {
            id: e.job_id,
            env: e.env,
            owner: e.job_owner,
            codehash: H256::from(e.codehash),
            code_inputs: e.code_inputs.to_vec(),
            deadline_ms: saturating_u64(e.deadline),
            selected_executors: e.selected_executors,
            exec_start_time: 0,
            origin: None,
            compact: None,
            secret_id: e.secret_id,
        }))
    } else if topic0 == JobRespondedFilter::signature() {
        let e = <JobRespondedFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
        Ok(ChainEvent::JobResponded {
            job_id: e.job_id,
            executor: e.executor,
            output_count: e.output_count,
        })
    } else if topic0 == SlashedOnExecutionTimeoutFilter::signature() {
        if !ours(log.topics.get(2)) {
            return Err(Skip::NotOurs);
        }
        let e =
            <SlashedOnExecutionTimeoutFilter as EthEvent>::decode_log(&raw).map_err(malformed)?;
        Ok(ChainEvent::SlashedOnExecutionTimeout {
            job_id: e.job_id,
            enclave: e.enclave_address,
        })
    } else {
        Err(Skip::NotOurs)
    }
}

enum DecodeSkip {
    NotOurs,
    Malformed(ethers::abi::Error),
}

impl From<ethers::abi::Error> for DecodeSkip {
    fn from(e: ethers::abi::Error) -> Self {
        DecodeSkip::Malformed(e)
    }
}

/// A SecretManager event, if it concerns `enclave`: a creation selecting it, a replacement
/// naming it (either side), or any other event of a secret it may hold.
fn decode_secret(
    topic0: H256,
    raw: &ethers::abi::RawLog,
    enclave: Address,
    interest: &mut SecretInterest,
) -> Result<SecretEvent, DecodeSkip> {
    let held = |interest: &SecretInterest, id: U256| {
        if enclave.is_zero() || interest.contains(&id) {
            Ok(())
        } else {
            Err(DecodeSkip::NotOurs)
        }
    };
    if topic0 == SecretCreatedFilter::signature() {
        let e = <SecretCreatedFilter as EthEvent>::decode_log(raw)?;
        // Every creation is delivered: the store records others' secrets' terms (owner, size,
        // end) so that a later `SecretStoreReplaced` naming us can accept the owner's injection.
        // Only ours make their id-only events interesting.
        if enclave.is_zero() || e.selected_enclaves.contains(&enclave) {
            interest.add([e.secret_id]);
        }
        Ok(SecretEvent::Created {
            secret_id: e.secret_id,
            owner: e.owner,
            size_limit: e.size_limit,
            end_timestamp: e.end_timestamp,
            selected: e.selected_enclaves,
        })
    } else if topic0 == SecretStoreReplacedFilter::signature() {
        let e = <SecretStoreReplacedFilter as EthEvent>::decode_log(raw)?;
        if !enclave.is_zero()
            && e.new_enclave_address != enclave
            && e.prev_enclave_address != enclave
        {
            return Err(DecodeSkip::NotOurs);
        }
        interest.add([e.secret_id]);
        Ok(SecretEvent::StoreReplaced {
            secret_id: e.secret_id,
            previous: e.prev_enclave_address,
            replacement: e.new_enclave_address,
            marked_dead: e.is_marked_dead,
        })
    } else if topic0 == SecretStoreAcknowledgementSuccessFilter::signature() {
        let e = <SecretStoreAcknowledgementSuccessFilter as EthEvent>::decode_log(raw)?;
        held(interest, e.secret_id)?;
        Ok(SecretEvent::Acknowledged {
            secret_id: e.secret_id,
            enclave: e.enclave_address,
        })
    } else if topic0 == SecretStoreAcknowledgementFailedFilter::signature() {
        let e = <SecretStoreAcknowledgementFailedFilter as EthEvent>::decode_log(raw)?;
        held(interest, e.secret_id)?;
        Ok(SecretEvent::AcknowledgementFailed {
            secret_id: e.secret_id,
        })
    } else if topic0 == SecretEndTimestampUpdatedFilter::signature() {
        let e = <SecretEndTimestampUpdatedFilter as EthEvent>::decode_log(raw)?;
        held(interest, e.secret_id)?;
        Ok(SecretEvent::EndTimestampUpdated {
            secret_id: e.secret_id,
            end_timestamp: e.end_timestamp,
        })
    } else if topic0 == SecretTerminatedFilter::signature() {
        let e = <SecretTerminatedFilter as EthEvent>::decode_log(raw)?;
        held(interest, e.secret_id)?;
        Ok(SecretEvent::Terminated {
            secret_id: e.secret_id,
            at: e.timestamp,
        })
    } else {
        let e = <SecretRemovedFilter as EthEvent>::decode_log(raw)?;
        held(interest, e.secret_id)?;
        Ok(SecretEvent::Removed {
            secret_id: e.secret_id,
        })
    }
}

fn saturating_u64(value: U256) -> u64 {
    if value > U256::from(u64::MAX) {
        u64::MAX
    } else {
        value.as_u64()
    }
}

/// Reads `SecretManager.GLOBAL_MAX_SECRET_SIZE` (the start-up check of the storage capacity).
pub async fn global_max_secret_size(
    rpc_http_url: &str,
    secret_manager: Address,
) -> anyhow::Result<U256> {
    use anyhow::Context;
    let provider = Provider::<Http>::try_from(rpc_http_url)
        .with_context(|| format!("bad RPC URL {rpc_http_url} (EXECUTOR_RPC_HTTP_URL)"))?;
    let contract = SecretManager::new(secret_manager, std::sync::Arc::new(provider));
    let call = contract.global_max_secret_size();
    tokio::time::timeout(super::follower::RPC_TIMEOUT, call.call())
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))?
        .map_err(anyhow::Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethers::abi::{encode, Token};
    use ethers::contract::EthCall;
    use ethers::types::Bytes;

    const ME: Address = Address::repeat_byte(0xee);
    const OTHER: Address = Address::repeat_byte(0x99);
    const CONTRACTS: TeeContracts = TeeContracts {
        tee_manager: Address::repeat_byte(0x01),
        jobs: Address::repeat_byte(0x02),
        secret_manager: Some(Address::repeat_byte(0x04)),
    };

    fn hash(text: &str) -> H256 {
        H256::from(ethers::utils::keccak256(text))
    }

    fn log(address: Address, topics: Vec<H256>, data: Vec<Token>) -> Log {
        Log {
            address,
            topics,
            data: Bytes::from(encode(&data)),
            ..Default::default()
        }
    }

    fn id(n: u64) -> H256 {
        H256::from_low_u64_be(n)
    }

    fn decoded(interest: &mut SecretInterest, log: &Log) -> Option<ChainEvent> {
        match decode(&CONTRACTS, ME, interest, log) {
            Ok(event) => Some(event),
            Err(Skip::NotOurs) => None,
            Err(Skip::Malformed(reason)) => panic!("malformed: {reason}"),
        }
    }

    #[test]
    fn topics_and_selectors_are_the_protocols() {
        let expected = [
            (
                "TeeNodeRegistered(address,address,uint256,uint256,uint8)",
                "0xc73089f7e27facac9ebdfad254feb88086ca9910691d1097c04a5bdf6a5a9e88",
            ),
            (
                "TeeNodeDrained(address)",
                "0xbf5bb05c53874380c84b8702a87b2a77e4fc66ed212ce728d67cb5f8c12d35d3",
            ),
            (
                "TeeNodeRevived(address)",
                "0x249b1c111b5b2513c053727226b91de6987b163e34aceeecf6f52410b6cd5c12",
            ),
            (
                "TeeNodeDeregistered(address)",
                "0x20060fd0615e1f06ea24fb3d734b0059ee36382b5b37ab9283f5e5da1c5ebb0b",
            ),
            (
                "JobCreated(uint256,uint8,address,uint256,bytes32,bytes,uint256,address[])",
                "0xa42cdb4bcc2307f56c450d6fabb23ff13c3b8feed04146b263e284cf2a6a77da",
            ),
            (
                "SecretCreated(uint256,address,uint256,uint256,uint256,address[])",
                "0x1e80e4463811abfeb72ce5248f4f3ea586394f1eb90a66751e6dc7636683772c",
            ),
            (
                "SecretStoreAcknowledgementSuccess(uint256,address)",
                "0x3b2ddadbabc026d8d411df7497755837eceda0118a4962c20f4bf085d621976c",
            ),
            (
                "SecretStoreAcknowledgementFailed(uint256)",
                "0xd8909f3ca91e2c2749ba87ec3a205b325b9fd35f598358050001583a48f98b4b",
            ),
            (
                "SecretStoreReplaced(uint256,address,address,bool)",
                "0x4c532d5a37b7f50b687f4ac71fe7396280a1b60c6e6894b50eaeb2686c88bf82",
            ),
            (
                "SecretEndTimestampUpdated(uint256,uint256)",
                "0x8ae4c71b2231f92450d095a7871abddb3d8290c44afa6f4912cb8ca0bb6b1253",
            ),
            (
                "SecretTerminated(uint256,uint256)",
                "0xe838add4d48312777505369bfe4c7eb0df2871648703fe53cb43cddc7a8ae8f3",
            ),
            (
                "SecretRemoved(uint256)",
                "0x6b3b77613c262c77bf1c19d29afe642c7140c290a627b470247cd8d116599932",
            ),
        ];
        for (signature, topic) in expected {
            assert_eq!(format!("{:?}", hash(signature)), topic, "{signature}");
            assert!(topics().contains(&hash(signature)), "{signature} followed");
        }
        assert_eq!(topics().len(), 14);
        assert_eq!(CreateJobCall::selector(), CREATE_JOB_SELECTOR);
        assert_eq!(RegisterTeeNodeCall::selector(), REGISTER_TEE_NODE_SELECTOR);
        for (selector, expected) in [
            (DrainTeeNodeCall::selector(), "99705bb3"),
            (ReviveTeeNodeCall::selector(), "cdc400e6"),
            (DeregisterTeeNodeCall::selector(), "ef8e5974"),
            (CreateSecretCall::selector(), "2c9475f3"),
            (AcknowledgeStoreCall::selector(), "7f4e398c"),
            (MarkStoreAliveCall::selector(), "76c32e5e"),
            (AcknowledgeStoreFailedCall::selector(), "2708e35c"),
            (MarkStoreDeadCall::selector(), "e9d5100b"),
            (GetTeeNodeOwnerCall::selector(), "54e0ba1f"),
            (TeeNodesCall::selector(), "1f23663b"),
        ] {
            assert_eq!(hex::encode(selector), expected);
        }
    }

    #[test]
    fn registry_events_of_this_enclave_become_v2_events() {
        let mut interest = SecretInterest::default();
        let registered = log(
            CONTRACTS.tee_manager,
            vec![
                TeeNodeRegisteredFilter::signature(),
                H256::from(ME),
                H256::from(Address::repeat_byte(0x0a)),
            ],
            vec![
                Token::Uint(20.into()),
                Token::Uint(100_000_000u64.into()),
                Token::Uint(1.into()),
            ],
        );
        assert_eq!(
            decoded(&mut interest, &registered),
            Some(ChainEvent::ExecutorRegistered {
                enclave: ME,
                owner: Address::repeat_byte(0x0a),
                job_capacity: 20.into(),
                env: 1,
            })
        );
        let theirs = Log {
            topics: vec![
                registered.topics[0],
                H256::from(OTHER),
                registered.topics[2],
            ],
            ..registered.clone()
        };
        assert_eq!(decoded(&mut interest, &theirs), None);
        let elsewhere = Log {
            address: CONTRACTS.jobs,
            ..registered
        };
        assert_eq!(decoded(&mut interest, &elsewhere), None);
        for (topic, event) in [
            (
                TeeNodeDrainedFilter::signature(),
                ChainEvent::ExecutorDrained { enclave: ME },
            ),
            (
                TeeNodeRevivedFilter::signature(),
                ChainEvent::ExecutorRevived { enclave: ME },
            ),
            (
                TeeNodeDeregisteredFilter::signature(),
                ChainEvent::ExecutorDeregistered { enclave: ME },
            ),
        ] {
            let l = log(CONTRACTS.tee_manager, vec![topic, H256::from(ME)], vec![]);
            assert_eq!(decoded(&mut interest, &l), Some(event));
        }
    }

    #[test]
    fn a_tee_job_carries_its_secret_id() {
        let mut interest = SecretInterest::default();
        let created = log(
            CONTRACTS.jobs,
            vec![
                JobCreatedFilter::signature(),
                id(7),
                id(1),
                H256::from(Address::repeat_byte(0x0b)),
            ],
            vec![
                Token::Uint(5.into()),
                Token::FixedBytes(vec![0xcc; 32]),
                Token::Bytes(b"inputs".to_vec()),
                Token::Uint(1500.into()),
                Token::Array(vec![Token::Address(ME), Token::Address(OTHER)]),
            ],
        );
        let Some(ChainEvent::JobCreated(job)) = decoded(&mut interest, &created) else {
            panic!("not a job");
        };
        assert_eq!(
            (job.id, job.env, job.secret_id, job.deadline_ms),
            (7.into(), 1, 5.into(), 1500)
        );
        assert_eq!(job.owner, Address::repeat_byte(0x0b));
        assert_eq!(job.codehash, H256::repeat_byte(0xcc));
        assert_eq!(job.code_inputs, b"inputs");
        assert_eq!(job.selected_executors, vec![ME, OTHER]);
        // v2's layout under the TEE topic does not decode as a job.
        let v2_layout = log(
            CONTRACTS.jobs,
            created.topics.clone(),
            vec![Token::FixedBytes(vec![0xcc; 32])],
        );
        assert!(matches!(
            decode(&CONTRACTS, ME, &mut interest, &v2_layout),
            Err(Skip::Malformed(_))
        ));
    }

    fn created(secret: u64, selected: Vec<Address>) -> Log {
        log(
            CONTRACTS.secret_manager.unwrap(),
            vec![
                SecretCreatedFilter::signature(),
                id(secret),
                H256::from(Address::repeat_byte(0x0c)),
            ],
            vec![
                Token::Uint(1000.into()),
                Token::Uint(2_000_000_000u64.into()),
                Token::Uint(10.into()),
                Token::Array(selected.into_iter().map(Token::Address).collect()),
            ],
        )
    }

    #[test]
    fn only_secrets_that_concern_this_enclave_are_delivered() {
        let sm = CONTRACTS.secret_manager.unwrap();
        let mut interest = SecretInterest::default();
        let removed = |secret: u64| {
            log(
                sm,
                vec![SecretRemovedFilter::signature(), id(secret)],
                vec![],
            )
        };
        // Before any creation: an id-only event of an unknown secret is not ours.
        assert_eq!(decoded(&mut interest, &removed(1)), None);
        // Others' creations are delivered (their terms let a later replacement naming us take
        // the owner's injection), but do not make their id-only events ours.
        assert_eq!(
            decoded(&mut interest, &created(1, vec![OTHER])),
            Some(ChainEvent::Secret(SecretEvent::Created {
                secret_id: 1.into(),
                owner: Address::repeat_byte(0x0c),
                size_limit: 1000.into(),
                end_timestamp: 2_000_000_000u64.into(),
                selected: vec![OTHER],
            }))
        );
        assert_eq!(
            decoded(&mut interest, &created(2, vec![OTHER, ME])),
            Some(ChainEvent::Secret(SecretEvent::Created {
                secret_id: 2.into(),
                owner: Address::repeat_byte(0x0c),
                size_limit: 1000.into(),
                end_timestamp: 2_000_000_000u64.into(),
                selected: vec![OTHER, ME],
            }))
        );
        assert_eq!(decoded(&mut interest, &removed(1)), None);
        assert_eq!(
            decoded(&mut interest, &removed(2)),
            Some(ChainEvent::Secret(SecretEvent::Removed {
                secret_id: 2.into()
            }))
        );
        let id_only = [
            (
                log(
                    sm,
                    vec![
                        SecretStoreAcknowledgementSuccessFilter::signature(),
                        id(2),
                        H256::from(OTHER),
                    ],
                    vec![],
                ),
                SecretEvent::Acknowledged {
                    secret_id: 2.into(),
                    enclave: OTHER,
                },
            ),
            (
                log(
                    sm,
                    vec![SecretStoreAcknowledgementFailedFilter::signature(), id(2)],
                    vec![],
                ),
                SecretEvent::AcknowledgementFailed {
                    secret_id: 2.into(),
                },
            ),
            (
                log(
                    sm,
                    vec![SecretEndTimestampUpdatedFilter::signature(), id(2)],
                    vec![Token::Uint(99.into())],
                ),
                SecretEvent::EndTimestampUpdated {
                    secret_id: 2.into(),
                    end_timestamp: 99.into(),
                },
            ),
            (
                log(
                    sm,
                    vec![SecretTerminatedFilter::signature(), id(2)],
                    vec![Token::Uint(98.into())],
                ),
                SecretEvent::Terminated {
                    secret_id: 2.into(),
                    at: 98.into(),
                },
            ),
        ];
        for (l, event) in id_only {
            assert_eq!(
                decoded(&mut interest, &l),
                Some(ChainEvent::Secret(event.clone()))
            );
            let other_secret = Log {
                topics: [vec![l.topics[0], id(1)], l.topics[2..].to_vec()].concat(),
                ..l
            };
            assert_eq!(decoded(&mut interest, &other_secret), None, "{event:?}");
        }
        // A replacement naming us makes the secret ours; one between others does not.
        let replaced = |secret: u64, prev: Address, new: Address| {
            log(
                sm,
                vec![
                    SecretStoreReplacedFilter::signature(),
                    id(secret),
                    H256::from(prev),
                    H256::from(new),
                ],
                vec![Token::Bool(true)],
            )
        };
        assert_eq!(
            decoded(
                &mut interest,
                &replaced(3, OTHER, Address::repeat_byte(0x98))
            ),
            None
        );
        assert_eq!(
            decoded(&mut interest, &replaced(3, OTHER, ME)),
            Some(ChainEvent::Secret(SecretEvent::StoreReplaced {
                secret_id: 3.into(),
                previous: OTHER,
                replacement: ME,
                marked_dead: true,
            }))
        );
        assert!(decoded(&mut interest, &removed(3)).is_some());
        // The same events from another contract are not SecretManager's.
        let forged = Log {
            address: CONTRACTS.jobs,
            ..created(4, vec![ME])
        };
        assert_eq!(decoded(&mut interest, &forged), None);
    }
}
