//! A secret owner's tooling: seal a secret to an executor's enclave public key (ECIES, the
//! `ecies` crate as Marlin's user tooling uses it), sign the injection with the owner's key and
//! post it to the executor's secret listener.

use anyhow::{anyhow, bail, Context, Result};
use ethers::signers::LocalWallet;
use ethers::types::{H256, U256};
use serde_json::{json, Value};

use crate::domain::eip712::inject_secret_digest;

/// Parses an enclave public key: 64 bytes (x ‖ y), or 65 with the `04` prefix, hex.
pub fn enclave_public_key(text: &str) -> Result<[u8; 65]> {
    let bytes = hex::decode(text.trim().trim_start_matches("0x"))
        .map_err(|_| anyhow!("the enclave public key is not hex"))?;
    let mut key = [0u8; 65];
    key[0] = 4;
    match bytes.len() {
        64 => key[1..].copy_from_slice(&bytes),
        65 if bytes[0] == 4 => key.copy_from_slice(&bytes),
        n => bail!("an enclave public key has 64 bytes (or 65 starting with 04), this one has {n}"),
    }
    Ok(key)
}

/// The body of `POST /inject-secret`: `plaintext` sealed to `enclave_public_key`, signed by
/// `owner` over `keccak256(abi.encode(secretId, encryptedSecret))` (no EIP-191 prefix).
pub fn inject_secret_body(
    secret_id: U256,
    plaintext: &[u8],
    enclave_public_key: &[u8; 65],
    owner: &LocalWallet,
) -> Result<Value> {
    let sealed = ecies::encrypt(enclave_public_key, plaintext)
        .map_err(|e| anyhow!("cannot encrypt to the enclave key: {e}"))?;
    let digest = inject_secret_digest(secret_id, &sealed);
    let signature = owner
        .sign_hash(H256(digest))
        .map_err(|e| anyhow!("cannot sign: {e}"))?;
    Ok(json!({
        "secret_id": secret_id.to_string(),
        "encrypted_secret_hex": hex::encode(sealed),
        "signature_hex": format!("0x{}", hex::encode(signature.to_vec())),
    }))
}

/// Posts an injection to the secret listener at `url` and returns the executor's signed
/// acknowledgement, or its refusal as the error.
pub async fn inject_secret(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    super::admin::post(http, url.trim_end_matches('/'), "/inject-secret", body)
        .await
        .context("the executor refused the secret")
}

/// Waits until every store SecretManager selected for `secret_id` has acknowledged it on chain
/// (what a job with the secret needs); returns the stores. Fails after `timeout`, naming those
/// still missing.
pub async fn wait_for_acknowledgement(
    http_url: &str,
    secret_manager: ethers::types::Address,
    secret_id: U256,
    timeout: std::time::Duration,
) -> Result<Vec<ethers::types::Address>> {
    let provider = std::sync::Arc::new(super::provider(http_url)?);
    let contract = crate::effects::chain::tee::SecretManager::new(secret_manager, provider);
    let started = tokio::time::Instant::now();
    loop {
        let selected = contract
            .get_selected_enclaves(secret_id)
            .call()
            .await
            .context("reading SecretManager.getSelectedEnclaves")?;
        if selected.is_empty() {
            bail!("secret {secret_id} has no stores: it does not exist, or it was voided");
        }
        let missing: Vec<_> = selected.iter().filter(|s| !s.1).map(|s| s.0).collect();
        if missing.is_empty() {
            return Ok(selected.into_iter().map(|s| s.0).collect());
        }
        if started.elapsed() > timeout {
            bail!("secret {secret_id}: stores {missing:?} did not acknowledge in {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
