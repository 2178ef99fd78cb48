//! EIP-712 digests of the protocol's two signed messages (domain without chainId or
//! verifyingContract), and recovery of a signer for checks.

use ethers::abi::{encode, Token};
use ethers::types::{Address, Signature, U256};
use ethers::utils::keccak256;

const DOMAIN_TYPE: &str = "EIP712Domain(string name,string version)";
pub const EXECUTORS_DOMAIN_NAME: &str = "marlin.oyster.Executors";
pub const JOBS_DOMAIN_NAME: &str = "marlin.oyster.Jobs";
pub const DOMAIN_VERSION: &str = "1";
pub const REGISTER_TYPE: &str =
    "Register(address owner,uint256 jobCapacity,uint8 env,uint256 signTimestamp)";
pub const SUBMIT_OUTPUT_TYPE: &str =
    "SubmitOutput(uint256 jobId,bytes output,uint256 totalTime,uint8 errorCode,uint256 signTimestamp)";

fn domain_separator(name: &str) -> [u8; 32] {
    keccak256(encode(&[
        Token::FixedBytes(keccak256(DOMAIN_TYPE).to_vec()),
        Token::FixedBytes(keccak256(name).to_vec()),
        Token::FixedBytes(keccak256(DOMAIN_VERSION).to_vec()),
    ]))
}

fn typed_digest(domain_name: &str, struct_hash: [u8; 32]) -> [u8; 32] {
    let mut message = Vec::with_capacity(66);
    message.extend_from_slice(&[0x19, 0x01]);
    message.extend_from_slice(&domain_separator(domain_name));
    message.extend_from_slice(&struct_hash);
    keccak256(message)
}

/// The digest the enclave signs to register: `Register(owner, jobCapacity, env, signTimestamp)`.
pub fn registration_digest(
    owner: Address,
    job_capacity: u64,
    env: u8,
    sign_timestamp: u64,
) -> [u8; 32] {
    let struct_hash = keccak256(encode(&[
        Token::FixedBytes(keccak256(REGISTER_TYPE).to_vec()),
        Token::Address(owner),
        Token::Uint(U256::from(job_capacity)),
        Token::Uint(U256::from(env)),
        Token::Uint(U256::from(sign_timestamp)),
    ]));
    typed_digest(EXECUTORS_DOMAIN_NAME, struct_hash)
}

/// The digest the enclave signs for `submitOutput`; `output` enters as `keccak256(output)`.
pub fn output_digest(
    job_id: U256,
    output: &[u8],
    total_time_ms: u64,
    error_code: u8,
    sign_timestamp: u64,
) -> [u8; 32] {
    let struct_hash = keccak256(encode(&[
        Token::FixedBytes(keccak256(SUBMIT_OUTPUT_TYPE).to_vec()),
        Token::Uint(job_id),
        Token::FixedBytes(keccak256(output).to_vec()),
        Token::Uint(U256::from(total_time_ms)),
        Token::Uint(U256::from(error_code)),
        Token::Uint(U256::from(sign_timestamp)),
    ]));
    typed_digest(JOBS_DOMAIN_NAME, struct_hash)
}

/// Who signed `digest` with a 65-byte `r ‖ s ‖ v` signature, if it parses.
pub fn recover(digest: [u8; 32], signature: &[u8]) -> Option<Address> {
    let sig = Signature::try_from(signature).ok()?;
    sig.recover(ethers::types::H256::from(digest)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethers::types::transaction::eip712::{Eip712, TypedData};

    /// ethers' own EIP-712 encoder, fed the eth_signTypedData JSON form: an independent check.
    fn ethers_digest(json: serde_json::Value) -> [u8; 32] {
        let typed: TypedData = serde_json::from_value(json).unwrap();
        typed.encode_eip712().unwrap()
    }

    #[test]
    fn registration_digest_matches_ethers_typed_data() {
        let owner: Address = "0x000000000000000000000000000000000000dEaD"
            .parse()
            .unwrap();
        let ours = registration_digest(owner, 20, 1, 1_700_000_000);
        let theirs = ethers_digest(serde_json::json!({
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}],
                "Register": [
                    {"name": "owner", "type": "address"},
                    {"name": "jobCapacity", "type": "uint256"},
                    {"name": "env", "type": "uint8"},
                    {"name": "signTimestamp", "type": "uint256"}
                ]
            },
            "primaryType": "Register",
            "domain": {"name": "marlin.oyster.Executors", "version": "1"},
            "message": {"owner": format!("{owner:?}"), "jobCapacity": 20, "env": 1, "signTimestamp": 1_700_000_000u64}
        }));
        assert_eq!(ours, theirs);
    }

    #[test]
    fn output_digest_matches_ethers_typed_data() {
        let ours = output_digest(U256::from(42), b"2,2,5", 123, 0, 1_700_000_001);
        let theirs = ethers_digest(serde_json::json!({
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}],
                "SubmitOutput": [
                    {"name": "jobId", "type": "uint256"},
                    {"name": "output", "type": "bytes"},
                    {"name": "totalTime", "type": "uint256"},
                    {"name": "errorCode", "type": "uint8"},
                    {"name": "signTimestamp", "type": "uint256"}
                ]
            },
            "primaryType": "SubmitOutput",
            "domain": {"name": "marlin.oyster.Jobs", "version": "1"},
            "message": {"jobId": 42, "output": "0x322c322c35", "totalTime": 123, "errorCode": 0, "signTimestamp": 1_700_000_001u64}
        }));
        assert_eq!(ours, theirs);
    }

    #[test]
    fn digests_change_with_every_field() {
        let base = output_digest(U256::from(1), b"x", 1, 0, 1);
        assert_ne!(base, output_digest(U256::from(2), b"x", 1, 0, 1));
        assert_ne!(base, output_digest(U256::from(1), b"y", 1, 0, 1));
        assert_ne!(base, output_digest(U256::from(1), b"x", 2, 0, 1));
        assert_ne!(base, output_digest(U256::from(1), b"x", 1, 4, 1));
        assert_ne!(base, output_digest(U256::from(1), b"x", 1, 0, 2));
    }

    #[test]
    fn recover_rejects_garbage() {
        assert_eq!(recover([0; 32], &[0u8; 10]), None);
    }
}
