//! Configuration (owner, gas key) and registration.

use super::*;

#[test]
fn the_owner_is_set_once_and_never_to_zero() {
    let h = harness();
    let zero = h.executor.configure_immutable(Address::zero()).unwrap_err();
    assert!(matches!(zero, DomainError::InvalidOwner(_)));
    h.executor
        .configure_immutable(Address::repeat_byte(1))
        .unwrap();
    let again = h
        .executor
        .configure_immutable(Address::repeat_byte(2))
        .unwrap_err();
    assert!(matches!(again, DomainError::OwnerAlreadySet(a) if a == Address::repeat_byte(1)));
    assert_eq!(
        h.executor.details().unwrap().owner_address,
        Address::repeat_byte(1)
    );
}

#[test]
fn the_gas_key_is_validated_and_replaceable() {
    let h = harness();
    assert!(matches!(
        h.executor.configure_mutable([0; 32], None),
        Err(DomainError::InvalidGasKey(_))
    ));
    assert!(matches!(
        h.executor.configure_mutable([0xff; 32], None),
        Err(DomainError::InvalidGasKey(_))
    ));
    assert_eq!(
        h.store.gas_key().unwrap(),
        None,
        "a refused key is not stored"
    );
    // Before an owner exists there is no one to sign: unsigned changes pass.
    h.executor.configure_mutable([1; 32], None).unwrap();
    h.executor.configure_mutable([2; 32], None).unwrap();
    assert_eq!(h.store.gas_key().unwrap(), Some([2; 32]));
}

/// The owner's EIP-191 signature of a gas key change, as the client builds it.
fn owner_signs(owner: &dyn EnclaveSigner, gas: [u8; 32], timestamp: u64) -> OwnerSignature {
    let gas_key = k256::ecdsa::SigningKey::from_slice(&gas).unwrap();
    let gas = ethers::utils::secret_key_to_address(&gas_key);
    let message = mutable_config_message(enclave(), gas, timestamp);
    let signature = owner
        .sign_digest(ethers::utils::hash_message(message).0)
        .unwrap();
    OwnerSignature {
        timestamp,
        signature,
    }
}

#[tokio::test(start_paused = true)]
async fn once_the_owner_is_set_the_gas_key_needs_its_fresh_unreplayed_signature() {
    let h = harness();
    // The owner and a stranger sign through the signer port's stub, as any key would.
    let owner = key_signer([7; 32]);
    let stranger = key_signer([8; 32]);
    h.executor.configure_immutable(owner.address()).unwrap();
    let now = T0_MS / 1000;
    let rejection =
        |auth: Option<&OwnerSignature>| match h.executor.configure_mutable([1; 32], auth) {
            Err(DomainError::Unauthorized(r)) => r,
            other => panic!("expected a rejection, got {other:?}"),
        };
    assert_eq!(rejection(None), AuthRejection::Missing);
    assert!(matches!(
        rejection(Some(&owner_signs(&stranger, [1; 32], now))),
        AuthRejection::WrongSigner { owner: o, .. } if o == owner.address()
    ));
    // Signed for another gas key: recovers to someone else.
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [2; 32], now))),
        AuthRejection::WrongSigner { .. }
    ));
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [1; 32], now - 301))),
        AuthRejection::Stale {
            age_secs: 301,
            max_age_secs: 300
        }
    ));
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [1; 32], now + 3600))),
        AuthRejection::FromTheFuture { .. }
    ));
    assert_eq!(
        h.store.gas_key().unwrap(),
        None,
        "nothing refused was stored"
    );

    let good = owner_signs(&owner, [1; 32], now - 10);
    h.executor.configure_mutable([1; 32], Some(&good)).unwrap();
    assert_eq!(
        rejection(Some(&good)),
        AuthRejection::Replayed {
            timestamp: now - 10,
            last: now - 10
        }
    );
    assert!(matches!(
        rejection(Some(&owner_signs(&owner, [1; 32], now - 20))),
        AuthRejection::Replayed { .. }
    ));
    h.executor
        .configure_mutable([1; 32], Some(&owner_signs(&owner, [1; 32], now)))
        .unwrap();
}

#[test]
fn unsigned_changes_pass_only_when_explicitly_allowed() {
    let mut h = harness();
    let owner = Address::repeat_byte(3);
    h.executor.configure_immutable(owner).unwrap();
    assert!(h.executor.configure_mutable([1; 32], None).is_err());
    let ports = h.executor.ports().clone();
    let settings = Settings {
        admin_allow_unsigned: true,
        ..h.executor.settings().clone()
    };
    h.executor = Executor::new(ports, settings);
    h.executor.configure_mutable([1; 32], None).unwrap();
}

#[tokio::test(start_paused = true)]
async fn registration_needs_both_configs_and_recovers_to_the_enclave() {
    let h = harness();
    let follow = h.executor.follow_requested();
    assert!(matches!(
        h.executor.register_enclave(),
        Err(DomainError::NotConfigured(_))
    ));
    h.executor.configure_mutable([1; 32], None).unwrap();
    assert!(matches!(
        h.executor.register_enclave(),
        Err(DomainError::NotConfigured(_))
    ));
    let owner = Address::repeat_byte(0x0e);
    h.executor.configure_immutable(owner).unwrap();
    let reg = h.executor.register_enclave().unwrap();
    assert_eq!((reg.owner, reg.job_capacity, reg.env), (owner, 2, 1));
    assert_eq!(reg.sign_timestamp, T0_MS / 1000);
    let digest = registration_digest(owner, 2, 1, reg.sign_timestamp);
    assert_eq!(recover(digest, &reg.signature), Some(enclave()));
    assert!(
        *follow.borrow(),
        "asking for the message starts the chain listener"
    );
}

#[test]
fn the_tee_generation_signs_its_register_with_the_storage_capacity() {
    use crate::domain::eip712::tee_registration_digest;
    let h = harness_adjusted(|s| {
        s.protocol = Protocol::Tee;
        s.storage_capacity = 5_000_000;
    });
    let owner = Address::repeat_byte(0x0e);
    h.executor.configure_mutable([1; 32], None).unwrap();
    h.executor.configure_immutable(owner).unwrap();
    let reg = h.executor.register_enclave().unwrap();
    assert_eq!(reg.storage_capacity, Some(5_000_000));
    let digest = tee_registration_digest(owner, 2, 5_000_000, 1, reg.sign_timestamp);
    assert_eq!(recover(digest, &reg.signature), Some(enclave()));
    let v2 = registration_digest(owner, 2, 1, reg.sign_timestamp);
    assert_ne!(recover(v2, &reg.signature), Some(enclave()));
    // v2 signs no storage capacity.
    let h = harness();
    h.executor.configure_mutable([1; 32], None).unwrap();
    h.executor.configure_immutable(owner).unwrap();
    assert_eq!(
        h.executor.register_enclave().unwrap().storage_capacity,
        None
    );
}
