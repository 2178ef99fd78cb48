//! Operator tooling for the executor's admin API: builds the owner and gas key requests, signing
//! the gas key change with the owner's key (EIP-191 over `domain::owner_auth`'s message).

use anyhow::{anyhow, bail, Context, Result};
use ethers::signers::{LocalWallet, Signer};
use ethers::types::Address;
use serde_json::{json, Value};

use crate::domain::owner_auth::mutable_config_message;

/// The body of `POST /immutable-config` for `owner`.
pub fn immutable_config_body(owner: Address) -> Value {
    json!({ "owner_address_hex": format!("{owner:?}") })
}

/// The body of `POST /mutable-config` setting `gas_key` on the executor `enclave`, signed by
/// `owner` at `timestamp` (unix seconds).
pub async fn signed_mutable_config_body(
    owner: &LocalWallet,
    enclave: Address,
    gas_key: &str,
    timestamp: u64,
) -> Result<Value> {
    let gas = super::wallet(gas_key).context("the gas key")?;
    let message = mutable_config_message(enclave, gas.address(), timestamp);
    let signature = owner
        .sign_message(&message)
        .await
        .map_err(|e| anyhow!("cannot sign: {e}"))?;
    Ok(json!({
        "gas_key_hex": format!("0x{}", hex::encode(gas.signer().to_bytes())),
        "timestamp": timestamp,
        "signature": format!("0x{}", hex::encode(signature.to_vec())),
    }))
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// GETs `base + path` and returns the JSON body, failing on a non-2xx status.
pub async fn get(http: &reqwest::Client, base: &str, path: &str) -> Result<Value> {
    let r = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    body(path, r).await
}

/// POSTs JSON to `base + path` and returns the JSON body, failing on a non-2xx status.
pub async fn post(http: &reqwest::Client, base: &str, path: &str, json: &Value) -> Result<Value> {
    let r = http
        .post(format!("{base}{path}"))
        .json(json)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    body(path, r).await
}

async fn body(path: &str, r: reqwest::Response) -> Result<Value> {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path} answered {status}: {body}");
    }
    Ok(body)
}

/// The enclave address an executor reports on its public API.
pub async fn enclave_address(http: &reqwest::Client, api_url: &str) -> Result<Address> {
    let details = get(http, api_url, "/executor-details").await?;
    details["enclave_address"]
        .as_str()
        .ok_or_else(|| anyhow!("the executor's answer lacks enclave_address: {details}"))?
        .parse()
        .map_err(|e| anyhow!("bad enclave_address: {e}"))
}
