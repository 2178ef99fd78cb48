//! Owner-signed operator requests: the canonical EIP-191 message of a mutable-config change and
//! recovery of its signer. Pure; `api/configure.rs` decides what to accept.

use ethers::types::{Address, Signature};

/// The first line of every signed mutable-config message (says what is being authorised).
pub const MUTABLE_CONFIG_PREFIX: &str = "oyster-serverless-executor mutable-config";

/// The owner's authorisation of one change: when it was signed and the 65-byte signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSignature {
    /// Unix seconds.
    pub timestamp: u64,
    /// `r ‖ s ‖ v` over `mutable_config_message`, EIP-191 (`personal_sign`).
    pub signature: [u8; 65],
}

fn hex_address(address: Address) -> String {
    format!("0x{}", hex::encode(address.as_bytes()))
}

/// The exact text the owner signs (EIP-191 personal message) to set the gas key: addresses in
/// lowercase hex, lines joined by `\n`, no trailing newline.
pub fn mutable_config_message(enclave: Address, gas: Address, timestamp: u64) -> String {
    format!(
        "{MUTABLE_CONFIG_PREFIX}\nenclave: {}\ngas: {}\ntimestamp: {timestamp}",
        hex_address(enclave),
        hex_address(gas)
    )
}

/// Who signed `message` (EIP-191), or None if the signature is not a valid one.
pub fn recover_personal(message: &str, signature: &[u8; 65]) -> Option<Address> {
    let signature = Signature::try_from(&signature[..]).ok()?;
    signature.recover(message).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethers::signers::{LocalWallet, Signer};

    #[tokio::test]
    async fn a_personal_signature_recovers_to_its_signer() {
        let wallet: LocalWallet =
            "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
                .parse()
                .unwrap();
        let message = mutable_config_message(Address::repeat_byte(0xAB), Address::zero(), 7);
        assert_eq!(
            message,
            format!(
                "{MUTABLE_CONFIG_PREFIX}\nenclave: 0x{}\ngas: 0x{}\ntimestamp: 7",
                "ab".repeat(20),
                "00".repeat(20)
            )
        );
        let sig: [u8; 65] = wallet
            .sign_message(&message)
            .await
            .unwrap()
            .to_vec()
            .try_into()
            .unwrap();
        assert_eq!(recover_personal(&message, &sig), Some(wallet.address()));
        assert_ne!(
            recover_personal(&format!("{message}0"), &sig),
            Some(wallet.address())
        );
    }
}
