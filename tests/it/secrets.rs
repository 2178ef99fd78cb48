//! The secret store end to end over HTTP: the real server's secret listener, injections sealed
//! with the real `ecies` crate and signed by a real owner key, each refusal with its status and
//! message; the sled adapter against the `SecretStore` contract and on disk.

use std::path::Path;

use ethers::signers::{LocalWallet, Signer};
use ethers::types::{Address, H256, U256};
use serde_json::{json, Value};
use serverless_executor::bootstrap::Running;
use serverless_executor::client::secrets::{enclave_public_key, inject_secret_body};
use serverless_executor::domain::dal::{EnclaveSigner, SecretStore};
use serverless_executor::domain::eip712::{acknowledge_digest, inject_secret_digest, recover};
use serverless_executor::domain::model::{ChainEvent, ChainLog, LogPosition, SecretEvent};
use serverless_executor::domain::testing::{awaiting_secret, secret_store_contract};
use serverless_executor::effects::secrets::SledSecrets;
use serverless_executor::effects::signer::EnclaveKey;
use serverless_executor::effects::store::SledStore;

// The secret owner and a stranger: anvil's first and third dev accounts.
const OWNER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const STRANGER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const SECRET_MANAGER: &str = "0x00000000000000000000000000000000000000a5";

struct SecretServer {
    running: Running,
    url: String,
    enclave: EnclaveKey,
    http: reqwest::Client,
}

impl SecretServer {
    async fn start(dir: &Path) -> Self {
        let running = crate::common::server::start(
            dir,
            &[
                ("SECRET_LISTEN_ADDR", "127.0.0.1:0"),
                ("PROTOCOL", "tee"),
                (
                    "TEE_MANAGER_ADDRESS",
                    "0x00000000000000000000000000000000000000a4",
                ),
                ("SECRET_MANAGER_ADDRESS", SECRET_MANAGER),
                // No chain here: the timeouts are given, not read.
                ("SECRET_ACK_TIMEOUT", "120"),
                ("SECRET_MARK_ALIVE_TIMEOUT", "500"),
            ],
        )
        .await;
        let url = format!(
            "http://{}",
            running.secret_addr.expect("the secret listener")
        );
        let enclave = EnclaveKey::load(&dir.join("enclave.key")).unwrap();
        Self {
            running,
            url,
            enclave,
            http: reqwest::Client::new(),
        }
    }

    /// The chain says: secret `id` of the owner, at most `size_limit` bytes, selects `selected`.
    fn created(&self, id: u64, size_limit: u64, selected: Vec<Address>) {
        let owner = wallet(OWNER_KEY).address();
        let end = U256::from(u64::from(u32::MAX));
        self.running
            .executor
            .on_chain_event(ChainLog {
                position: LogPosition {
                    block_number: 10 + id,
                    log_index: 0,
                },
                block_hash: H256::repeat_byte(id as u8),
                removed: false,
                event: ChainEvent::Secret(SecretEvent::Created {
                    secret_id: U256::from(id),
                    owner,
                    size_limit: U256::from(size_limit),
                    end_timestamp: end,
                    selected,
                }),
            })
            .unwrap();
    }

    fn public_key(&self) -> [u8; 65] {
        enclave_public_key(&hex::encode(self.enclave.public_key())).unwrap()
    }

    /// An injection body as an owner's own tooling would build it (`ecies`, a raw signature).
    fn body(&self, id: u64, plaintext: &[u8], signer_key: &str) -> Value {
        let sealed = ecies::encrypt(&self.public_key(), plaintext).unwrap();
        let digest = inject_secret_digest(U256::from(id), &sealed);
        let signature = wallet(signer_key).sign_hash(H256(digest)).unwrap();
        json!({
            "secret_id": id,
            "encrypted_secret_hex": hex::encode(&sealed),
            "signature_hex": format!("0x{}", hex::encode(signature.to_vec())),
        })
    }

