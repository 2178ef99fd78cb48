//! Operator routes (admin listener only): set the owner (once) and the gas key (replaceable;
//! owner-signed once the owner is set).

use hyper::body::Incoming;
use hyper::Request;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{hex_field, json_body};
use crate::domain::owner_auth::OwnerSignature;
use crate::domain::Executor;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImmutableConfig {
    owner_address_hex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MutableConfig {
    gas_key_hex: String,
    /// Unix seconds at which the owner signed; with `signature`.
    #[serde(default)]
    timestamp: Option<u64>,
    /// The owner's EIP-191 signature of the canonical message (see `domain::owner_auth`).
    #[serde(default)]
    signature: Option<String>,
}

pub async fn immutable_config(
    executor: &Executor,
    req: Request<Incoming>,
) -> Result<Value, ApiError> {
    let body: ImmutableConfig = json_body(req).await?;
    let owner = hex_field::<20>("owner_address_hex", &body.owner_address_hex)?;
    executor.configure_immutable(owner.into())?;
    Ok(json!({"message": "owner address configured"}))
}

pub async fn mutable_config(
    executor: &Executor,
    req: Request<Incoming>,
) -> Result<Value, ApiError> {
    let body: MutableConfig = json_body(req).await?;
    let secret = hex_field::<32>("gas_key_hex", &body.gas_key_hex)?;
    let auth = match (body.timestamp, body.signature) {
        (None, None) => None,
        (Some(timestamp), Some(signature)) => Some(OwnerSignature {
            timestamp,
            signature: hex_field::<65>("signature", &signature)?,
        }),
        _ => {
            return Err(ApiError::bad_request(
                "timestamp and signature go together: send both or neither",
            ))
        }
    };
    let gas_address = executor.configure_mutable(secret, auth.as_ref())?;
    Ok(json!({"message": "gas key configured", "gas_address": gas_address}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevel {
    level: String,
}

pub fn log_level() -> Result<Value, ApiError> {
    Ok(json!({ "level": crate::logging::level() }))
}

/// Changes the log filter at run time (not a secret-bearing change: no signature needed).
pub async fn set_log_level(req: Request<Incoming>) -> Result<Value, ApiError> {
    let body: LogLevel = json_body(req).await?;
    crate::logging::set_level(&body.level).map_err(|e| match e {
        crate::logging::LogLevelError::Invalid(reason) => ApiError::bad_request(reason),
        e @ crate::logging::LogLevelError::NotControllable => {
            ApiError::new(hyper::StatusCode::CONFLICT, e.to_string())
        }
    })?;
    Ok(json!({ "level": body.level }))
}
