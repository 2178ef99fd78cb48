//! The chain ports: `ChainWriter` (the scripted writer the domain tests use, `ChainScript`),
//! `ChainReader` (a chain whose reorgs the test names) and `ChainProbe`, with their contracts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ethers::types::{Address, H256, U256};

use crate::domain::dal::{
    ignore_sent, ChainError, ChainReader, ChainWriter, MockChainReader, MockChainWriter, OnSent,
    OutputPlan, Revert, Store, TakeBack, TxOutcome,
};
use crate::domain::eip712::{output_digest, recover};
use crate::domain::model::{Job, JobOrigin, JobState, SecretAck, SentTx, SignedOutput};

/// The address of a gas key, or why it is not one (as `ChainWriter::set_gas_key` answers).
pub fn gas_key_address(secret: [u8; 32]) -> Result<Address, ChainError> {
    k256::ecdsa::SigningKey::from_slice(&secret)
        .map(|key| ethers::utils::secret_key_to_address(&key))
        .map_err(|_| ChainError::InvalidKey("not a valid secp256k1 secret".into()))
}

/// What the chain behind a `ChainScript` refuses, like the published Jobs contract: job
/// `open_job` is open and selects `selected` among the `registered` enclaves, lower ids are
/// over, higher ones do not exist; the chain's time is `now_secs`.
#[derive(Debug, Clone)]
pub struct ChainRules {
    pub selected: Vec<Address>,
    pub registered: Vec<Address>,
    pub open_job: U256,
    pub now_secs: u64,
    pub sign_max_age_secs: u64,
}

/// A chain writer that records what it is asked to send and answers from a script (queued
/// answers first, then `rules` if any, else mined). Like every `ChainWriter` it has no gas key
/// until `set_gas_key` is called, and refuses to send without one.
#[derive(Clone, Default)]
pub struct ChainScript {
    /// Every output sent (with a gas key), in order.
    pub outputs: Arc<Mutex<Vec<SignedOutput>>>,
    /// The plan each output was sent with.
    pub plans: Arc<Mutex<Vec<OutputPlan>>>,
    pub slashes: Arc<Mutex<Vec<U256>>>,
    pub submit_answers: Arc<Mutex<Vec<Result<TxOutcome, ChainError>>>>,
    pub slash_answers: Arc<Mutex<Vec<Result<TxOutcome, ChainError>>>>,
    /// The journal's state of each output's job right after its transaction was broadcast.
    pub journal_when_sent: Arc<Mutex<Vec<JobState>>>,
    /// Each transaction whose nonce the domain asked to take back.
    pub taken_back: Arc<Mutex<Vec<SentTx>>>,
    /// The secret store's transactions, in order.
    pub secret_txs: Arc<Mutex<Vec<SecretTx>>>,
    rules: Option<Arc<ChainRules>>,
}

/// One SecretManager transaction the domain sent through a `ChainScript`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretTx {
    Acknowledge(SecretAck),
    AcknowledgeFailed(U256),
    /// `markStoreAlive` with its sign timestamp and signature.
    Alive(u64, Vec<u8>),
}

/// An output transaction of the stub gas account, as a chain writer reports it.
pub fn sent_tx(tx_hash: H256, nonce: u64) -> SentTx {
    SentTx {
        tx_hash,
        from: Address::repeat_byte(0x6a),
        nonce: U256::from(nonce),
        max_fee_per_gas: U256::from(2_000_000_000u64),
        max_priority_fee_per_gas: Some(U256::from(1_000_000_000u64)),
    }
}

pub fn mined() -> Result<TxOutcome, ChainError> {
    Ok(TxOutcome::Mined {
        tx_hash: H256::repeat_byte(1),
        gas_used: 50_000,
    })
}

pub fn reverted(revert: Revert) -> Result<TxOutcome, ChainError> {
    Ok(TxOutcome::Reverted {
        tx_hash: None,
        revert,
        gas_used: 0,
    })
}

impl ChainScript {
    /// A script over a chain that refuses what `rules` say.
    pub fn following(rules: ChainRules) -> Self {
        Self {
            rules: Some(Arc::new(rules)),
            ..Self::default()
        }
    }

