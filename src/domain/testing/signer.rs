//! The `EnclaveSigner` port: a stub backed by a real key, and the contract.

use ethers::types::Address;

use crate::domain::dal::{EnclaveSigner, MockEnclaveSigner};
use crate::domain::eip712::recover;

/// A `MockEnclaveSigner` backed by a real secp256k1 key, so its signatures recover.
pub fn key_signer(secret: [u8; 32]) -> MockEnclaveSigner {
    let key = k256::ecdsa::SigningKey::from_slice(&secret).expect("test key is valid");
    let point = key.verifying_key().to_encoded_point(false);
    let mut public_key = [0u8; 64];
    public_key.copy_from_slice(&point.as_bytes()[1..]);
    let address = Address::from_slice(&ethers::utils::keccak256(public_key)[12..]);
    let mut signer = MockEnclaveSigner::new();
    signer.expect_address().return_const(address);
    signer.expect_public_key().return_const(public_key);
    signer.expect_sign_digest().returning(move |digest| {
        let (sig, rid) = key
            .sign_prehash_recoverable(&digest)
            .map_err(|e| crate::domain::dal::SignerError(e.to_string()))?;
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + rid.to_byte();
        Ok(out)
    });
    signer
}

/// What every `EnclaveSigner` must do.
pub fn signer_contract(signer: &dyn EnclaveSigner) {
    let public_key = signer.public_key();
    let derived = Address::from_slice(&ethers::utils::keccak256(public_key)[12..]);
    assert_eq!(
        signer.address(),
        derived,
        "the address derives from the public key"
    );
    for digest in [[0u8; 32], [0xab; 32], ethers::utils::keccak256(b"job")] {
        let sig = signer.sign_digest(digest).unwrap();
        assert!(sig[64] == 27 || sig[64] == 28, "v is 27 or 28");
        assert_eq!(
            recover(digest, &sig),
            Some(signer.address()),
            "signature recovers"
        );
    }
}

/// An output signed by `signer` as the executor signs it.
pub fn signed_output(
    signer: &dyn EnclaveSigner,
    job_id: ethers::types::U256,
    output: &[u8],
    total_time_ms: u64,
    error_code: crate::domain::model::ErrorCode,
    sign_timestamp: u64,
) -> crate::domain::model::SignedOutput {
    let digest = crate::domain::eip712::output_digest(
        job_id,
        output,
        total_time_ms,
        error_code.as_u8(),
        sign_timestamp,
    );
    crate::domain::model::SignedOutput {
        job_id,
        output: output.to_vec(),
        total_time_ms,
        error_code,
        sign_timestamp,
        signature: signer
            .sign_digest(digest)
            .expect("the signer signs")
            .to_vec(),
    }
}
