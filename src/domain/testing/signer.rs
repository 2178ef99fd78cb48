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
    signer.expect_decrypt().returning(move |sealed| {
        ecies::decrypt(&secret, sealed)
            .map_err(|e| crate::domain::dal::SignerError(format!("cannot decrypt: {e}")))
    });
    signer
}

/// `plaintext` ECIES-encrypted to `public_key` (64 bytes, no `04` prefix) as Marlin's user
/// tooling does it (the `ecies` crate 0.2).
pub fn encrypt_to(public_key: &[u8; 64], plaintext: &[u8]) -> Vec<u8> {
    let mut uncompressed = [0u8; 65];
    uncompressed[0] = 4;
    uncompressed[1..].copy_from_slice(public_key);
    ecies::encrypt(&uncompressed, plaintext).expect("a valid public key")
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
    for plaintext in [&b""[..], b"s3cret", &[0u8; 4096][..]] {
        let sealed = encrypt_to(&public_key, plaintext);
        assert_eq!(
            signer.decrypt(&sealed).unwrap(),
            plaintext,
            "opens what was sealed to its key"
        );
    }
    let mut tampered = encrypt_to(&public_key, b"s3cret");
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(
        signer.decrypt(&tampered).is_err(),
        "a changed ciphertext fails"
    );
    let other = k256::ecdsa::SigningKey::from_slice(&[0x77; 32]).unwrap();
    let mut other_public = [0u8; 64];
    other_public.copy_from_slice(&other.verifying_key().to_encoded_point(false).as_bytes()[1..]);
    assert!(
        signer
            .decrypt(&encrypt_to(&other_public, b"s3cret"))
            .is_err(),
        "what was sealed to another key fails"
    );
    assert!(signer.decrypt(b"short").is_err(), "garbage fails");
    assert!(signer.decrypt(&[]).is_err(), "nothing fails");
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