    /// The scripted writer: gas key, recorded sends, scripted answers.
    pub fn writer(&self, store: Arc<dyn Store>) -> MockChainWriter {
        let (mut chain, key) = Self::gas_key_only();
        let (outputs, answers) = (self.outputs.clone(), self.submit_answers.clone());
        let plans = self.plans.clone();
        let journal_when_sent = self.journal_when_sent.clone();
        let (k, rules) = (key.clone(), self.rules.clone());
        let submitted: Arc<Mutex<HashSet<(U256, Address)>>> = Arc::default();
        // The hashes of the outputs mined under `rules`.
        let mined_txs: Arc<Mutex<HashSet<H256>>> = Arc::default();
        let m = mined_txs.clone();
        chain
            .expect_submit_output()
            .returning(move |output, plan, sent| {
                if k.lock().unwrap().is_none() {
                    return Err(ChainError::NoGasKey);
                }
                outputs.lock().unwrap().push(output.clone());
                plans.lock().unwrap().push(plan);
                let Some(rules) = &rules else {
                    sent.sent(sent_tx(H256::from_low_u64_be(output.job_id.low_u64()), 0));
                    if let Ok(Some(record)) = store.job(output.job_id) {
                        journal_when_sent.lock().unwrap().push(record.state);
                    }
                    let mut answers = answers.lock().unwrap();
                    return if answers.is_empty() {
                        mined()
                    } else {
                        answers.remove(0)
                    };
                };
                let outcome = rules.submit(output, &submitted);
                if let Ok(TxOutcome::Mined { tx_hash, .. }) = &outcome {
                    let mut mined = m.lock().unwrap();
                    sent.sent(SentTx {
                        tx_hash: *tx_hash,
                        from: k.lock().unwrap().unwrap_or_default(),
                        nonce: U256::from(mined.len()),
                        ..sent_tx(*tx_hash, 0)
                    });
                    mined.insert(*tx_hash);
                }
                outcome
            });
        let (taken_back, k, rules) = (self.taken_back.clone(), key.clone(), self.rules.clone());
        chain.expect_take_back().returning(move |tx| {
            taken_back.lock().unwrap().push(*tx);
            if rules.is_none() {
                return Ok(TakeBack::TakenBack {
                    transfer: H256::repeat_byte(0x7b),
                    gas_used: 21_000,
                });
            }
            let Some(gas) = *k.lock().unwrap() else {
                return Err(ChainError::NoGasKey);
            };
            Ok(if tx.from != gas {
                TakeBack::OtherKey
            } else if mined_txs.lock().unwrap().contains(&tx.tx_hash) {
                TakeBack::OutputMined {
                    tx_hash: tx.tx_hash,
                }
            } else {
                TakeBack::TakenBack {
                    transfer: H256::repeat_byte(0x7b),
                    gas_used: 21_000,
                }
            })
        });
        let (slashes, answers) = (self.slashes.clone(), self.slash_answers.clone());
        let secret_key = key.clone();
        let rules = self.rules.clone();
        chain
            .expect_slash_on_execution_timeout()
            .returning(move |id| {
                if key.lock().unwrap().is_none() {
                    return Err(ChainError::NoGasKey);
                }
                slashes.lock().unwrap().push(id);
                let mut answers = answers.lock().unwrap();
                if !answers.is_empty() {
                    return answers.remove(0);
                }
                match &rules {
                    Some(rules) => rules.slash(id),
                    None => mined(),
                }
            });
        Self::record_secret_txs(&mut chain, self.secret_txs.clone(), secret_key);
        chain
    }

    /// The secret store's transactions are recorded in `txs` and mined (with a gas key).
    fn record_secret_txs(
        chain: &mut MockChainWriter,
        txs: Arc<Mutex<Vec<SecretTx>>>,
        key: Arc<Mutex<Option<Address>>>,
    ) {
        let record = move |tx: SecretTx| {
            if key.lock().unwrap().is_none() {
                return Err(ChainError::NoGasKey);
            }
            txs.lock().unwrap().push(tx);
            mined()
        };
        let r = record.clone();
        chain
            .expect_acknowledge_store()
            .returning(move |ack| r(SecretTx::Acknowledge(ack.clone())));
        let r = record.clone();
        chain
            .expect_acknowledge_store_failed()
            .returning(move |id| r(SecretTx::AcknowledgeFailed(id)));
        chain
            .expect_mark_store_alive()
            .returning(move |at, signature| record(SecretTx::Alive(at, signature.to_vec())));
    }

