//! Turning the chain's refusals into the protocol's words: revert data (a custom error's 4-byte
//! selector, `Error(string)`, `Panic(uint256)`) → `Revert`, and telling a revert apart from RPC
//! trouble in a provider error. Covers what Marlin's published contracts raise beyond the wire
//! protocol: `Panic(0x32)` for a job id never created, `AttestationAutherKeyNotVerified`, and the
//! attestation, ECDSA and ERC20 errors by name; and the TEE generation's TeeManager, Executors,
//! SecretStore and SecretManager errors an executor can meet, plus its `Panic(0x11)` hazard.

use ethers::abi::{AbiDecode, ParamType, Token};
use ethers::contract::EthError;
use ethers::providers::{ProviderError, RpcError};

use super::bindings::{
    AttestationAutherKeyNotVerified, JobsDeadlineNotOver, JobsExecutionTimeOver,
    JobsExecutorAlreadySubmittedOutput, JobsInvalidJob, JobsNotSelectedExecutor,
    JobsSignatureTooOld,
};
use crate::domain::dal::Revert;

/// Other refusals a deployment of the published contracts gives, reported by name (with their
/// arguments): the protocol's other custom errors, the attestation checks of registration,
/// OpenZeppelin's ECDSA errors and the tokens' ERC20 errors.
const NAMED_ERRORS: &[(&str, &[ParamType])] = &[
    ("JobsUnavailableResources()", &[]),
    ("ExecutorsSignatureTooOld()", &[]),
    ("ExecutorsInvalidSigner()", &[]),
    ("ExecutorsExecutorAlreadyExists()", &[]),
    ("ExecutorsAlreadyDraining()", &[]),
    ("ExecutorsAlreadyRevived()", &[]),
    ("ExecutorsNotDraining()", &[]),
    ("ExecutorsHasPendingJobs()", &[]),
    ("ExecutorsInvalidOwner()", &[]),
    ("ExecutorsUnsupportedEnv()", &[]),
    ("AttestationAutherPubkeyLengthInvalid()", &[]),
    ("AttestationAutherPCRsInvalid()", &[]),
    ("AttestationAutherImageNotWhitelisted()", &[]),
    ("AttestationAutherAttestationTooOld()", &[]),
    // TEE generation (registration, drain/revive/deregister, stake, secrets, job creation).
    ("TeeManagerSignatureTooOld()", &[]),
    ("TeeManagerInvalidSigner()", &[]),
    ("TeeManagerEnclaveAlreadyExists()", &[]),
    ("TeeManagerEnclaveAlreadyDraining()", &[]),
    ("TeeManagerEnclaveAlreadyRevived()", &[]),
    ("TeeManagerEnclaveNotDraining()", &[]),
    ("TeeManagerInvalidEnclaveOwner()", &[]),
    ("TeeManagerInvalidCaller()", &[]),
    ("ExecutorsNotTeeManager()", &[]),
    ("ExecutorsUnavailableResources()", &[]),
    ("SecretStoreHasOccupiedStorage()", &[]),
    ("SecretStoreUnsupportedEnv()", &[]),
    ("SecretStoreNotTeeManager()", &[]),
    ("SecretStoreNotSecretManager()", &[]),
    ("SecretManagerSignatureTooOld()", &[]),
    ("SecretManagerCallerIsNotSecretStore()", &[]),
    ("SecretManagerInsufficientUsdcDeposit()", &[]),
    ("SecretManagerInvalidSizeLimit()", &[]),
    ("SecretManagerInvalidEndTimestamp()", &[]),
    ("SecretManagerUnavailableResources()", &[]),
    ("SecretManagerAcknowledgementTimeOver()", &[]),
    (
        "SecretManagerAcknowledgementTimeoutPending(address)",
        &[ParamType::Address],
    ),
    ("SecretManagerAcknowledgedAlready()", &[]),
    ("SecretManagerUnacknowledged()", &[]),
    ("SecretManagerNodeIsDraining()", &[]),
    ("SecretManagerEnclaveNotFound()", &[]),
    ("SecretManagerStoreIsAlive()", &[]),
    ("SecretManagerInvalidSecretOwner()", &[]),
    ("SecretManagerAlreadyTerminated()", &[]),
    ("SecretManagerCantAckWhileDraining()", &[]),
    ("SecretManagerTerminationPending()", &[]),
    ("SecretManagerAlreadyAcknowledged()", &[]),
    ("SecretManagerUserNotAllowed()", &[]),
    ("SecretManagerInvalidSecret()", &[]),
    ("SecretManagerStoreNotDraining()", &[]),
    ("ECDSAInvalidSignature()", &[]),
    (
        "ECDSAInvalidSignatureLength(uint256)",
        &[ParamType::Uint(256)],
    ),
    (
        "ECDSAInvalidSignatureS(bytes32)",
        &[ParamType::FixedBytes(32)],
    ),
    (
        "ERC20InsufficientBalance(address,uint256,uint256)",
        &[
            ParamType::Address,
            ParamType::Uint(256),
            ParamType::Uint(256),
        ],
    ),
    (
        "ERC20InsufficientAllowance(address,uint256,uint256)",
        &[
            ParamType::Address,
            ParamType::Uint(256),
            ParamType::Uint(256),
        ],
    ),
    ("ERC20InvalidSender(address)", &[ParamType::Address]),
    ("ERC20InvalidReceiver(address)", &[ParamType::Address]),
    ("ERC20InvalidApprover(address)", &[ParamType::Address]),
    ("ERC20InvalidSpender(address)", &[ParamType::Address]),
];

