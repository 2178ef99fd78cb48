//! The built-in secret store (TEE generation): one registered enclave is both an executor and a
//! secret store. Owners inject secrets assigned to us (`inject_secret`); SecretManager's events
//! record, update and delete them (`on_secret_event`); a timer (`secret_tick`) proves liveness
//! with `markStoreAlive`, reports missing acknowledgements and deletes expired secrets.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ethers::types::U256;
use zeroize::Zeroizing;

use crate::domain::dal::{ChainError, TxOutcome};
use crate::domain::eip712::{acknowledge_digest, alive_digest, inject_secret_digest, recover};
use crate::domain::model::{
    ChainStatus, SecretAck, SecretEvent, SecretRecord, SecretState, SecretTimeouts,
};
use crate::domain::{DomainError, Executor, SecretRefusal};

/// A secret is deleted this long after its end timestamp (the chain's clock may lag ours).
pub const SECRET_END_MARGIN_SECS: u64 = 5;
/// `acknowledgeStoreFailed` is sent this long after the acknowledgement timeout, so the chain's
/// clock has passed it too.
pub const ACK_FAILED_MARGIN_MS: u64 = 1_000;
/// After a refused or failed `markStoreAlive`, the next try waits this long.
pub const ALIVE_RETRY_MS: u64 = 5_000;

/// How often `markStoreAlive` is sent for a `MARK_ALIVE_TIMEOUT` of `timeout_secs`: a quarter of
/// the timeout early (at least 30 s, or half of a shorter timeout), so that a slow block or a
/// retry still lands inside the timeout. Marlin's store keeps only 5 s.
pub fn alive_interval_secs(timeout_secs: u64) -> u64 {
    let margin = (timeout_secs / 4).max(30.min(timeout_secs / 2));
    timeout_secs.saturating_sub(margin).max(1)
}

/// The secret store's state in memory: the timeouts once known, and the transactions on their way.
#[derive(Default)]
pub(crate) struct SecretDuties {
    timeouts: Mutex<Option<SecretTimeouts>>,
    /// Serialises read-modify-write of secret records (never held across an await).
    records: Mutex<()>,
    alive_in_flight: AtomicBool,
    /// No `markStoreAlive` before this (unix ms), after a failure.
    alive_not_before_ms: AtomicU64,
    acks_in_flight: Mutex<HashSet<U256>>,
    failed_in_flight: Mutex<HashSet<U256>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A U256 from the chain as seconds or bytes; past u64 it is as good as forever.
fn saturating_u64(value: U256) -> u64 {
    if value > U256::from(u64::MAX) {
        u64::MAX
    } else {
        value.as_u64()
    }
}

impl Executor {
    /// Whether this executor keeps secrets (a SecretManager is configured).
    pub fn keeps_secrets(&self) -> bool {
        self.settings.secret_store
    }

    /// Accepts secret `secret_id`, ECIES-encrypted to our enclave key and signed by its owner
    /// over `keccak256(abi.encode(secretId, encryptedSecret))`: checks it is assigned to us and
    /// not stored yet, the owner's signature, that it opens and fits its size limit; stores it,
    /// signs our acknowledgement and sends `acknowledgeStore` in the background. Refusals change
    /// nothing.
    pub fn inject_secret(
        self: &Arc<Self>,
        secret_id: U256,
        encrypted_secret: &[u8],
        signature: &[u8],
    ) -> Result<SecretAck, DomainError> {
        let refuse = |why| Err(DomainError::SecretRefused(why));
        let secrets = &self.ports.secrets;
        let Some(record) = secrets.secret(secret_id)?.filter(SecretRecord::is_ours) else {
            return refuse(SecretRefusal::NotAssigned(secret_id));
        };
        if record.state != SecretState::Awaiting {
            return refuse(SecretRefusal::AlreadyStored(secret_id));
        }
        let now_secs = self.ports.clock.now_ms() / 1000;
        if now_secs > record.end_timestamp {
            return refuse(SecretRefusal::Ended {
                secret_id,
                end_timestamp: record.end_timestamp,
            });
        }
        let digest = inject_secret_digest(secret_id, encrypted_secret);
        let Some(signer) = recover(digest, signature) else {
            return refuse(SecretRefusal::BadSignature);
        };
        if signer != record.owner {
            return refuse(SecretRefusal::NotOwner {
                signer,
                owner: record.owner,
            });
        }
        let plaintext = match self.ports.signer.decrypt(encrypted_secret) {
            Ok(plaintext) => Zeroizing::new(plaintext),
            Err(e) => return refuse(SecretRefusal::Undecryptable(e.0)),
        };
        if plaintext.len() as u64 > record.size_limit {
            return refuse(SecretRefusal::TooLarge {
                size: plaintext.len() as u64,
                limit: record.size_limit,
            });
        }
        let sign_timestamp = now_secs;
        let ack_signature = self
            .ports
            .signer
            .sign_digest(acknowledge_digest(secret_id, sign_timestamp))?;
        let ack = SecretAck {
            secret_id,
            sign_timestamp,
            signature: ack_signature.to_vec(),
        };
        {
            // Two injections at once: the second finds it stored.
            let _records = lock(&self.secret_duties.records);
            let Some(mut current) = secrets.secret(secret_id)?.filter(SecretRecord::is_ours) else {
                return refuse(SecretRefusal::NotAssigned(secret_id));
            };
            if current.state != SecretState::Awaiting {
                return refuse(SecretRefusal::AlreadyStored(secret_id));
            }
            current.state = SecretState::Stored;
            current.ack = Some(ack.clone());
            secrets.put_secret(&current, Some(&plaintext))?;
        }
        tracing::info!(secret = %secret_id, bytes = plaintext.len(), "secret stored; acknowledging on chain");
        self.send_acknowledgement(ack.clone());
        Ok(ack)
    }

