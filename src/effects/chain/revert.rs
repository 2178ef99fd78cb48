//! Turning the chain's refusals into the protocol's words: revert data (a custom error's 4-byte
//! selector, `Error(string)`, `Panic(uint256)`) → `Revert`, and telling a revert apart from RPC
//! trouble in a provider error.

use ethers::abi::AbiDecode;
use ethers::contract::EthError;
use ethers::providers::{ProviderError, RpcError};

use super::bindings::{
    JobsDeadlineNotOver, JobsExecutionTimeOver, JobsExecutorAlreadySubmittedOutput, JobsInvalidJob,
    JobsNotSelectedExecutor, JobsSignatureTooOld,
};
use crate::domain::dal::Revert;

/// The protocol's other custom errors: reported by name.
const OTHER_PROTOCOL_ERRORS: &[&str] = &[
    "JobsUnavailableResources()",
    "ExecutorsSignatureTooOld()",
    "ExecutorsInvalidSigner()",
    "ExecutorsExecutorAlreadyExists()",
    "ExecutorsAlreadyDraining()",
    "ExecutorsAlreadyRevived()",
    "ExecutorsNotDraining()",
    "ExecutorsHasPendingJobs()",
    "ExecutorsInvalidOwner()",
    "ExecutorsUnsupportedEnv()",
];

/// The protocol meaning of revert data returned by a node.
pub fn decode_revert(data: &[u8]) -> Revert {
    if data.len() < 4 {
        return Revert::Other(if data.is_empty() {
            "reverted without data".into()
        } else {
            format!("0x{}", hex::encode(data))
        });
    }
    let selector: [u8; 4] = [data[0], data[1], data[2], data[3]];
    let known = [
        (JobsExecutionTimeOver::selector(), Revert::ExecutionTimeOver),
        (JobsSignatureTooOld::selector(), Revert::SignatureTooOld),
        (
            JobsNotSelectedExecutor::selector(),
            Revert::NotSelectedExecutor,
        ),
        (
            JobsExecutorAlreadySubmittedOutput::selector(),
            Revert::AlreadySubmittedOutput,
        ),
        (JobsInvalidJob::selector(), Revert::InvalidJob),
        (JobsDeadlineNotOver::selector(), Revert::DeadlineNotOver),
    ];
    if let Some((_, revert)) = known.into_iter().find(|(s, _)| *s == selector) {
        return revert;
    }
    if let Some(name) = OTHER_PROTOCOL_ERRORS
        .iter()
        .find(|signature| ethers::utils::id(signature) == selector)
    {
        return Revert::Other(name.trim_end_matches("()").to_string());
    }
    // Error(string)
    if selector == [0x08, 0xc3, 0x79, 0xa0] {
        if let Ok(reason) = String::decode(&data[4..]) {
            return Revert::Other(reason);
        }
    }
    // Panic(uint256)
    if selector == [0x4e, 0x48, 0x7b, 0x71] {
        if let Ok(code) = ethers::types::U256::decode(&data[4..]) {
            return Revert::Other(format!("panic 0x{code:x}"));
        }
    }
    Revert::Other(format!("0x{}", hex::encode(data)))
}

/// `Some` when the node refused because execution reverted (with or without data); `None` when
/// the error is transport or node trouble.
pub fn revert_of(error: &ProviderError) -> Option<Revert> {
    let response = error.as_error_response()?;
    let data = response.as_revert_data()?;
    if data.is_empty() {
        return Some(Revert::Other(response.message.clone()));
    }
    Some(decode_revert(&data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethers::abi::AbiEncode;

    #[test]
    fn protocol_errors_decode_by_selector() {
        let cases = [
            ("JobsExecutionTimeOver()", Revert::ExecutionTimeOver),
            ("JobsSignatureTooOld()", Revert::SignatureTooOld),
            ("JobsNotSelectedExecutor()", Revert::NotSelectedExecutor),
            (
                "JobsExecutorAlreadySubmittedOutput()",
                Revert::AlreadySubmittedOutput,
            ),
            ("JobsInvalidJob()", Revert::InvalidJob),
            ("JobsDeadlineNotOver()", Revert::DeadlineNotOver),
        ];
        for (signature, revert) in cases {
            let selector = &ethers::utils::id(signature)[..];
            assert_eq!(decode_revert(selector), revert, "{signature}");
        }
        assert_eq!(
            decode_revert(&ethers::utils::id("JobsUnavailableResources()")),
            Revert::Other("JobsUnavailableResources".into())
        );
        assert_eq!(
            decode_revert(&[0xde, 0xad, 0xbe, 0xef, 0]),
            Revert::Other("0xdeadbeef00".into())
        );
    }

    #[test]
    fn error_strings_panics_and_junk() {
        let mut data = vec![0x08, 0xc3, 0x79, 0xa0];
        data.extend(String::from("nope").encode());
        assert_eq!(decode_revert(&data), Revert::Other("nope".into()));
        let mut data = vec![0x4e, 0x48, 0x7b, 0x71];
        data.extend(ethers::types::U256::from(0x11).encode());
        assert_eq!(decode_revert(&data), Revert::Other("panic 0x11".into()));
        assert_eq!(decode_revert(&[1, 2]), Revert::Other("0x0102".into()));
        assert_eq!(
            decode_revert(&[]),
            Revert::Other("reverted without data".into())
        );
    }
}
