//! The operator API end to end: the real server on an ephemeral port, driven over HTTP; the
//! enclave key file, configuration and persistence across a restart; the real adapters of the
//! store, signer and clock against their port contracts.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ethers::types::Address;
use serde_json::{json, Value};
use serverless_executor::bootstrap::{self, Running};
use serverless_executor::config::Config;
use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::domain::eip712::{recover, registration_digest};
use serverless_executor::domain::testing::{clock_contract, signer_contract, store_contract};
use serverless_executor::effects::clock::SystemClock;
use serverless_executor::effects::signer::EnclaveKey;
use serverless_executor::effects::store::SledStore;

const OWNER: &str = "0x000000000000000000000000000000000000dEaD";
// A valid secp256k1 secret (anvil's second dev account).
const GAS_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const GAS_ADDRESS: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";

fn config_for(dir: &Path) -> Config {
    let mut raw = HashMap::new();
    raw.insert("PORT".to_string(), "0".to_string());
    raw.insert(
        "ENCLAVE_KEY_FILE".to_string(),
        dir.join("enclave.key").display().to_string(),
    );
    raw.insert(
        "DATA_DIR".to_string(),
        dir.join("data").display().to_string(),
    );
    raw.insert("JOB_CAPACITY".to_string(), "4".to_string());
    raw.insert(
        "SANDBOX_DIR".to_string(),
        dir.join("sandbox").display().to_string(),
    );
    raw.insert(
        "CGROUP_PARENT".to_string(),
        format!("serverless-executor-test-{}", std::process::id()),
    );
    Config::from_map(&raw).expect("test config is valid")
}

struct Server {
    running: Option<Running>,
    base: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(dir: &Path) -> Self {
        if !dir.join("enclave.key").exists() {
            EnclaveKey::generate(&dir.join("enclave.key")).unwrap();
        }
        let running = bootstrap::start(config_for(dir))
            .await
            .expect("executor starts");
        let base = format!("http://{}", running.api_addr);
        Self {
            running: Some(running),
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown(Duration::from_secs(2)).await.unwrap();
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, "application/json", body.to_string().into_bytes())
            .await
    }
}