    /// What SecretManager said about a secret (a log not removed by a reorg).
    pub(crate) fn on_secret_event(&self, event: SecretEvent) -> Result<(), DomainError> {
        let me = self.ports.signer.address();
        let secrets = &self.ports.secrets;
        let _records = lock(&self.secret_duties.records);
        match event {
            SecretEvent::Created {
                secret_id,
                owner,
                size_limit,
                end_timestamp,
                selected,
            } => {
                if secrets.secret(secret_id)?.is_some() {
                    return Ok(()); // delivered again by a backfill
                }
                let ours = selected.contains(&me);
                let record = SecretRecord {
                    secret_id,
                    owner,
                    size_limit: saturating_u64(size_limit),
                    end_timestamp: saturating_u64(end_timestamp),
                    state: if ours {
                        SecretState::Awaiting
                    } else {
                        SecretState::Observed
                    },
                    assigned_at_ms: if ours { self.ports.clock.now_ms() } else { 0 },
                    from_creation: ours,
                    selected,
                    acknowledged: Vec::new(),
                    ack_failed_sent: false,
                    ack: None,
                };
                if ours {
                    tracing::info!(secret = %secret_id, ?owner, "secret assigned to this store; waiting for its injection");
                }
                secrets.put_secret(&record, None)?;
            }
            SecretEvent::Acknowledged { secret_id, enclave } => {
                if let Some(mut record) = secrets.secret(secret_id)? {
                    if !record.acknowledged.contains(&enclave) {
                        record.acknowledged.push(enclave);
                    }
                    if enclave == me && record.state == SecretState::Stored {
                        tracing::info!(secret = %secret_id, "our acknowledgement is on chain");
                        record.state = SecretState::Acknowledged;
                    }
                    secrets.put_secret(&record, None)?;
                }
            }
            SecretEvent::AcknowledgementFailed { secret_id } => {
                if secrets.secret(secret_id)?.is_some_and(|r| r.is_ours()) {
                    tracing::info!(secret = %secret_id, "secret void (not every store acknowledged); deleted");
                }
                secrets.remove_secret(secret_id)?;
            }
            SecretEvent::StoreReplaced {
                secret_id,
                previous,
                replacement,
                ..
            } => {
                let Some(mut record) = secrets.secret(secret_id)? else {
                    if replacement == me {
                        tracing::warn!(secret = %secret_id,
                            "named as a replacement store for a secret created before the chain was followed: \
                             its owner is unknown, so it cannot be injected here");
                    }
                    return Ok(());
                };
                for store in record.selected.iter_mut() {
                    if *store == previous {
                        *store = replacement;
                    }
                }
                record.acknowledged.retain(|store| *store != previous);
                if previous == me && record.is_ours() {
                    tracing::info!(secret = %secret_id, ?replacement, "another store replaces us for this secret; deleted");
                    record.state = SecretState::Observed;
                    record.ack = None;
                    secrets.remove_plaintext(secret_id)?;
                } else if replacement == me && !record.is_ours() {
                    tracing::info!(secret = %secret_id, ?previous, "this store replaces another for a secret; waiting for its injection");
                    record.state = SecretState::Awaiting;
                    record.assigned_at_ms = self.ports.clock.now_ms();
                    record.from_creation = false;
                }
                secrets.put_secret(&record, None)?;
            }
            SecretEvent::EndTimestampUpdated {
                secret_id,
                end_timestamp,
            } => {
                if let Some(mut record) = secrets.secret(secret_id)? {
                    record.end_timestamp = saturating_u64(end_timestamp);
                    secrets.put_secret(&record, None)?;
                }
            }
            SecretEvent::Terminated { secret_id, .. } | SecretEvent::Removed { secret_id } => {
                if secrets.secret(secret_id)?.is_some_and(|r| r.is_ours()) {
                    tracing::info!(secret = %secret_id, "secret terminated or removed on chain; deleted");
                }
                secrets.remove_secret(secret_id)?;
            }
        }
        Ok(())
    }

