//! The `SecretStore` port: an in-memory stub (`memory_secrets`) and the contract every secret
//! store keeps (the stub here, the sled adapter in `tests/it/secrets.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ethers::types::{Address, U256};

use crate::domain::dal::{MockSecretStore, SecretStore};
use crate::domain::model::{SecretAck, SecretRecord, SecretState};

#[derive(Default)]
struct MemorySecrets {
    records: BTreeMap<U256, SecretRecord>,
    plaintexts: BTreeMap<U256, Vec<u8>>,
    last_alive: Option<u64>,
}

/// A `MockSecretStore` that keeps everything in memory, like a store that never fails.
pub fn memory_secrets() -> MockSecretStore {
    let state = Arc::new(Mutex::new(MemorySecrets::default()));
    let mut store = MockSecretStore::new();
    macro_rules! with {
        ($method:ident, |$s:ident $(, $arg:ident)*| $body:expr) => {{
            let state = state.clone();
            store.$method().returning(move |$($arg),*| {
                #[allow(unused_mut)]
                let mut $s = state.lock().unwrap();
                $body
            });
        }};
    }
    with!(expect_secret, |s, id| Ok(s.records.get(&id).cloned()));
    with!(expect_secrets, |s| Ok(s
        .records
        .values()
        .cloned()
        .collect()));
    with!(expect_put_secret, |s, record, plaintext| {
        s.records.insert(record.secret_id, record.clone());
        if let Some(bytes) = plaintext {
            s.plaintexts.insert(record.secret_id, bytes.to_vec());
        }
        Ok(())
    });
    with!(expect_plaintext, |s, id| Ok(s.plaintexts.get(&id).cloned()));
    with!(expect_remove_plaintext, |s, id| {
        s.plaintexts.remove(&id);
        Ok(())
    });
    with!(expect_remove_secret, |s, id| {
        s.records.remove(&id);
        s.plaintexts.remove(&id);
        Ok(())
    });
    with!(expect_last_alive, |s| Ok(s.last_alive));
    with!(expect_set_last_alive, |s, at| {
        s.last_alive = Some(at);
        Ok(())
    });
    store
}

/// A record of a secret assigned to us by `SecretCreated`, awaiting injection.
pub fn awaiting_secret(id: u64, owner: Address, me: Address, assigned_at_ms: u64) -> SecretRecord {
    SecretRecord {
        secret_id: U256::from(id),
        owner,
        size_limit: 1000,
        end_timestamp: assigned_at_ms / 1000 + 3600,
        state: SecretState::Awaiting,
        assigned_at_ms,
        from_creation: true,
        selected: vec![me, Address::repeat_byte(0x5f)],
        acknowledged: Vec::new(),
        ack_failed_sent: false,
        ack: None,
    }
}

/// What every `SecretStore` must do. Run on an empty store.
pub fn secret_store_contract(store: &dyn SecretStore) {
    let me = Address::repeat_byte(0x11);
    assert_eq!(
        store.secrets().unwrap(),
        vec![],
        "a new store holds no secret"
    );
    assert_eq!(store.secret(U256::one()).unwrap(), None);
    assert_eq!(store.plaintext(U256::one()).unwrap(), None);
    assert_eq!(store.last_alive().unwrap(), None);

    let mut first = awaiting_secret(1, Address::repeat_byte(0x0e), me, 1_700_000_000_000);
    store.put_secret(&first, None).unwrap();
    assert_eq!(store.secret(U256::one()).unwrap(), Some(first.clone()));
    assert_eq!(store.plaintext(U256::one()).unwrap(), None, "no bytes yet");

    // A large id sorts after a small one (ids are compared as numbers, not text).
    let big = awaiting_secret(1, me, me, 1).secret_id + U256::from(u64::MAX);
    let mut second = awaiting_secret(2, me, me, 1);
    second.secret_id = big;
    store.put_secret(&second, Some(b"two")).unwrap();
    first.state = SecretState::Stored;
    first.ack = Some(SecretAck {
        secret_id: U256::one(),
        sign_timestamp: 9,
        signature: vec![7; 65],
    });
    store
        .put_secret(&first, Some(b"the secret \x00 bytes"))
        .unwrap();
    assert_eq!(
        store.secrets().unwrap(),
        vec![first.clone(), second.clone()],
        "records in id order"
    );
    assert_eq!(
        store.plaintext(U256::one()).unwrap().as_deref(),
        Some(&b"the secret \x00 bytes"[..])
    );
    assert_eq!(store.plaintext(big).unwrap().as_deref(), Some(&b"two"[..]));

    // A record rewritten without bytes keeps them.
    first.state = SecretState::Acknowledged;
    store.put_secret(&first, None).unwrap();
    assert_eq!(
        store.plaintext(U256::one()).unwrap().as_deref(),
        Some(&b"the secret \x00 bytes"[..])
    );
    assert_eq!(store.secret(U256::one()).unwrap(), Some(first.clone()));

    // An empty secret is a secret.
    let mut empty = awaiting_secret(3, me, me, 1);
    empty.state = SecretState::Stored;
    store.put_secret(&empty, Some(b"")).unwrap();
    assert_eq!(store.plaintext(U256::from(3)).unwrap(), Some(Vec::new()));

    store.remove_plaintext(U256::one()).unwrap();
    assert_eq!(store.plaintext(U256::one()).unwrap(), None);
    assert_eq!(
        store.secret(U256::one()).unwrap(),
        Some(first),
        "the record stays"
    );

    store.remove_secret(big).unwrap();
    assert_eq!(store.secret(big).unwrap(), None);
    assert_eq!(store.plaintext(big).unwrap(), None);
    store.remove_secret(U256::from(99)).unwrap();
    assert_eq!(store.secrets().unwrap().len(), 2);

    store.set_last_alive(1_700_000_000).unwrap();
    store.set_last_alive(1_700_000_375).unwrap();
    assert_eq!(store.last_alive().unwrap(), Some(1_700_000_375));
}
