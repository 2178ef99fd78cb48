//! Job code from the chain: a job's `codehash` is the hash of a `saveCodeInCallData` transaction
//! to the UserCode contract — current `(string,bytes)` or legacy `(string)` — and the code is its
//! first, string argument. Fetched with `eth_getTransactionByHash` over HTTP and kept in an LRU
//! cache by codehash.
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

/// The selector of the current `saveCodeInCallData(string,bytes)` (kept here: effects do not
/// import each other; `effects::chain::bindings` checks both against the generated binding).
pub const SAVE_CODE_SELECTOR: [u8; 4] = [0x1a, 0xe5, 0x3f, 0xea];
/// The selector of the legacy `saveCodeInCallData(string)`.
pub const LEGACY_SAVE_CODE_SELECTOR: [u8; 4] = [0xff, 0x7c, 0xda, 0xf3];

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

/// The JavaScript source in `saveCodeInCallData(string,bytes)` or `saveCodeInCallData(string)`
/// calldata: the first argument; the metadata of the current form is decoded (so calldata that
/// does not decode is refused) and ignored.
pub fn decode_save_code(calldata: &[u8]) -> Result<String, CodeFetchError> {
    // `string` and `bytes` share one encoding; decoding as bytes keeps the UTF-8 check ours
    // (ethabi would replace invalid sequences silently).
    let (arguments, types, form) = match calldata.get(..4) {
        Some(s) if s == SAVE_CODE_SELECTOR => (
            &calldata[4..],
            &[ParamType::Bytes, ParamType::Bytes][..],
            "(string,bytes)",
        ),
        Some(s) if s == LEGACY_SAVE_CODE_SELECTOR => {
            (&calldata[4..], &[ParamType::Bytes][..], "(string)")
        }
        Some(selector) => {
            return Err(CodeFetchError::BadCalldata(format!(
                "selector 0x{} is neither saveCodeInCallData(string,bytes) (0x{}) nor \
                 saveCodeInCallData(string) (0x{})",
                hex::encode(selector),
                hex::encode(SAVE_CODE_SELECTOR),
                hex::encode(LEGACY_SAVE_CODE_SELECTOR)
            )))
        }
        None => {
            return Err(CodeFetchError::BadCalldata(format!(
                "{} bytes of calldata is shorter than a selector",
                calldata.len()
            )))
        }
    };
    let tokens = ethers::abi::decode(types, arguments)
        .map_err(|e| CodeFetchError::BadCalldata(format!("not an ABI-encoded {form}: {e}")))?;
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

    fn current(code: &str, metadata: Vec<u8>) -> Vec<u8> {
        calldata(
            SAVE_CODE_SELECTOR,
            encode(&[Token::String(code.into()), Token::Bytes(metadata)]),
        )
    }

    #[test]
    fn selectors_are_the_two_forms() {
        assert_eq!(
            SAVE_CODE_SELECTOR[..],
            ethers::utils::id("saveCodeInCallData(string,bytes)")[..]
        );
        assert_eq!(
            LEGACY_SAVE_CODE_SELECTOR[..],
            ethers::utils::id("saveCodeInCallData(string)")[..]
        );
    }

    #[test]
    fn decodes_both_forms() {
        let legacy = calldata(
            LEGACY_SAVE_CODE_SELECTOR,
            encode(&[Token::String("export default {}".into())]),
        );
        assert_eq!(decode_save_code(&legacy).unwrap(), "export default {}");
        let empty = calldata(
            LEGACY_SAVE_CODE_SELECTOR,
            encode(&[Token::String(String::new())]),
        );
        assert_eq!(decode_save_code(&empty).unwrap(), "");
        assert_eq!(
            decode_save_code(&current("export default {}", vec![])).unwrap(),
            "export default {}"
        );
        // Long metadata (many words, after the code in the tail) does not leak into the code.
        let metadata: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let code = "export default { fetch() { return new Response('m') } }";
        assert_eq!(decode_save_code(&current(code, metadata)).unwrap(), code);
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
        for selector in [SAVE_CODE_SELECTOR, LEGACY_SAVE_CODE_SELECTOR] {
            let junk = calldata(selector, vec![0xab; 10]);
            assert!(matches!(
                decode_save_code(&junk),
                Err(CodeFetchError::BadCalldata(_))
            ));
        }
        // The current selector with only the legacy arguments: the metadata is missing.
        let short = calldata(SAVE_CODE_SELECTOR, encode(&[Token::String("x".into())]));
        assert!(matches!(
            decode_save_code(&short),
            Err(CodeFetchError::BadCalldata(m)) if m.contains("(string,bytes)")
        ));
        let bad_utf8 = calldata(
            LEGACY_SAVE_CODE_SELECTOR,
            encode(&[Token::Bytes(vec![0xff, 0xfe])]),
        );
        assert!(matches!(
            decode_save_code(&bad_utf8),
            Err(CodeFetchError::BadCalldata(m)) if m.contains("UTF-8")
        ));
        let bad_utf8 = calldata(
            SAVE_CODE_SELECTOR,
            encode(&[Token::Bytes(vec![0xff, 0xfe]), Token::Bytes(vec![])]),
        );
        assert!(matches!(
            decode_save_code(&bad_utf8),
            Err(CodeFetchError::BadCalldata(m)) if m.contains("UTF-8")
        ));
    }
}