    /// A reorg removed a SecretManager log. Only a creation not yet acted on is undone (the id
    /// may come back with other terms); anything else waits for what the new chain says.
    pub(crate) fn on_secret_event_removed(&self, event: SecretEvent) -> Result<(), DomainError> {
        if let SecretEvent::Created { secret_id, .. } = event {
            let _records = lock(&self.secret_duties.records);
            let untouched =
                self.ports.secrets.secret(secret_id)?.is_some_and(|r| {
                    matches!(r.state, SecretState::Observed | SecretState::Awaiting)
                });
            if untouched {
                tracing::warn!(secret = %secret_id, "secret creation removed by a reorg; forgotten");
                self.ports.secrets.remove_secret(secret_id)?;
            }
        } else {
            tracing::warn!(event = ?event, "a reorg removed a SecretManager log; kept as is");
        }
        Ok(())
    }

    /// Deletes every secret we hold (the node was drained or deregistered: the chain gives them
    /// to other stores). Observed records stay: a later replacement may name us again.
    pub(crate) fn forget_all_secrets(&self) -> Result<(), DomainError> {
        let secrets = &self.ports.secrets;
        let _records = lock(&self.secret_duties.records);
        let mut deleted = 0;
        for mut record in secrets.secrets()? {
            if record.is_ours() {
                record.state = SecretState::Observed;
                record.ack = None;
                secrets.put_secret(&record, None)?;
                secrets.remove_plaintext(record.secret_id)?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "drained: every stored secret deleted");
        }
        Ok(())
    }

    /// The secret a job reads as `env.secret`: None for a job without one; Err when we do not
    /// hold it (the random fill may pick us for a secret stored elsewhere), saying so.
    pub(crate) fn job_secret(&self, secret_id: U256) -> Result<Option<Vec<u8>>, JobSecretError> {
        if secret_id.is_zero() {
            return Ok(None);
        }
        let held = self
            .ports
            .secrets
            .secret(secret_id)
            .map_err(|e| JobSecretError::Store(e.to_string()))?
            .is_some_and(|r| matches!(r.state, SecretState::Stored | SecretState::Acknowledged));
        let plaintext = if held {
            self.ports
                .secrets
                .plaintext(secret_id)
                .map_err(|e| JobSecretError::Store(e.to_string()))?
        } else {
            None
        };
        plaintext
            .map(Some)
            .ok_or(JobSecretError::NotHeld(secret_id))
    }

    /// SecretManager's timeouts: the settings' overrides, else what the chain says (asked once;
    /// None while it cannot be asked).
    pub async fn secret_timeouts(&self) -> Option<SecretTimeouts> {
        if let Some(known) = *lock(&self.secret_duties.timeouts) {
            return Some(known);
        }
        let (ack, alive) = (
            self.settings.secret_ack_timeout_secs,
            self.settings.secret_mark_alive_timeout_secs,
        );
        let timeouts = match (ack, alive) {
            (Some(acknowledgement_secs), Some(mark_alive_secs)) => SecretTimeouts {
                acknowledgement_secs,
                mark_alive_secs,
            },
            _ => match self.ports.reader.secret_timeouts().await {
                Ok(Some(chain)) => SecretTimeouts {
                    acknowledgement_secs: ack.unwrap_or(chain.acknowledgement_secs),
                    mark_alive_secs: alive.unwrap_or(chain.mark_alive_secs),
                },
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read SecretManager's timeouts yet; retrying");
                    return None;
                }
            },
        };
        tracing::info!(
            ?timeouts,
            alive_every_secs = alive_interval_secs(timeouts.mark_alive_secs),
            "secret store timeouts"
        );
        *lock(&self.secret_duties.timeouts) = Some(timeouts);
        Some(timeouts)
    }