fn error_of(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn operator_api_configures_and_signs_a_registration_that_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let key = EnclaveKey::load(&dir.path().join("enclave.key")).unwrap();

    let (status, health) = server.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["slots_total"], 4);

    let (status, details) = server.get("/executor-details").await;
    assert_eq!(status, 200);
    let zero = format!("{:?}", Address::zero());
    assert_eq!(details["enclave_address"], format!("{:?}", key.address()));
    assert_eq!(
        details["enclave_public_key"],
        format!("0x{}", hex::encode(key.public_key()))
    );
    assert_eq!(details["owner_address"], zero);
    assert_eq!(details["gas_address"], zero);

    let (status, body) = server.get("/signed-registration-message").await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("owner"), "{body}");

    let (status, body) = server
        .post("/immutable-config", json!({"owner_address_hex": OWNER}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get("/signed-registration-message").await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("gas key"), "{body}");

    let (status, body) = server
        .post("/mutable-config", json!({"gas_key_hex": GAS_KEY}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, details) = server.get("/executor-details").await;
    assert_eq!(details["gas_address"], GAS_ADDRESS);
    assert_eq!(details["owner_address"], OWNER.to_lowercase());

    let (status, reg) = server.get("/signed-registration-message").await;
    assert_eq!(status, 200, "{reg}");
    assert_eq!(reg["env"], 1);
    assert_eq!(reg["job_capacity"], 4);
    assert_eq!(reg["owner"], OWNER.to_lowercase());
    let signature = reg["signature"].as_str().unwrap();
    assert_eq!(signature.len(), 132);
    let sig = hex::decode(&signature[2..]).unwrap();
    let digest = registration_digest(
        OWNER.parse().unwrap(),
        4,
        1,
        reg["sign_timestamp"].as_u64().unwrap(),
    );
    assert_eq!(recover(digest, &sig), Some(key.address()));
    server.stop().await;
}

#[tokio::test]
async fn every_bad_input_gets_a_4xx_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let json_ct = "application/json";
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/immutable-config",
            json_ct,
            b"{not json".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "/immutable-config",
            "text/plain",
            br#"{"owner_address_hex":"0x00"}"#.to_vec(),
            415,
            "application/json",
        ),
        (
            "/immutable-config",
            json_ct,
            b"{}".to_vec(),
            400,
            "missing field `owner_address_hex`",
        ),
        (
            "/immutable-config",
            json_ct,
            br#"{"owner_address_hex":"0xabc"}"#.to_vec(),
            400,
            "odd number of hex digits",
        ),
        (
            "/immutable-config",
            json_ct,
            br#"{"owner_address_hex":"0xzz"}"#.to_vec(),
            400,
            "not a hex digit",
        ),
        (
            "/immutable-config",
            json_ct,
            br#"{"owner_address_hex":"0xabcd"}"#.to_vec(),
            400,
            "must be 20 bytes, got 2",
        ),
        (
            "/immutable-config",
            json_ct,
            br#"{"owner_address_hex":7}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            "/immutable-config",
            json_ct,
            br#"{"owner_address_hex":"0x0000000000000000000000000000000000000000"}"#.to_vec(),
            400,
            "zero address",
        ),
        (
            "/immutable-config",
            json_ct,
            br#"{"owner_address_hex":"0x00","x":1}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            "/mutable-config",
            json_ct,
            br#"{"gas_key_hex":"0x1234"}"#.to_vec(),
            400,
            "must be 32 bytes, got 2",
        ),
        (
            "/mutable-config",
            json_ct,
            format!(r#"{{"gas_key_hex":"0x{}"}}"#, "00".repeat(32)).into_bytes(),
            400,
            "not a valid secp256k1 secret",
        ),
        (
            "/mutable-config",
            json_ct,
            format!(r#"{{"gas_key_hex":"0x{}"}}"#, "ff".repeat(32)).into_bytes(),
            400,
            "not a valid secp256k1 secret",
        ),
        (
            "/mutable-config",
            json_ct,
            vec![b' '; 64 * 1024],
            413,
            "larger than",
        ),
    ];
    for (path, content_type, body, status, needle) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        let (got, reply) = server.post_raw(path, content_type, body).await;
        assert_eq!(got, status, "{path} {shown}: {reply}");
        assert!(error_of(&reply).contains(needle), "{path} {shown}: {reply}");
    }

    let (status, body) = server
        .post("/immutable-config", json!({"owner_address_hex": OWNER}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .post("/immutable-config", json!({"owner_address_hex": OWNER}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains("only once"), "{body}");

    let (status, body) = server.get("/no-such-route").await;
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("/no-such-route"));
    let (status, body) = server
        .post_raw("/executor-details", json_ct, b"{}".to_vec())
        .await;
    assert_eq!(status, 405);
    assert!(error_of(&body).contains("use GET"), "{body}");
    let (status, _) = server.get("/mutable-config").await;
    assert_eq!(status, 405);

    // The server is still healthy after all of it, and the gas key never appears in a reply.
    let (status, _) = server.get("/").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn the_owner_and_gas_key_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server
        .post("/immutable-config", json!({"owner_address_hex": OWNER}))
        .await;
    server
        .post("/mutable-config", json!({"gas_key_hex": GAS_KEY}))
        .await;
    server.stop().await;

    let server = Server::start(dir.path()).await;
    let (_, details) = server.get("/executor-details").await;
    assert_eq!(details["owner_address"], OWNER.to_lowercase());
    assert_eq!(details["gas_address"], GAS_ADDRESS);
    let (status, _) = server
        .post("/immutable-config", json!({"owner_address_hex": OWNER}))
        .await;
    assert_eq!(status, 409, "the owner is still set after a restart");
    server.stop().await;

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the data directory (holding the gas key) is private"
    );
}

#[tokio::test]
async fn a_bad_key_file_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enclave.key");
    for (content, needle) in [
        (None, "cannot read"),
        (Some(vec![1u8; 31]), "holds 31 bytes"),
        (Some(vec![0u8; 32]), "not a valid secp256k1 secret"),
        (Some(vec![0xffu8; 32]), "not a valid secp256k1 secret"),
    ] {
        let _ = std::fs::remove_file(&path);
        if let Some(bytes) = content {
            std::fs::write(&path, bytes).unwrap();
        }
        let err = match bootstrap::start(config_for(dir.path())).await {
            Ok(_) => panic!("start-up accepted a bad key file"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn keygen_writes_a_private_key_file_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.key");
    let key = EnclaveKey::generate(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    assert_eq!(EnclaveKey::load(&path).unwrap().address(), key.address());
    assert!(
        EnclaveKey::generate(&path).is_err(),
        "an existing key is kept"
    );
    assert_eq!(EnclaveKey::load(&path).unwrap().address(), key.address());
}

#[test]
fn the_keygen_subcommand_prints_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_serverless-executor"))
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let key = EnclaveKey::load(&path).unwrap();
    assert_eq!(printed, format!("{:?}", key.address()));
}

#[test]
fn a_bad_setting_stops_the_binary_naming_the_variable() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_serverless-executor"))
        .env("EXECUTOR_PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("EXECUTOR_PORT"), "{err}");
}

#[test]
fn the_real_store_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    store_contract(&SledStore::open(dir.path()).unwrap());
}

#[test]
fn the_real_signer_keeps_the_signer_contract() {
    let dir = tempfile::tempdir().unwrap();
    signer_contract(&EnclaveKey::generate(&dir.path().join("k")).unwrap());
}

#[tokio::test]
async fn the_system_clock_keeps_the_clock_contract() {
    clock_contract(&SystemClock).await;
}
