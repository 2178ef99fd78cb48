//! Job code from the chain: a job's `codehash` is the hash of a `saveCodeInCallData(string)`
//! transaction to the UserCode contract, and the code is that string. Fetched with
//! `eth_getTransactionByHash` over HTTP and kept in an LRU cache by codehash.
//!
//! Only answers that can never change are cached: a source, a transaction to another contract,
//! bad calldata (a transaction's content is fixed by its hash). "Not found" is not cached (the
//! transaction may still be on its way), nor are RPC failures.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use ethers::abi::ParamType;
use ethers::providers::{Http, Middleware, Provider};
use ethers::types::{Address, H256};
use lru::LruCache;

use crate::config::ChainConfig;
use crate::domain::dal::{CodeFetchError, CodeSource};

/// The selector of `saveCodeInCallData(string)` (kept here: effects do not import each other;
/// `effects::chain::bindings` checks it against the generated binding).
pub const SAVE_CODE_SELECTOR: [u8; 4] = [0xff, 0x7c, 0xda, 0xf3];

/// The longest `eth_getTransactionByHash` may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

pub struct UserCodeSource {
    provider: Provider<Http>,
    user_code: Address,
    cache: Mutex<LruCache<H256, Result<String, CodeFetchError>>>,
}

impl UserCodeSource {
    pub fn new(config: &ChainConfig) -> Result<Self, CodeFetchError> {
        let provider = Provider::<Http>::try_from(config.rpc_http_url.as_str()).map_err(|e| {
            CodeFetchError::Transient(format!("bad RPC URL {}: {e}", config.rpc_http_url))
        })?;
        let size = NonZeroUsize::new(config.code_cache_size).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            provider,
            user_code: config.user_code_address,
            cache: Mutex::new(LruCache::new(size)),
        })
    }

    fn cached(&self, codehash: H256) -> Option<Result<String, CodeFetchError>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&codehash)
            .cloned()
    }

    async fn fetch_uncached(&self, codehash: H256) -> Result<String, CodeFetchError> {
        let tx = tokio::time::timeout(RPC_TIMEOUT, self.provider.get_transaction(codehash))
            .await
            .map_err(|_| {
                CodeFetchError::Transient(format!(
                    "eth_getTransactionByHash timed out after {RPC_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| CodeFetchError::Transient(format!("eth_getTransactionByHash: {e}")))?
            .ok_or(CodeFetchError::NotFound(codehash))?;
        // Addresses are compared as values: the configured one's letter case cannot matter.
        if tx.to != Some(self.user_code) {
            return Err(CodeFetchError::WrongContract(codehash));
        }
        decode_save_code(&tx.input)
    }
}

/// The JavaScript source in `saveCodeInCallData(string)` calldata.
pub fn decode_save_code(calldata: &[u8]) -> Result<String, CodeFetchError> {
    let Some(arguments) = calldata.strip_prefix(&SAVE_CODE_SELECTOR[..]) else {
        return Err(CodeFetchError::BadCalldata(match calldata.get(..4) {
            Some(selector) => format!(
                "selector 0x{} is not saveCodeInCallData(string) (0x{})",
                hex::encode(selector),
                hex::encode(SAVE_CODE_SELECTOR)
            ),
            None => format!(
                "{} bytes of calldata is shorter than a selector",
                calldata.len()
            ),
        }));
    };
    // `string` and `bytes` share one encoding; decoding as bytes keeps the UTF-8 check ours
    // (ethabi would replace invalid sequences silently).
    let tokens = ethers::abi::decode(&[ParamType::Bytes], arguments)
        .map_err(|e| CodeFetchError::BadCalldata(format!("not an ABI-encoded (string): {e}")))?;
    let bytes = tokens
        .into_iter()
        .next()
        .and_then(|t| t.into_bytes())
        .ok_or_else(|| CodeFetchError::BadCalldata("no string argument".into()))?;
    String::from_utf8(bytes)
        .map_err(|e| CodeFetchError::BadCalldata(format!("the code is not valid UTF-8: {e}")))
}

#[async_trait]
impl CodeSource for UserCodeSource {
    async fn fetch_code(&self, codehash: H256) -> Result<String, CodeFetchError> {
        if let Some(answer) = self.cached(codehash) {
            return answer;
        }
        let answer = self.fetch_uncached(codehash).await;
        let permanent = matches!(
            answer,
            Ok(_) | Err(CodeFetchError::WrongContract(_)) | Err(CodeFetchError::BadCalldata(_))
        );
        if permanent {
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(codehash, answer.clone());
        }
        match &answer {
            Ok(code) => tracing::debug!(?codehash, bytes = code.len(), "job code fetched"),
            Err(e) => tracing::info!(?codehash, error = %e, "job code not fetched"),
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethers::abi::{encode, Token};

    fn calldata(selector: [u8; 4], arguments: Vec<u8>) -> Vec<u8> {
        let mut data = selector.to_vec();
        data.extend(arguments);
        data
    }

    #[test]
    fn decodes_a_save_code_call() {
        let data = calldata(
            SAVE_CODE_SELECTOR,
            encode(&[Token::String("export default {}".into())]),
        );
        assert_eq!(decode_save_code(&data).unwrap(), "export default {}");
        let empty = calldata(SAVE_CODE_SELECTOR, encode(&[Token::String(String::new())]));
        assert_eq!(decode_save_code(&empty).unwrap(), "");
    }

    #[test]
    fn refuses_other_selectors_junk_and_invalid_utf8() {
        let other = calldata([1, 2, 3, 4], encode(&[Token::String("x".into())]));
        assert!(matches!(
            decode_save_code(&other),
            Err(CodeFetchError::BadCalldata(m)) if m.contains("0x01020304")
        ));
        assert!(matches!(
            decode_save_code(&[0xff, 0x7c]),
            Err(CodeFetchError::BadCalldata(_))
        ));
        let junk = calldata(SAVE_CODE_SELECTOR, vec![0xab; 10]);
        assert!(matches!(
            decode_save_code(&junk),
            Err(CodeFetchError::BadCalldata(_))
        ));
        let bad_utf8 = calldata(
            SAVE_CODE_SELECTOR,
            encode(&[Token::Bytes(vec![0xff, 0xfe])]),
        );
        assert!(matches!(
            decode_save_code(&bad_utf8),
            Err(CodeFetchError::BadCalldata(m)) if m.contains("UTF-8")
        ));
    }
}
