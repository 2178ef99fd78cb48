//! Devnet and job-author tooling (not part of the executor's serving path): start a local anvil,
//! deploy the dev contracts, save code, register executors, create jobs and wait for their
//! outputs. Used by the devnet command, the client subcommands and the integration tests.
//!
//! Only `deploy` touches the dev contracts' artifacts (bytecode, `setJobsContract`); everything
//! else goes through the protocol bindings of `effects::chain::bindings`.

pub mod admin;
pub mod anvil;
pub mod deploy;
pub mod dev_accounts;
pub mod devnet;
pub mod jobs;
pub mod register;
pub mod tee;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use ethers::middleware::SignerMiddleware;
use ethers::providers::{Http, Middleware, Provider};
use ethers::signers::{LocalWallet, Signer};

/// A provider that signs with one key.
pub type Client = SignerMiddleware<Provider<Http>, LocalWallet>;

/// How often the tooling polls for receipts (anvil automines at once).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// An HTTP provider polling every `POLL_INTERVAL`.
pub fn provider(http_url: &str) -> Result<Provider<Http>> {
    Ok(Provider::<Http>::try_from(http_url)
        .with_context(|| format!("bad RPC URL {http_url}"))?
        .interval(POLL_INTERVAL))
}

/// Parses a hex private key (with or without 0x).
pub fn wallet(key: &str) -> Result<LocalWallet> {
    let digits = key.trim().trim_start_matches("0x");
    let bytes = hex::decode(digits).map_err(|_| anyhow!("the private key is not hex"))?;
    if bytes.len() != 32 {
        return Err(anyhow!(
            "a private key has 32 bytes, this one has {}",
            bytes.len()
        ));
    }
    LocalWallet::from_bytes(&bytes).map_err(|_| anyhow!("not a valid secp256k1 private key"))
}

/// A signing client for `key` on the chain at `http_url` (its chain id asked from the node).
pub async fn client(http_url: &str, key: &str) -> Result<Arc<Client>> {
    let provider = provider(http_url)?;
    let chain_id = provider
        .get_chainid()
        .await
        .with_context(|| format!("cannot reach the chain at {http_url}"))?;
    let wallet = wallet(key)?.with_chain_id(chain_id.as_u64());
    Ok(Arc::new(SignerMiddleware::new(provider, wallet)))
}
