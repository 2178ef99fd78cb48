//! Operator routes: set the owner (once) and the gas key (replaceable).

use hyper::body::Incoming;
use hyper::Request;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{hex_field, json_body};
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
    let gas_address = executor.configure_mutable(secret)?;
    Ok(json!({"message": "gas key configured", "gas_address": gas_address}))
}