    /// A writer that only keeps its gas key: the test says with mockall's expectations which
    /// transactions it expects (`expect` runs on it), and any other one fails the test.
    pub fn writer_expecting(expect: impl FnOnce(&mut MockChainWriter)) -> MockChainWriter {
        let (mut chain, _) = Self::gas_key_only();
        expect(&mut chain);
        chain
    }

    fn gas_key_only() -> (MockChainWriter, Arc<Mutex<Option<Address>>>) {
        let key: Arc<Mutex<Option<Address>>> = Arc::default();
        let mut chain = MockChainWriter::new();
        let k = key.clone();
        chain.expect_set_gas_key().returning(move |secret| {
            let address = gas_key_address(secret)?;
            *k.lock().unwrap() = Some(address);
            Ok(address)
        });
        let k = key.clone();
        chain
            .expect_gas_address()
            .returning(move || *k.lock().unwrap());
        (chain, key)
    }
}

impl ChainRules {
    fn submit(
        &self,
        output: &SignedOutput,
        submitted: &Mutex<HashSet<(U256, Address)>>,
    ) -> Result<TxOutcome, ChainError> {
        if output.job_id > self.open_job {
            return reverted(Revert::UnknownJob);
        }
        if output.job_id != self.open_job {
            return reverted(Revert::ExecutionTimeOver);
        }
        if self.now_secs > output.sign_timestamp + self.sign_max_age_secs {
            return reverted(Revert::SignatureTooOld);
        }
        let digest = output_digest(
            output.job_id,
            &output.output,
            output.total_time_ms,
            output.error_code.as_u8(),
            output.sign_timestamp,
        );
        let signer = recover(digest, &output.signature).unwrap_or_default();
        if !self.registered.contains(&signer) {
            return reverted(Revert::EnclaveNotVerified);
        }
        if !self.selected.contains(&signer) {
            return reverted(Revert::NotSelectedExecutor);
        }
        let mut submitted = submitted.lock().unwrap();
        if !submitted.insert((output.job_id, signer)) {
            return reverted(Revert::AlreadySubmittedOutput);
        }
        Ok(TxOutcome::Mined {
            tx_hash: H256::from_low_u64_be(submitted.len() as u64),
            gas_used: 50_000,
        })
    }

    fn slash(&self, job_id: U256) -> Result<TxOutcome, ChainError> {
        reverted(if job_id == self.open_job {
            Revert::DeadlineNotOver
        } else if job_id > self.open_job {
            Revert::UnknownJob
        } else {
            Revert::InvalidJob
        })
    }
}

// ------------------------------------------------------------------ ChainWriter contract

/// What the `ChainWriter` suite needs from its world: a gas key, one open job (window not over)
/// with outputs of three kinds, and a job id that does not exist.
pub struct WriterCase {
    pub gas_secret: [u8; 32],
    /// Signed by a selected executor, fresh, not yet submitted.
    pub output: SignedOutput,
    /// Signed by a selected executor that has not submitted, but too long ago.
    pub stale_output: SignedOutput,
    /// Fresh, signed by a registered enclave that is not selected for the job.
    pub unselected_output: SignedOutput,
    /// Fresh, signed by a key that was never registered (not a verified enclave key).
    pub unverified_output: SignedOutput,
    /// The plan every output is sent with (a deadline far ahead).
    pub plan: OutputPlan,
    /// A job whose window is not over.
    pub open_job: U256,
    pub unknown_job: U256,
}

