//! Operator configuration: the owner (immutable, set once) and the gas key (replaceable).

use ethers::types::Address;

use crate::domain::{DomainError, Executor};

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
    pub fn configure_mutable(&self, gas_secret: [u8; 32]) -> Result<Address, DomainError> {
        // Checked before anything changes: a refused key must not reach the sender.
        let key = k256::ecdsa::SigningKey::from_slice(&gas_secret).map_err(|_| {
            DomainError::InvalidGasKey(
                "not a valid secp256k1 secret (zero, or not below the curve order)".into(),
            )
        })?;
        if ethers::utils::secret_key_to_address(&key) == self.ports.signer.address() {
            return Err(DomainError::InvalidGasKey(
                "the gas key must not be the enclave key".into(),
            ));
        }
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

    /// Loads a gas key persisted by an earlier run into the transaction sender.
    pub fn restore_gas_key(&self) -> Result<Option<Address>, DomainError> {
        match self.ports.store.gas_key()? {
            Some(secret) => Ok(Some(self.ports.chain.set_gas_key(secret)?)),
            None => Ok(None),
        }
    }
}
