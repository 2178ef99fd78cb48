//! The secret listener's one route, `POST /inject-secret`: a secret's owner hands over the
//! secret ECIES-encrypted to our enclave key, with their signature; the answer is our signed
//! acknowledgement. Every client is a stranger here: the body is bounded and each field checked.

use std::sync::Arc;

use ethers::types::U256;
use hyper::body::Incoming;
use hyper::Request;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{hex_bytes_field, json_body_within};
use crate::domain::Executor;

/// Largest `/inject-secret` body, bytes (Marlin's store accepts the same).
pub const MAX_INJECT_BODY_BYTES: usize = 2_500_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectSecret {
    /// A JSON number, or a decimal or 0x-hex string (ids are uint256 on chain).
    secret_id: Value,
    encrypted_secret_hex: String,
    signature_hex: String,
}

fn secret_id(value: &Value) -> Result<U256, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "secret_id: {value} is not an unsigned integer (a JSON number, or a decimal or 0x-hex string)"
        ))
    };
    let id = match value {
        Value::Number(n) => n.as_u64().map(U256::from).ok_or_else(bad)?,
        Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) if !hex.is_empty() && hex.len() <= 64 => {
                U256::from_str_radix(hex, 16).map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
            None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                U256::from_dec_str(s).map_err(|_| bad())?
            }
            None => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    if id.is_zero() {
        return Err(ApiError::bad_request(
            "secret_id: 0 means no secret; secret ids start at 1",
        ));
    }
    Ok(id)
}

/// The id as the answer shows it: a number when it fits one, else a decimal string.
fn id_value(id: U256) -> Value {
    if id <= U256::from(u64::MAX) {
        json!(id.as_u64())
    } else {
        json!(id.to_string())
    }
}

pub async fn inject_secret(
    executor: &Arc<Executor>,
    req: Request<Incoming>,
) -> Result<Value, ApiError> {
    let body: InjectSecret = json_body_within(req, MAX_INJECT_BODY_BYTES).await?;
    let id = secret_id(&body.secret_id)?;
    let encrypted = hex_bytes_field("encrypted_secret_hex", &body.encrypted_secret_hex)?;
    if encrypted.is_empty() {
        return Err(ApiError::bad_request("encrypted_secret_hex: empty"));
    }
    let signature = hex_bytes_field("signature_hex", &body.signature_hex)?;
    if signature.len() != 65 {
        return Err(ApiError::bad_request(format!(
            "signature_hex: must be 65 bytes (r ‖ s ‖ v), got {}",
            signature.len()
        )));
    }
    let ack = executor.inject_secret(id, &encrypted, &signature)?;
    Ok(json!({
        "secret_id": id_value(ack.secret_id),
        "sign_timestamp": ack.sign_timestamp,
        "signature": format!("0x{}", hex::encode(&ack.signature)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_ids_parse_from_numbers_and_strings_and_refuse_the_rest() {
        assert_eq!(secret_id(&json!(7)).unwrap(), U256::from(7));
        assert_eq!(secret_id(&json!("7")).unwrap(), U256::from(7));
        assert_eq!(secret_id(&json!("0x10")).unwrap(), U256::from(16));
        let big = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(secret_id(&json!(big)).unwrap(), U256::MAX);
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("x"),
            json!(""),
            json!("0x"),
            json!(null),
            json!([1]),
        ] {
            assert!(secret_id(&bad).is_err(), "{bad}");
        }
        assert_eq!(id_value(U256::from(3)), json!(3));
        assert_eq!(id_value(U256::MAX), json!(big));
    }
}