/// The behaviour every `ChainWriter` must have, on a fresh instance.
pub async fn chain_writer_contract(writer: &dyn ChainWriter, case: &WriterCase) {
    assert_eq!(writer.gas_address(), None, "no gas key at first");
    assert_eq!(
        writer
            .submit_output(&case.output, case.plan, ignore_sent())
            .await,
        Err(ChainError::NoGasKey)
    );
    assert_eq!(
        writer.slash_on_execution_timeout(case.open_job).await,
        Err(ChainError::NoGasKey)
    );
    let stranger = SentTx {
        tx_hash: H256::repeat_byte(0x5e),
        from: Address::repeat_byte(0x5e),
        nonce: U256::zero(),
        max_fee_per_gas: U256::from(1_000_000_000u64),
        max_priority_fee_per_gas: None,
    };
    assert_eq!(writer.take_back(&stranger).await, Err(ChainError::NoGasKey));
    let ack = SecretAck {
        secret_id: U256::one(),
        sign_timestamp: 1,
        signature: vec![1; 65],
    };
    assert_eq!(
        writer.acknowledge_store(&ack).await,
        Err(ChainError::NoGasKey)
    );
    assert_eq!(
        writer.acknowledge_store_failed(U256::one()).await,
        Err(ChainError::NoGasKey)
    );
    assert_eq!(
        writer.mark_store_alive(1, &[1; 65]).await,
        Err(ChainError::NoGasKey)
    );
    for invalid in [[0u8; 32], [0xff; 32]] {
        assert!(
            matches!(writer.set_gas_key(invalid), Err(ChainError::InvalidKey(_))),
            "{invalid:?} is not a secp256k1 secret"
        );
    }
    assert_eq!(writer.gas_address(), None, "an invalid key changes nothing");

    let expected = gas_key_address(case.gas_secret).expect("the case's gas key is valid");
    assert_eq!(writer.set_gas_key(case.gas_secret), Ok(expected));
    assert_eq!(writer.gas_address(), Some(expected));

    let sent: Arc<Mutex<Vec<SentTx>>> = Arc::default();
    let heard: Arc<dyn OnSent> = {
        let sent = sent.clone();
        Arc::new(move |tx: SentTx| sent.lock().unwrap().push(tx))
    };
    let first = writer.submit_output(&case.output, case.plan, heard).await;
    assert!(is_mined(&first), "a valid output is mined: {first:?}");
    let sent = sent.lock().unwrap().clone();
    let Ok(TxOutcome::Mined { tx_hash, .. }) = first else {
        unreachable!()
    };
    assert_eq!(sent.len(), 1, "the broadcast is heard once: {sent:?}");
    assert_eq!((sent[0].tx_hash, sent[0].from), (tx_hash, expected));
    // A mined output cannot be taken back; one of another gas key is not ours to replace.
    assert_eq!(
        writer.take_back(&sent[0]).await,
        Ok(TakeBack::OutputMined { tx_hash })
    );
    assert_eq!(writer.take_back(&stranger).await, Ok(TakeBack::OtherKey));
    let again = writer
        .submit_output(&case.output, case.plan, ignore_sent())
        .await;
    assert_eq!(
        revert_of(&again),
        Some(Revert::AlreadySubmittedOutput),
        "{again:?}"
    );
    let stale = writer
        .submit_output(&case.stale_output, case.plan, ignore_sent())
        .await;
    assert_eq!(
        revert_of(&stale),
        Some(Revert::SignatureTooOld),
        "{stale:?}"
    );
    let unselected = writer
        .submit_output(&case.unselected_output, case.plan, ignore_sent())
        .await;
    assert_eq!(
        revert_of(&unselected),
        Some(Revert::NotSelectedExecutor),
        "{unselected:?}"
    );
    let unverified = writer
        .submit_output(&case.unverified_output, case.plan, ignore_sent())
        .await;
    assert_eq!(
        revert_of(&unverified),
        Some(Revert::EnclaveNotVerified),
        "{unverified:?}"
    );
    let early = writer.slash_on_execution_timeout(case.open_job).await;
    assert_eq!(
        revert_of(&early),
        Some(Revert::DeadlineNotOver),
        "{early:?}"
    );
    // A job id never created: Panic(0x32) on the published Jobs, for both calls.
    let unknown = writer.slash_on_execution_timeout(case.unknown_job).await;
    assert_eq!(revert_of(&unknown), Some(Revert::UnknownJob), "{unknown:?}");
    let mut unknown_output = case.output.clone();
    unknown_output.job_id = case.unknown_job;
    let unknown = writer
        .submit_output(&unknown_output, case.plan, ignore_sent())
        .await;
    assert_eq!(revert_of(&unknown), Some(Revert::UnknownJob), "{unknown:?}");
}

