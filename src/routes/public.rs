//! Read-only routes: health, executor details, and the signed registration message.

use serde_json::{json, Value};

use super::error::ApiError;
use crate::domain::Executor;

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

pub fn health(executor: &Executor) -> Result<Value, ApiError> {
    let (busy, total, enforced) = executor.slot_usage();
    let (queued, in_flight) = executor.load();
    Ok(json!({
        "status": "ok",
        "chain_status": format!("{:?}", executor.chain_status()?).to_lowercase(),
        "slots_busy": busy,
        "slots_total": total,
        "cgroups_enforced": enforced,
        "jobs_queued": queued,
        "jobs_in_flight": in_flight,
    }))
}

pub fn executor_details(executor: &Executor) -> Result<Value, ApiError> {
    let d = executor.details()?;
    Ok(json!({
        "enclave_address": d.enclave_address,
        "enclave_public_key": hex0x(&d.enclave_public_key),
        "gas_address": d.gas_address,
        "owner_address": d.owner_address,
    }))
}

pub fn signed_registration_message(executor: &Executor) -> Result<Value, ApiError> {
    let r = executor.register_enclave()?;
    Ok(json!({
        "job_capacity": r.job_capacity,
        "sign_timestamp": r.sign_timestamp,
        "env": r.env,
        "owner": r.owner,
        "signature": hex0x(&r.signature),
    }))
}