    /// The ids of every secret recorded (ours and observed): what the chain follower must keep
    /// delivering id-only SecretManager events for after a restart.
    pub fn known_secret_ids(&self) -> Result<Vec<U256>, DomainError> {
        Ok(self
            .ports
            .secrets
            .secrets()?
            .into_iter()
            .map(|record| record.secret_id)
            .collect())
    }

    /// At start: acknowledgements signed before a restart whose secret the chain has not seen
    /// acknowledged are sent again (while the timeout allows).
    pub fn recover_secrets(self: &Arc<Self>) -> Result<usize, DomainError> {
        if !self.keeps_secrets() {
            return Ok(0);
        }
        let mut resent = 0;
        for record in self.ports.secrets.secrets()? {
            if let (SecretState::Stored, Some(ack)) = (record.state, record.ack) {
                self.send_acknowledgement(ack);
                resent += 1;
            }
        }
        Ok(resent)
    }

    /// One round of the store's chain duties, run every second or so by the timer: delete
    /// secrets past their end, report missing acknowledgements, and prove liveness on time.
    pub async fn secret_tick(self: &Arc<Self>) -> Result<(), DomainError> {
        if !self.keeps_secrets() {
            return Ok(());
        }
        let timeouts = self.secret_timeouts().await;
        let now_ms = self.ports.clock.now_ms();
        let now_secs = now_ms / 1000;
        let secrets = &self.ports.secrets;
        for record in secrets.secrets()? {
            let id = record.secret_id;
            if now_secs > record.end_timestamp.saturating_add(SECRET_END_MARGIN_SECS) {
                let _records = lock(&self.secret_duties.records);
                if record.is_ours() {
                    tracing::info!(secret = %id, "secret past its end; deleted");
                }
                secrets.remove_secret(id)?;
                continue;
            }
            let Some(timeouts) = timeouts else { continue };
            let ack_over =
                record.assigned_at_ms + timeouts.acknowledgement_secs * 1000 + ACK_FAILED_MARGIN_MS;
            if record.is_ours()
                && record.from_creation
                && !record.ack_failed_sent
                && record.acks_missing()
                && now_ms > ack_over
            {
                self.send_acknowledgement_failed(id);
            }
        }
        if let Some(timeouts) = timeouts {
            self.keep_alive(timeouts, now_ms).await?;
        }
        Ok(())
    }

    /// Sends `markStoreAlive` when the last one mined is older than the interval (or there is
    /// none), while registered and not draining.
    async fn keep_alive(
        self: &Arc<Self>,
        timeouts: SecretTimeouts,
        now_ms: u64,
    ) -> Result<(), DomainError> {
        if self.ports.store.chain_status()? != ChainStatus::Serving {
            return Ok(());
        }
        let duties = &self.secret_duties;
        if now_ms < duties.alive_not_before_ms.load(Ordering::SeqCst) {
            return Ok(());
        }
        let interval = alive_interval_secs(timeouts.mark_alive_secs);
        let due = self
            .ports
            .secrets
            .last_alive()?
            .is_none_or(|last| now_ms / 1000 >= last.saturating_add(interval));
        if !due || duties.alive_in_flight.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let executor = self.clone();
        tokio::spawn(async move {
            executor.send_alive().await;
            executor
                .secret_duties
                .alive_in_flight
                .store(false, Ordering::SeqCst);
        });
        Ok(())
    }