/// `Panic(0x32)`: an array index out of bounds — on the published Jobs, a job id never created.
const PANIC_ARRAY_INDEX: u64 = 0x32;
/// `Panic(0x11)`: arithmetic over/underflow — on the TEE generation, what every output and slash
/// of a node whose storage capacity is below `GLOBAL_MAX_SECRET_SIZE` reverts with.
const PANIC_ARITHMETIC: u64 = 0x11;

/// `Name(arg, …)` for a named error, or None when the arguments do not decode.
fn describe_named(signature: &str, types: &[ParamType], arguments: &[u8]) -> Option<String> {
    let name = &signature[..signature.find('(')?];
    if types.is_empty() {
        return Some(name.to_string());
    }
    let tokens = ethers::abi::decode(types, arguments).ok()?;
    let arguments: Vec<String> = tokens
        .into_iter()
        .map(|token| match token {
            Token::Address(a) => format!("{a:?}"),
            Token::Uint(n) => n.to_string(),
            Token::FixedBytes(b) => format!("0x{}", hex::encode(b)),
            other => other.to_string(),
        })
        .collect();
    Some(format!("{name}({})", arguments.join(", ")))
}

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
        (
            AttestationAutherKeyNotVerified::selector(),
            Revert::EnclaveNotVerified,
        ),
    ];
    if let Some((_, revert)) = known.into_iter().find(|(s, _)| *s == selector) {
        return revert;
    }
    if let Some(named) = NAMED_ERRORS
        .iter()
        .filter(|(signature, _)| ethers::utils::id(signature) == selector)
        .find_map(|(signature, types)| describe_named(signature, types, &data[4..]))
    {
        return Revert::Other(named);
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
            if code == PANIC_ARRAY_INDEX.into() {
                return Revert::UnknownJob;
            }
            if code == PANIC_ARITHMETIC.into() {
                return Revert::Other(
                    "panic 0x11 (arithmetic over/underflow; on the TEE generation: the node's \
                     storage capacity is below SecretManager.GLOBAL_MAX_SECRET_SIZE)"
                        .into(),
                );
            }
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
            (
                "AttestationAutherKeyNotVerified()",
                Revert::EnclaveNotVerified,
            ),
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
            decode_revert(&ethers::utils::id("AttestationAutherImageNotWhitelisted()")),
            Revert::Other("AttestationAutherImageNotWhitelisted".into())
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
        assert!(
            matches!(decode_revert(&data), Revert::Other(m) if m.starts_with("panic 0x11") && m.contains("GLOBAL_MAX_SECRET_SIZE"))
        );
        let mut data = vec![0x4e, 0x48, 0x7b, 0x71];
        data.extend(ethers::types::U256::from(0x12).encode());
        assert_eq!(decode_revert(&data), Revert::Other("panic 0x12".into()));
        let mut data = vec![0x4e, 0x48, 0x7b, 0x71];
        data.extend(ethers::types::U256::from(0x32).encode());
        assert_eq!(decode_revert(&data), Revert::UnknownJob);
        assert_eq!(decode_revert(&[1, 2]), Revert::Other("0x0102".into()));
        assert_eq!(
            decode_revert(&[]),
            Revert::Other("reverted without data".into())
        );
    }

    #[test]
    fn tee_generation_errors_are_named_by_their_protocol_selectors() {
        for (selector, name) in [
            ("28d2524a", "TeeManagerSignatureTooOld"),
            ("7f5872c1", "TeeManagerInvalidSigner"),
            ("fb243d60", "TeeManagerEnclaveAlreadyExists"),
            ("2907d0c8", "TeeManagerInvalidEnclaveOwner"),
            ("c903d086", "TeeManagerEnclaveNotDraining"),
            ("56daaee3", "ExecutorsUnavailableResources"),
            ("42d22f0a", "ExecutorsHasPendingJobs"),
            ("dc1267b8", "ExecutorsUnsupportedEnv"),
            ("21c8e7e8", "SecretStoreHasOccupiedStorage"),
            ("91d81b75", "SecretStoreUnsupportedEnv"),
            ("65f1f217", "SecretManagerUserNotAllowed"),
            ("8db5a2ea", "SecretManagerAlreadyTerminated"),
            ("760a5351", "SecretManagerUnacknowledged"),
            ("6983e6f6", "SecretManagerSignatureTooOld"),
            ("8ecd5e7b", "SecretManagerStoreIsAlive"),
            ("cc5c6b2c", "SecretManagerNodeIsDraining"),
            ("74886800", "SecretManagerAcknowledgementTimeOver"),
            ("7f20147e", "SecretManagerAlreadyAcknowledged"),
            ("f38f8382", "SecretManagerCantAckWhileDraining"),
        ] {
            let data = hex::decode(selector).unwrap();
            assert_eq!(
                decode_revert(&data),
                Revert::Other(name.into()),
                "{selector}"
            );
        }
        let mut data = hex::decode("15307fd5").unwrap();
        let store = ethers::types::Address::repeat_byte(0x42);
        data.extend(ethers::abi::encode(&[Token::Address(store)]));
        assert_eq!(
            decode_revert(&data),
            Revert::Other(format!(
                "SecretManagerAcknowledgementTimeoutPending({store:?})"
            ))
        );
    }

    #[test]
    fn token_and_signature_errors_are_named_with_their_arguments() {
        let spender = ethers::types::Address::repeat_byte(0x11);
        let mut data =
            ethers::utils::id("ERC20InsufficientAllowance(address,uint256,uint256)").to_vec();
        data.extend(ethers::abi::encode(&[
            Token::Address(spender),
            Token::Uint(0.into()),
            Token::Uint(5000.into()),
        ]));
        assert_eq!(
            decode_revert(&data),
            Revert::Other(format!("ERC20InsufficientAllowance({spender:?}, 0, 5000)"))
        );
        assert_eq!(
            decode_revert(&ethers::utils::id("ECDSAInvalidSignature()")),
            Revert::Other("ECDSAInvalidSignature".into())
        );
        let mut data = ethers::utils::id("ECDSAInvalidSignatureS(bytes32)").to_vec();
        data.extend([0xee; 32]);
        assert_eq!(
            decode_revert(&data),
            Revert::Other(format!("ECDSAInvalidSignatureS(0x{})", "ee".repeat(32)))
        );
        // Arguments that do not decode: the raw data, never a wrong name.
        let short = ethers::utils::id("ERC20InsufficientBalance(address,uint256,uint256)");
        assert_eq!(
            decode_revert(&short),
            Revert::Other(format!("0x{}", hex::encode(short)))
        );
    }
}
