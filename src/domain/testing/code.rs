//! The `CodeSource` port: a stub over a set of UserCode transactions (`code_on_chain`), the one
//! the domain tests use (`code_ok`), and the contract.

use std::collections::HashMap;

use ethers::types::H256;

use crate::domain::dal::{CodeFetchError, CodeSource, MockCodeSource};

/// The code every domain test job runs (the stub sandbox does not read it).
pub const JOB_CODE: &str = "export default {}";

/// A transaction as `code_on_chain` sees it: its hash, and the code it saved or why it is not a
/// UserCode call.
pub type CodeTransaction = (H256, Result<String, CodeFetchError>);

/// A code source over the transactions in `transactions` (by hash: the code they saved, or why
/// they are not a UserCode call); any other hash is not a transaction.
pub fn code_on_chain(transactions: impl IntoIterator<Item = CodeTransaction>) -> MockCodeSource {
    let answers: HashMap<H256, Result<String, CodeFetchError>> = transactions.into_iter().collect();
    let mut code = MockCodeSource::new();
    code.expect_fetch_code().returning(move |hash| {
        answers
            .get(&hash)
            .cloned()
            .unwrap_or(Err(CodeFetchError::NotFound(hash)))
    });
    code
}

/// The code source of the domain tests: the sample jobs' codehash saved `JOB_CODE`.
pub fn code_ok() -> MockCodeSource {
    code_on_chain([(super::SAMPLE_CODEHASH, Ok(JOB_CODE.to_string()))])
}

/// What the `CodeSource` suite needs: a transaction that saved `source`, a hash that is no
/// transaction, transactions to another contract and ones whose calldata is not code.
pub struct CodeCase {
    pub saved: H256,
    pub source: String,
    pub unknown: H256,
    pub wrong_contract: Vec<H256>,
    pub bad_calldata: Vec<H256>,
}

/// The behaviour every `CodeSource` must have.
pub async fn code_source_contract(source: &dyn CodeSource, case: &CodeCase) {
    for _ in 0..2 {
        assert_eq!(source.fetch_code(case.saved).await, Ok(case.source.clone()));
        assert_eq!(
            source.fetch_code(case.unknown).await,
            Err(CodeFetchError::NotFound(case.unknown))
        );
        for hash in &case.wrong_contract {
            assert_eq!(
                source.fetch_code(*hash).await,
                Err(CodeFetchError::WrongContract(*hash))
            );
        }
        for hash in &case.bad_calldata {
            let answer = source.fetch_code(*hash).await;
            assert!(
                matches!(&answer, Err(CodeFetchError::BadCalldata(reason)) if !reason.is_empty()),
                "{hash:?}: {answer:?}"
            );
        }
    }
}

/// A `CodeCase` and the transactions that make it true, for `code_on_chain`.
pub fn code_on_chain_case() -> (CodeCase, Vec<CodeTransaction>) {
    let case = CodeCase {
        saved: H256::repeat_byte(0x5a),
        source: super::sandbox::OK_JOB.into(),
        unknown: H256::repeat_byte(0x0f),
        wrong_contract: vec![H256::repeat_byte(0x3c)],
        bad_calldata: vec![H256::repeat_byte(0xba), H256::repeat_byte(0xbb)],
    };
    let mut transactions = vec![(case.saved, Ok(case.source.clone()))];
    transactions.extend(
        case.wrong_contract
            .iter()
            .map(|hash| (*hash, Err(CodeFetchError::WrongContract(*hash)))),
    );
    transactions.extend(
        case.bad_calldata
            .iter()
            .map(|hash| (*hash, Err(CodeFetchError::BadCalldata("junk".into())))),
    );
    (case, transactions)
}
