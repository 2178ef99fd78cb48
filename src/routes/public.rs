//! Read-only routes: health and readiness, executor details, and the signed registration message.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::domain::Executor;

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

pub fn health(executor: &Executor) -> Result<Value, ApiError> {
    let (busy, total, _) = executor.slot_usage();
    let (queued, in_flight) = executor.load();
    let readiness = executor.readiness()?;
    Ok(json!({
        // The process answers: alive. `ready` says whether it can do its work, and the
        // fields after it say why not.
        "status": "ok",
        "ready": readiness.ready,
        "registered": readiness.registered,
        "chain_connected": readiness.chain_connected,
        "cgroups_enforced": readiness.cgroups_enforced,
        "unlimited_slots_allowed": readiness.unlimited_slots_allowed,
        "not_ready_because": readiness.reasons(),
        "workerd_found": readiness.workerd_found,
        "enclave_verified": readiness.enclave_verified,
        // Set when the chain refuses our enclave key: the operator's next step.
        "enclave_refusal": executor.enclave_refusal(),
        "follower_ok": readiness.follower_ok,
        "head_lag_blocks": readiness.head_lag,
        "follower_problem": readiness.follower_problem,
        "chain_status": format!("{:?}", executor.chain_status()?).to_lowercase(),
        "slots_busy": busy,
        "slots_total": total,
        "jobs_queued": queued,
        "jobs_in_flight": in_flight,
    }))
}

/// The enclave and owner fields both details bodies carry, plus the gas address under each of
/// `gas_names` (the generations name the gas account differently).
fn details_body(executor: &Executor, gas_names: &[&str]) -> Result<Value, ApiError> {
    let d = executor.details()?;
    let mut body = json!({
        "enclave_address": d.enclave_address,
        "enclave_public_key": hex0x(&d.enclave_public_key),
        "owner_address": d.owner_address,
    });
    for name in gas_names {
        body[*name] = json!(d.gas_address);
    }
    Ok(body)
}

pub fn executor_details(executor: &Executor) -> Result<Value, ApiError> {
    details_body(executor, &["gas_address"])
}

/// Marlin's TEE-generation name for the details (`GET /tee-details`), for its operator tooling:
/// one gas key here pays for both the executor's and the store's transactions. Marlin's answer
/// also carries `ws_rpc_url`, which holds its RPC API key: left out on purpose.
pub fn tee_details(executor: &Executor) -> Result<Value, ApiError> {
    if executor.settings().protocol != crate::domain::model::Protocol::Tee {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no route /tee-details here: this executor runs EXECUTOR_PROTOCOL=v2 (use \
             /executor-details)",
        ));
    }
    details_body(
        executor,
        &["executor_gas_address", "secret_store_gas_address"],
    )
}

pub fn signed_registration_message(executor: &Executor) -> Result<Value, ApiError> {
    let r = executor.register_enclave()?;
    let mut body = json!({
        "job_capacity": r.job_capacity,
        "sign_timestamp": r.sign_timestamp,
        "env": r.env,
        "owner": r.owner,
        "signature": hex0x(&r.signature),
    });
    // TEE generation: the storage capacity is part of the signed message.
    if let Some(storage_capacity) = r.storage_capacity {
        body["storage_capacity"] = json!(storage_capacity);
    }
    Ok(body)
}