    async fn send_alive(&self) {
        let sign_timestamp = self.ports.clock.now_ms() / 1000;
        let retry_later = || {
            self.secret_duties
                .alive_not_before_ms
                .store(self.ports.clock.now_ms() + ALIVE_RETRY_MS, Ordering::SeqCst)
        };
        let signature = match self.ports.signer.sign_digest(alive_digest(sign_timestamp)) {
            Ok(signature) => signature,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign Alive");
                return retry_later();
            }
        };
        match self
            .ports
            .chain
            .mark_store_alive(sign_timestamp, &signature)
            .await
        {
            Ok(TxOutcome::Mined { gas_used, .. }) => {
                self.ports.metrics.gas_spent(gas_used);
                // The chain counts from its block time, at or after the signature: ours is earlier, safe.
                if let Err(e) = self.ports.secrets.set_last_alive(sign_timestamp) {
                    tracing::error!(error = %e, "markStoreAlive mined but not journalled; it is sent again");
                }
                tracing::info!(sign_timestamp, "markStoreAlive mined");
            }
            Ok(TxOutcome::Reverted {
                revert, gas_used, ..
            }) => {
                self.ports.metrics.gas_spent(gas_used);
                tracing::error!(%revert, "the chain refused markStoreAlive");
                retry_later();
            }
            Err(e) => {
                tracing::warn!(error = %e, "markStoreAlive failed; retrying");
                retry_later();
            }
        }
    }

    /// Sends `acknowledgeStore` in the background, retrying transient failures until the
    /// acknowledgement timeout has passed; once per secret at a time.
    fn send_acknowledgement(self: &Arc<Self>, ack: SecretAck) {
        if !lock(&self.secret_duties.acks_in_flight).insert(ack.secret_id) {
            return;
        }
        let executor = self.clone();
        tokio::spawn(async move {
            let id = ack.secret_id;
            executor.acknowledge(ack).await;
            lock(&executor.secret_duties.acks_in_flight).remove(&id);
        });
    }

    async fn acknowledge(&self, ack: SecretAck) {
        let id = ack.secret_id;
        let mut backoff = self.settings.retry_backoff_ms;
        loop {
            match self.ports.chain.acknowledge_store(&ack).await {
                Ok(TxOutcome::Mined { gas_used, .. }) => {
                    self.ports.metrics.gas_spent(gas_used);
                    tracing::info!(secret = %id, "acknowledgeStore mined");
                    return;
                }
                Ok(TxOutcome::Reverted {
                    revert, gas_used, ..
                }) => {
                    self.ports.metrics.gas_spent(gas_used);
                    tracing::error!(secret = %id, %revert, "the chain refused our acknowledgeStore");
                    return;
                }
                Err(e) => {
                    if self.is_stopping() {
                        // Sent again at the next start (`recover_secrets`).
                        return;
                    }
                    let deadline = self.ack_deadline_ms(id).await;
                    if self.ports.clock.now_ms() + backoff > deadline {
                        tracing::error!(secret = %id, error = %e, "acknowledgeStore kept failing until the timeout");
                        return;
                    }
                    tracing::warn!(secret = %id, error = %e, backoff_ms = backoff, "acknowledgeStore failed; retrying");
                    self.ports.clock.sleep_ms(backoff).await;
                    backoff = (backoff * 2).min(self.settings.retry_backoff_ms * 8);
                }
            }
        }
    }

    /// Until when an acknowledgement of `id` is worth sending (0: the secret is gone).
    async fn ack_deadline_ms(&self, id: U256) -> u64 {
        let assigned = match self.ports.secrets.secret(id) {
            Ok(Some(record)) if record.state == SecretState::Stored => record.assigned_at_ms,
            _ => return 0,
        };
        let timeout = self
            .secret_timeouts()
            .await
            .map_or(120, |t| t.acknowledgement_secs);
        assigned + timeout * 1000
    }

    /// Sends `acknowledgeStoreFailed` in the background; journalled as sent once the chain has
    /// answered (mined or refused), retried at a later tick otherwise.
    fn send_acknowledgement_failed(self: &Arc<Self>, id: U256) {
        if !lock(&self.secret_duties.failed_in_flight).insert(id) {
            return;
        }
        let executor = self.clone();
        tokio::spawn(async move {
            let answered = match executor.ports.chain.acknowledge_store_failed(id).await {
                Ok(outcome) => {
                    executor.ports.metrics.gas_spent(outcome.gas_used());
                    tracing::info!(secret = %id, ?outcome, "acknowledgeStoreFailed answered");
                    true
                }
                Err(e @ ChainError::NoContract(_)) => {
                    tracing::error!(secret = %id, error = %e, "cannot send acknowledgeStoreFailed");
                    true
                }
                Err(e) => {
                    tracing::warn!(secret = %id, error = %e, "acknowledgeStoreFailed failed; retrying later");
                    false
                }
            };
            if answered {
                let _records = lock(&executor.secret_duties.records);
                match executor.ports.secrets.secret(id) {
                    Ok(Some(mut record)) => {
                        record.ack_failed_sent = true;
                        if let Err(e) = executor.ports.secrets.put_secret(&record, None) {
                            tracing::error!(secret = %id, error = %e, "cannot journal acknowledgeStoreFailed");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(secret = %id, error = %e, "cannot journal acknowledgeStoreFailed")
                    }
                }
            }
            lock(&executor.secret_duties.failed_in_flight).remove(&id);
        });
    }
}

/// Why a job's secret cannot be given to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobSecretError {
    /// We do not hold the secret (never injected here, or deleted).
    NotHeld(U256),
    /// The store failed.
    Store(String),
}