/// Whether a transaction was mined.
pub fn is_mined(outcome: &Result<TxOutcome, ChainError>) -> bool {
    matches!(outcome, Ok(TxOutcome::Mined { .. }))
}

/// Why a transaction was refused, if it was.
pub fn revert_of(outcome: &Result<TxOutcome, ChainError>) -> Option<Revert> {
    match outcome {
        Ok(TxOutcome::Reverted { revert, .. }) => Some(revert.clone()),
        _ => None,
    }
}

// ------------------------------------------------------------------ ChainReader contract

/// A `MockChainReader` for a chain whose reorgs removed the creating logs at `removed` (and no
/// other): a job is canonical unless its origin is one of them.
pub fn reorged_reader(removed: Vec<JobOrigin>) -> MockChainReader {
    let mut reader = MockChainReader::new();
    reader
        .expect_job_is_canonical()
        .returning(move |job| Ok(job.origin.is_none_or(|origin| !removed.contains(&origin))));
    reader
        .expect_secret_timeouts()
        .returning(|| Ok(Some(STUB_SECRET_TIMEOUTS)));
    reader
}

/// The SecretManager timeouts the stub readers answer (Marlin's deployment's).
pub const STUB_SECRET_TIMEOUTS: crate::domain::model::SecretTimeouts =
    crate::domain::model::SecretTimeouts {
        acknowledgement_secs: 120,
        mark_alive_secs: 500,
    };

/// A `MockChainReader` for a chain without reorgs: every job's creating log is canonical.
pub fn canonical_reader() -> MockChainReader {
    reorged_reader(Vec::new())
}

/// What the `ChainReader` suite needs: jobs whose creating logs are on the chain, and jobs whose
/// recorded origin is not (a reorg removed it, or it never was).
pub struct ReaderCase {
    pub canonical: Vec<Job>,
    pub off_chain: Vec<Job>,
}

/// What every `ChainReader` must do.
pub async fn chain_reader_contract(reader: &dyn ChainReader, case: &ReaderCase) {
    let mut without_origin = super::sample_job(1, vec![], 1);
    without_origin.origin = None;
    assert_eq!(
        reader.job_is_canonical(&without_origin).await,
        Ok(true),
        "a job without a recorded origin has nothing to check"
    );
    for job in &case.canonical {
        assert_eq!(reader.job_is_canonical(job).await, Ok(true), "{job:?}");
    }
    for job in &case.off_chain {
        assert_eq!(reader.job_is_canonical(job).await, Ok(false), "{job:?}");
    }
}

/// A `WriterCase` and the `ChainRules` that make it true, for `ChainScript::following`: job 1
/// is open and selects two of three registered enclaves; a fourth key was never registered.
pub fn scripted_writer_case() -> (WriterCase, ChainRules) {
    use crate::domain::dal::EnclaveSigner;
    use crate::domain::model::ErrorCode;
    let [e1, e2, outsider, stranger] =
        [0x51u8, 0x52, 0x53, 0x54].map(|byte| super::key_signer([byte; 32]));
    let now = 1_700_000_000;
    let job = U256::from(1);
    let rules = ChainRules {
        selected: vec![e1.address(), e2.address()],
        registered: vec![e1.address(), e2.address(), outsider.address()],
        open_job: job,
        now_secs: now,
        sign_max_age_secs: 30,
    };
    let sign = |signer: &dyn EnclaveSigner, at| {
        super::signed_output(signer, job, b"out", 5, ErrorCode::Ok, at)
    };
    let case = WriterCase {
        gas_secret: [7u8; 32],
        output: sign(&e1, now),
        stale_output: sign(&e2, now - 100),
        unselected_output: sign(&outsider, now),
        unverified_output: sign(&stranger, now),
        plan: OutputPlan {
            min_gas: 0,
            max_gas: 3_000_000,
            until_ms: (now + 600) * 1000,
        },
        open_job: job,
        unknown_job: U256::from(99),
    };
    (case, rules)
}
