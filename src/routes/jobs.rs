//! Job status routes (public, read-only): `GET /jobs/{id}` and
//! `GET /jobs?state=&limit=&after=&order=`. They read the journal: the router runs them on a
//! blocking thread.

use ethers::types::U256;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::domain::api::JobStatus;
use crate::domain::dal::JobOrder;
use crate::domain::Executor;

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// A job id as a decimal number or 0x-prefixed hex.
fn job_id(field: &str, text: &str) -> Result<U256, ApiError> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(digits) if !digits.is_empty() && digits.len() <= 64 => {
            U256::from_str_radix(digits, 16).ok()
        }
        Some(_) => None,
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            U256::from_dec_str(text).ok()
        }
        None => None,
    };
    parsed.ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field}: '{}' is not a job id (a decimal number below 2^256, or 0x-hex)",
            text.escape_default()
        ))
    })
}

fn view(job: &JobStatus) -> Value {
    json!({
        "id": job.id.to_string(),
        "state": job.state,
        "selected": job.selected,
        "deadline_ms": job.deadline_ms,
        "exec_start_time": job.exec_start_time,
        "error_code": job.error_code,
        "total_time_ms": job.total_time_ms,
        "tx_hash": job.tx_hash,
        "reason": job.reason,
        "output_count": job.output_count,
        "settled": job.settled,
        "gas_spent": job.gas_spent,
    })
}

pub fn job(executor: &Executor, id: &str) -> Result<Value, ApiError> {
    let id = job_id("job id", id)?;
    Ok(view(&executor.job_status(id)?))
}

pub fn jobs(executor: &Executor, query: Option<&str>) -> Result<Value, ApiError> {
    let (mut state, mut limit, mut after, mut order) =
        (None, DEFAULT_LIMIT, None, JobOrder::Ascending);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "state" => state = Some(value),
            "limit" => {
                limit = value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "limit: '{}' is not a whole number",
                        value.escape_default()
                    ))
                })?
            }
            "after" => after = Some(job_id("after", value)?),
            "order" => {
                order = match value {
                    "asc" => JobOrder::Ascending,
                    "desc" => JobOrder::Descending,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "order: '{}' is not asc or desc",
                            value.escape_default()
                        )))
                    }
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{}' (known: state, limit, after, order)",
                    key.escape_default()
                )))
            }
        }
    }
    let page = executor.list_jobs_in(order, state, after, limit)?;
    Ok(json!({
        "jobs": page.jobs.iter().map(view).collect::<Vec<_>>(),
        "next": page.next.map(|id| id.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_decimal_or_hex_and_nothing_else() {
        assert_eq!(job_id("f", "42").unwrap(), U256::from(42));
        assert_eq!(job_id("f", "0x2a").unwrap(), U256::from(42));
        for bad in ["", "-1", "0x", "4 2", "abc", "0xzz", &"9".repeat(80)] {
            assert!(job_id("f", bad).is_err(), "{bad}");
        }
    }
}
