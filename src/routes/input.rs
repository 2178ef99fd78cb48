//! Reading request bodies: size limit, content type, JSON shape and hex fields, each with an
//! error that names the problem.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{header, Request, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest accepted request body, bytes. The API's bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 4096;

/// Reads a JSON body of type `T`, refusing wrong content types, oversize bodies and bad JSON.
pub async fn json_body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    json_body_within(req, MAX_BODY_BYTES).await
}

/// `json_body` with a body limit of `limit` bytes.
pub async fn json_body_within<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
) -> Result<T, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type must be application/json, got '{content_type}'"),
        ));
    }
    let body = read_limited(req.into_body(), limit).await?;
    serde_json::from_slice(&body).map_err(|e| {
        let what = if e.is_data() {
            "invalid request"
        } else {
            "malformed JSON"
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// Decodes a `0x`-prefixed (or bare) hex field of exactly `N` bytes.
pub fn hex_field<const N: usize>(field: &str, value: &str) -> Result<[u8; N], ApiError> {
    let bytes = hex_bytes_field(field, value)?;
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        ApiError::bad_request(format!("{field}: must be {N} bytes, got {}", bytes.len()))
    })
}

/// Decodes a `0x`-prefixed (or bare) hex field of any length.
pub fn hex_bytes_field(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .unwrap_or(value);
    if !digits.len().is_multiple_of(2) {
        return Err(ApiError::bad_request(format!(
            "{field}: odd number of hex digits ({})",
            digits.len()
        )));
    }
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{field}: '{}' is not a hex digit",
            bad.escape_default()
        )));
    }
    hex::decode(digits).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_fields_report_each_problem() {
        assert_eq!(hex_field::<2>("f", "0xabcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(hex_field::<2>("f", "ABCD").unwrap(), [0xab, 0xcd]);
        let odd = hex_field::<2>("f", "0xabc").unwrap_err().message;
        assert!(odd.contains("odd number"), "{odd}");
        let bad = hex_field::<2>("f", "0xzz00").unwrap_err().message;
        assert!(bad.contains("'z' is not a hex digit"), "{bad}");
        let short = hex_field::<3>("f", "0xabcd").unwrap_err().message;
        assert!(short.contains("must be 3 bytes, got 2"), "{short}");
    }
}
