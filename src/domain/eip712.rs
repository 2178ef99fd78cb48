//! EIP-712 digests of the messages the enclave signs (domains without chainId or
//! verifyingContract): v2's Register and SubmitOutput, and the TEE generation's Register (with a
//! storage capacity), Acknowledge and Alive; and recovery of a signer for checks.

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
pub const TEE_MANAGER_DOMAIN_NAME: &str = "marlin.oyster.TeeManager";
pub const SECRET_MANAGER_DOMAIN_NAME: &str = "marlin.oyster.SecretManager";
pub const TEE_REGISTER_TYPE: &str =
    "Register(address owner,uint256 jobCapacity,uint256 storageCapacity,uint8 env,uint256 signTimestamp)";
pub const ACKNOWLEDGE_TYPE: &str = "Acknowledge(uint256 secretId,uint256 signTimestamp)";
pub const ALIVE_TYPE: &str = "Alive(uint256 signTimestamp)";

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

/// The TEE generation's registration digest (TeeManager domain): `Register(owner, jobCapacity,
/// storageCapacity, env, signTimestamp)`.
pub fn tee_registration_digest(
    owner: Address,
    job_capacity: u64,
    storage_capacity: u64,
    env: u8,
    sign_timestamp: u64,
) -> [u8; 32] {
    let struct_hash = keccak256(encode(&[
        Token::FixedBytes(keccak256(TEE_REGISTER_TYPE).to_vec()),
        Token::Address(owner),
        Token::Uint(U256::from(job_capacity)),
        Token::Uint(U256::from(storage_capacity)),
        Token::Uint(U256::from(env)),
        Token::Uint(U256::from(sign_timestamp)),
    ]));
    typed_digest(TEE_MANAGER_DOMAIN_NAME, struct_hash)
}

/// The digest a secret store signs for `acknowledgeStore` (SecretManager domain).
pub fn acknowledge_digest(secret_id: U256, sign_timestamp: u64) -> [u8; 32] {
    let struct_hash = keccak256(encode(&[
        Token::FixedBytes(keccak256(ACKNOWLEDGE_TYPE).to_vec()),
        Token::Uint(secret_id),
        Token::Uint(U256::from(sign_timestamp)),
    ]));
    typed_digest(SECRET_MANAGER_DOMAIN_NAME, struct_hash)
}

/// The digest a secret store signs for `markStoreAlive` (SecretManager domain).
pub fn alive_digest(sign_timestamp: u64) -> [u8; 32] {
    let struct_hash = keccak256(encode(&[
        Token::FixedBytes(keccak256(ALIVE_TYPE).to_vec()),
        Token::Uint(U256::from(sign_timestamp)),
    ]));
    typed_digest(SECRET_MANAGER_DOMAIN_NAME, struct_hash)
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

    fn hash(text: &str) -> String {
        format!("0x{}", hex::encode(keccak256(text)))
    }

    fn hex32(bytes: [u8; 32]) -> String {
        format!("0x{}", hex::encode(bytes))
    }

    #[test]
    fn tee_typehashes_and_separators_are_the_protocols() {
        assert_eq!(
            hash(DOMAIN_TYPE),
            "0xb03948446334eb9b2196d5eb166f69b9d49403eb4a12f36de8d3f9f3cb8e15c3"
        );
        assert_eq!(
            hash(TEE_REGISTER_TYPE),
            "0xa8046062563c5a63df5fe0e4f3d02bd9b70ec2595c86c1c3b7d6daef53037364"
        );
        assert_eq!(
            hash(ACKNOWLEDGE_TYPE),
            "0xcb169c40d7f9e70620f294e55bafcfa723079c0706ef5b333cb436f500cef021"
        );
        assert_eq!(
            hash(ALIVE_TYPE),
            "0xdae796726b27cd7dda3bfd74f9278f4b47f5d287726c2decbea8e620739c37ef"
        );
        assert_eq!(
            hex32(domain_separator(TEE_MANAGER_DOMAIN_NAME)),
            "0xd9f4a04434fe1f0e5929538459a90eed34fea911ab3cb76ee52f17cc7f9a76c6"
        );
        assert_eq!(
            hex32(domain_separator(SECRET_MANAGER_DOMAIN_NAME)),
            "0x8b6707602470fff1b4f81c8aec7c4a25200031d59c286fb896d97e9fd807e421"
        );
        assert_eq!(
            hex32(domain_separator(JOBS_DOMAIN_NAME)),
            "0x92348788277b460cc420185f9a17ff6b57b89f1c70d19a46fce67bb5b5319731"
        );
    }

    /// The protocol's worked example: enclave key 32 × 0x11, owner 20 × 0x22, capacity 20 jobs
    /// and 1e8 bytes, env 1, timestamp 1700000000.
    #[test]
    fn tee_registration_matches_the_test_vector() {
        use k256::ecdsa::SigningKey;
        let owner = Address::repeat_byte(0x22);
        let digest = tee_registration_digest(owner, 20, 100_000_000, 1, 1_700_000_000);
        assert_eq!(
            hex32(digest),
            "0xc76a75662d7ecf1a6e0c80a9cad9dd1b6a0d156c604301872b3a64ac14c01549"
        );
        let key = SigningKey::from_slice(&[0x11; 32]).unwrap();
        let (sig, recovery) = key.sign_prehash_recoverable(&digest).unwrap();
        let mut signature = sig.to_bytes().to_vec();
        signature.push(27 + recovery.to_byte());
        assert_eq!(
            format!("0x{}", hex::encode(&signature)),
            "0x92be837eb1a8bd819bdfce5ce5a145ce05ec917582a435505032de4ceab3397d7871058c4c26a7db4cc95720843cdef6805217cc27cbcb97d5b116f766ea60b01b"
        );
        let enclave: Address = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
            .parse()
            .unwrap();
        assert_eq!(recover(digest, &signature), Some(enclave));
    }

    #[test]
    fn store_digests_match_ethers_typed_data() {
        let ack = ethers_digest(serde_json::json!({
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}],
                "Acknowledge": [
                    {"name": "secretId", "type": "uint256"},
                    {"name": "signTimestamp", "type": "uint256"}
                ]
            },
            "primaryType": "Acknowledge",
            "domain": {"name": "marlin.oyster.SecretManager", "version": "1"},
            "message": {"secretId": 7, "signTimestamp": 1_700_000_000u64}
        }));
        assert_eq!(acknowledge_digest(U256::from(7), 1_700_000_000), ack);
        let alive = ethers_digest(serde_json::json!({
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}],
                "Alive": [{"name": "signTimestamp", "type": "uint256"}]
            },
            "primaryType": "Alive",
            "domain": {"name": "marlin.oyster.SecretManager", "version": "1"},
            "message": {"signTimestamp": 1_700_000_000u64}
        }));
        assert_eq!(alive_digest(1_700_000_000), alive);
        assert_ne!(alive_digest(1), alive_digest(2));
    }

    #[test]
    fn recover_rejects_garbage() {
        assert_eq!(recover([0; 32], &[0u8; 10]), None);
    }
}