    async fn post(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string().into_bytes()).await
    }

    async fn post_raw(&self, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/inject-secret", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    fn held(&self, id: u64) -> Option<Vec<u8>> {
        self.running
            .executor
            .ports()
            .secrets
            .plaintext(U256::from(id))
            .unwrap()
    }

    async fn stop(self) {
        self.running
            .shutdown(std::time::Duration::from_secs(1))
            .await
            .unwrap();
    }
}

fn wallet(key: &str) -> LocalWallet {
    key.parse().unwrap()
}

fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_owner_injects_a_secret_and_gets_the_enclaves_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let server = SecretServer::start(dir.path()).await;
    server.created(1, 100, vec![server.enclave.address()]);
    let (status, answer) = server.post(&server.body(1, b"my API key", OWNER_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["secret_id"], json!(1));
    let sign_timestamp = answer["sign_timestamp"].as_u64().unwrap();
    let signature = hex::decode(
        answer["signature"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    assert_eq!(
        recover(acknowledge_digest(U256::one(), sign_timestamp), &signature),
        Some(server.enclave.address()),
        "Acknowledge signed by the enclave key"
    );
    assert_eq!(server.held(1).as_deref(), Some(&b"my API key"[..]));
    // The client command's own body is accepted too.
    server.created(2, 100, vec![server.enclave.address()]);
    let body = inject_secret_body(
        U256::from(2),
        b"second",
        &server.public_key(),
        &wallet(OWNER_KEY),
    )
    .unwrap();
    let ack = serverless_executor::client::secrets::inject_secret(&server.http, &server.url, &body)
        .await
        .unwrap();
    assert_eq!(ack["secret_id"], json!(2));
    assert_eq!(server.held(2).as_deref(), Some(&b"second"[..]));
    server.stop().await;
}

#[tokio::test]
async fn hostile_injections_are_refused_with_clear_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = SecretServer::start(dir.path()).await;
    let me = server.enclave.address();
    server.created(1, 16, vec![me]);
    server.created(2, 16, vec![Address::repeat_byte(0x5f)]);

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "wrong signer",
            server.body(1, b"x", STRANGER_KEY),
            403,
            "not to the secret's owner",
        ),
        (
            "unassigned id",
            server.body(2, b"x", OWNER_KEY),
            404,
            "not assigned to this store",
        ),
        (
            "never created",
            server.body(9, b"x", OWNER_KEY),
            404,
            "not assigned to this store",
        ),
        (
            "oversize",
            server.body(1, &[7u8; 17], OWNER_KEY),
            413,
            "size limit on chain is 16",
        ),
        (
            "bad hex",
            json!({"secret_id": 1, "encrypted_secret_hex": "zz", "signature_hex": "0x00"}),
            400,
            "encrypted_secret_hex",
        ),
        (
            "short signature",
            json!({"secret_id": 1, "encrypted_secret_hex": "00", "signature_hex": "0x00"}),
            400,
            "must be 65 bytes",
        ),
        (
            "not sealed to us",
            {
                let mut body = server.body(1, b"x", OWNER_KEY);
                body["encrypted_secret_hex"] = json!("04".repeat(120));
                let sealed = hex::decode(body["encrypted_secret_hex"].as_str().unwrap()).unwrap();
                let digest = inject_secret_digest(U256::one(), &sealed);
                let signature = wallet(OWNER_KEY).sign_hash(H256(digest)).unwrap();
                body["signature_hex"] = json!(hex::encode(signature.to_vec()));
                body
            },
            422,
            "cannot be decrypted",
        ),
        (
            "id zero",
            json!({"secret_id": 0, "encrypted_secret_hex": "00", "signature_hex": "00"}),
            400,
            "secret ids start at 1",
        ),
        (
            "missing field",
            json!({"secret_id": 1}),
            400,
            "missing field",
        ),
        (
            "unknown field",
            json!({"secret_id": 1, "encrypted_secret_hex": "00", "signature_hex": "00", "x": 1}),
            400,
            "unknown field",
        ),
    ];
    for (what, body, status, message) in cases {
        let (got, answer) = server.post(&body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(error_of(&answer).contains(message), "{what}: {answer}");
        assert_eq!(server.held(1), None, "{what} stored nothing");
    }
    // A body past the limit is cut off, whatever it holds.
    let huge = vec![b'0'; serverless_executor::routes::MAX_INJECT_BODY_BYTES + 1];
    let (status, answer) = server.post_raw(huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        error_of(&answer).contains("larger than 2500000 bytes"),
        "{answer}"
    );
    // Not JSON by its content type, another method, another path.
    let r = server
        .http
        .post(format!("{}/inject-secret", server.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = server
        .http
        .get(format!("{}/inject-secret", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let r = server
        .http
        .get(format!("{}/executor-details", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "only the injection is served here"
    );

    // The good one, then its replay.
    let good = server.body(1, b"sixteen bytes!!!", OWNER_KEY);
    let (status, answer) = server.post(&good).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = server.post(&good).await;
    assert_eq!(status, 409, "{answer}");
    assert!(error_of(&answer).contains("already stored"), "{answer}");
    assert_eq!(server.held(1).as_deref(), Some(&b"sixteen bytes!!!"[..]));
    assert_eq!(server.held(2), None);
    server.stop().await;
}

#[tokio::test]
async fn injected_secrets_survive_a_restart_and_are_sealed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = SecretServer::start(dir.path()).await;
    server.created(1, 64, vec![server.enclave.address()]);
    let marker = b"SECRET-MARKER-4f1c9e0b7a";
    let (status, answer) = server.post(&server.body(1, marker, OWNER_KEY)).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
    let mut on_disk = Vec::new();
    for file in files(&dir.path().join("data")) {
        on_disk.extend(std::fs::read(file).unwrap());
    }
    assert!(
        !on_disk.windows(marker.len()).any(|w| w == marker),
        "the plaintext is nowhere in the data directory"
    );
    let server = SecretServer::start(dir.path()).await;
    assert_eq!(server.held(1).as_deref(), Some(&marker[..]));
    let (status, _) = server.post(&server.body(1, marker, OWNER_KEY)).await;
    assert_eq!(status, 409, "still stored after the restart: a replay");
    server.stop().await;
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The secret store in the journal's sled database, as the executor opens it.
fn open_secrets(dir: &Path, sealing_key: [u8; 32]) -> SledSecrets {
    let store = SledStore::open(dir, [7; 32]).unwrap();
    SledSecrets::open(store.sled_db(), sealing_key).unwrap()
}

#[test]
fn the_sled_secret_store_keeps_the_secret_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    secret_store_contract(&open_secrets(dir.path(), [3; 32]));
}

#[test]
fn a_secret_sealed_under_one_enclave_key_does_not_open_under_another() {
    let dir = tempfile::tempdir().unwrap();
    let me = Address::repeat_byte(1);
    let record = awaiting_secret(1, me, me, 1);
    {
        let store = open_secrets(dir.path(), [3; 32]);
        store.put_secret(&record, Some(b"for key three")).unwrap();
    }
    let other = open_secrets(dir.path(), [4; 32]);
    let refused = other.plaintext(U256::one()).unwrap_err().to_string();
    assert!(
        refused.contains("cannot be opened with this enclave key"),
        "{refused}"
    );
}

/// Random bodies (random values under the route's own keys, and random bytes) never get a 5xx
/// or store anything.
#[test]
fn random_injections_get_a_4xx_with_a_message_and_store_nothing() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, TestRunner};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(async {
        let server = SecretServer::start(dir.path()).await;
        server.created(1, 64, vec![server.enclave.address()]);
        server
    });
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "(0x)?[0-9a-fA-F]{0,300}".prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    let keys = prop::sample::select(vec![
        "secret_id",
        "encrypted_secret_hex",
        "signature_hex",
        "x",
    ]);
    let body = prop_oneof![
        prop::collection::btree_map(keys, value, 0..4)
            .prop_map(|map| { serde_json::to_vec(&map).unwrap() }),
        prop::collection::vec(any::<u8>(), 0..300),
    ];
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&body, |body| {
        let (status, answer) = runtime.block_on(server.post_raw(body));
        prop_assert!((400..500).contains(&status), "{status}: {answer}");
        prop_assert!(answer["error"].is_string(), "{status}: {answer}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(server.held(1), None);
    runtime.block_on(server.stop());
}
