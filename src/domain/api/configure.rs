//! Operator configuration: the owner (immutable, set once) and the gas key (replaceable; once
//! the owner is set, only with the owner's fresh EIP-191 signature, see `owner_auth`).

use ethers::types::Address;

use crate::domain::owner_auth::{mutable_config_message, recover_personal, OwnerSignature};
use crate::domain::{AuthRejection, DomainError, Executor};

/// How far ahead of the executor's clock a signature's timestamp may be (clock skew).
const MAX_FUTURE_SECS: u64 = 60;

impl Executor {
    /// Sets the owner address; a second call fails and changes nothing.
    pub fn configure_immutable(&self, owner: Address) -> Result<(), DomainError> {
        if owner.is_zero() {
            return Err(DomainError::InvalidOwner(
                "the zero address cannot own an executor".into(),
            ));
        }
        if self.ports.store.set_owner_once(owner)? {
            tracing::info!(owner = ?owner, "owner configured");
            Ok(())
        } else {
            let current = self.ports.store.owner()?.unwrap_or_default();
            Err(DomainError::OwnerAlreadySet(current))
        }
    }

    /// Sets or replaces the gas key; returns the gas address. Pending transactions move to it.
    /// Once the owner is set, `auth` must be the owner's signature of
    /// `mutable_config_message(enclave, gas address, timestamp)`, fresh and later than the last
    /// accepted one (unless unsigned changes are explicitly allowed).
    pub fn configure_mutable(
        &self,
        gas_secret: [u8; 32],
        auth: Option<&OwnerSignature>,
    ) -> Result<Address, DomainError> {
        // Checked before anything changes: a refused key must not reach the sender.
        let key = k256::ecdsa::SigningKey::from_slice(&gas_secret).map_err(|_| {
            DomainError::InvalidGasKey(
                "not a valid secp256k1 secret (zero, or not below the curve order)".into(),
            )
        })?;
        let gas = ethers::utils::secret_key_to_address(&key);
        if gas == self.ports.signer.address() {
            return Err(DomainError::InvalidGasKey(
                "the gas key must not be the enclave key".into(),
            ));
        }
        self.authorise_mutable(gas, auth)?;
        let gas_address = self
            .ports
            .chain
            .set_gas_key(gas_secret)
            .map_err(|e| match e {
                crate::domain::dal::ChainError::InvalidKey(reason) => {
                    DomainError::InvalidGasKey(reason)
                }
                other => DomainError::Chain(other),
            })?;
        self.ports.store.set_gas_key(gas_secret)?;
        tracing::info!(gas_address = ?gas_address, "gas key configured");
        Ok(gas_address)
    }

    fn authorise_mutable(
        &self,
        gas: Address,
        auth: Option<&OwnerSignature>,
    ) -> Result<(), DomainError> {
        let reject = |r| Err(DomainError::Unauthorized(r));
        let owner = self.ports.store.owner()?;
        let (owner, auth) = match (owner, auth) {
            // Before the owner exists there is no one to check against (and nothing to protect
            // but the loopback admin listener).
            (None, None) => return Ok(()),
            (None, Some(_)) => return reject(AuthRejection::NoOwner),
            (Some(_), None) if self.settings.admin_allow_unsigned => {
                tracing::warn!("accepting an unsigned gas key change (admin_allow_unsigned)");
                return Ok(());
            }
            (Some(_), None) => return reject(AuthRejection::Missing),
            (Some(owner), Some(auth)) => (owner, auth),
        };
        let message = mutable_config_message(self.ports.signer.address(), gas, auth.timestamp);
        match recover_personal(&message, &auth.signature) {
            None => return reject(AuthRejection::BadSignature),
            Some(recovered) if recovered != owner => {
                return reject(AuthRejection::WrongSigner { recovered, owner })
            }
            Some(_) => {}
        }
        let now = self.ports.clock.now_ms() / 1000;
        let max_age_secs = self.settings.admin_signature_max_age_secs;
        if auth.timestamp > now + MAX_FUTURE_SECS {
            return reject(AuthRejection::FromTheFuture {
                ahead_secs: auth.timestamp - now,
            });
        }
        let age_secs = now.saturating_sub(auth.timestamp);
        if age_secs > max_age_secs {
            return reject(AuthRejection::Stale {
                age_secs,
                max_age_secs,
            });
        }
        // Last: a request refused above must not use up its timestamp.
        if !self.ports.store.advance_config_timestamp(auth.timestamp)? {
            let last = self.ports.store.config_timestamp()?.unwrap_or_default();
            return reject(AuthRejection::Replayed {
                timestamp: auth.timestamp,
                last,
            });
        }
        Ok(())
    }

    /// Loads a gas key persisted by an earlier run into the transaction sender.
    pub fn restore_gas_key(&self) -> Result<Option<Address>, DomainError> {
        match self.ports.store.gas_key()? {
            Some(secret) => Ok(Some(self.ports.chain.set_gas_key(secret)?)),
            None => Ok(None),
        }
    }
}
