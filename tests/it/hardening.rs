//! The HTTP surface under hostile input: random bytes and random JSON thrown at every route of
//! both listeners (proptest) never panic the server and never get a 5xx; bad input gets a JSON
//! `{"error"}`; oversize heads are refused; the server stays healthy throughout.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every route of both listeners, with paths that look almost right.
const PATHS: &[&str] = &[
    "/",
    "/health",
    "/executor-details",
    "/tee-details",
    "/signed-registration-message",
    "/metrics",
    "/jobs",
    "/jobs/1",
    "/jobs/0xff",
    "/immutable-config",
    "/mutable-config",
    "/log-level",
    "/jobs/",
    "//",
    "/no-such-route",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
];
const KEYS: &[&str] = &[
    "gas_key_hex",
    "owner_address_hex",
    "timestamp",
    "signature",
    "level",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "(0x)?[0-9a-fA-F]{0,140}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(String::from), ".{0,8}"],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct Probe {
    admin: bool,
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
}

fn probe() -> impl Strategy<Value = Probe> {
    let path = prop_oneof![
        4 => prop::sample::select(PATHS).prop_map(String::from),
        1 => "/jobs/[0-9a-zA-Z]{0,80}",
        1 => "/jobs\\?[a-z=&0-9]{0,40}",
        1 => "/[a-zA-Z0-9/_.-]{0,30}",
    ];
    let body = prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..512),
        Just(Vec::new()),
    ];
    (
        any::<bool>(),
        prop::sample::select(METHODS),
        path,
        prop::sample::select(CONTENT_TYPES),
        body,
    )
        .prop_map(|(admin, method, path, content_type, body)| Probe {
            admin,
            method,
            path,
            content_type,
            body,
        })
}

async fn send(http: &reqwest::Client, addr: SocketAddr, p: &Probe) -> Result<(), String> {
    let method = reqwest::Method::from_bytes(p.method.as_bytes()).unwrap();
    let mut request = http
        .request(method, format!("http://{addr}{}", p.path))
        .body(p.body.clone());
    if !p.content_type.is_empty() {
        request = request.header("content-type", p.content_type);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = response.status();
    let is_metrics = p.path == "/metrics" && status.is_success();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_server_error() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    if p.method != "HEAD" && !is_metrics {
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{status}: the answer is not JSON ({e})"))?;
        if status.is_client_error() && !body["error"].is_string() {
            return Err(format!("{status} without an error message: {body}"));
        }
    }
    Ok(())
}

#[test]
fn random_requests_at_every_route_never_get_a_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = runtime.block_on(crate::common::server::start(
        dir.path(),
        &[
            ("JOB_CAPACITY", "2"),
            // The fuzzer sends faster than one client may; the limits have their own tests.
            ("PUBLIC_RATE_PER_CLIENT", "0"),
        ],
    ));
    let (public, admin) = (running.api_addr, running.admin_addr);
    let http = reqwest::Client::new();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&probe(), |p| {
        let addr = if p.admin { admin } else { public };
        let outcome = runtime.block_on(send(&http, addr, &p));
        prop_assert!(outcome.is_ok(), "{p:?}: {}", outcome.unwrap_err());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    runtime.block_on(async {
        let health = http.get(format!("http://{public}/")).send().await.unwrap();
        assert_eq!(health.status(), 200, "the server is healthy afterwards");
        running.shutdown(Duration::from_secs(2)).await.unwrap();
    });
}

/// Sends raw bytes on a new connection; returns what came back (maybe nothing).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    answer
}

#[test]
fn random_bytes_on_the_wire_never_get_a_5xx_or_stop_the_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let running = runtime.block_on(crate::common::server::start(
        dir.path(),
        &[
            ("JOB_CAPACITY", "2"),
            // The fuzzer sends faster than one client may; the limits have their own tests.
            ("PUBLIC_RATE_PER_CLIENT", "0"),
        ],
    ));
    let addrs = [running.api_addr, running.admin_addr];
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 100,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let garbage = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        // Something like a request line, then garbage.
        (
            prop::sample::select(METHODS),
            prop::collection::vec(any::<u8>(), 0..512)
        )
            .prop_map(|(m, tail)| {
                let mut bytes = format!("{m} /mutable-config HTTP/1.1\r\n").into_bytes();
                bytes.extend(tail);
                bytes
            }),
    ];
    let result = runner.run(&(any::<bool>(), garbage), |(admin, bytes)| {
        let addr = addrs[usize::from(admin)];
        let answer = runtime.block_on(raw(addr, &bytes));
        prop_assert!(
            !answer.starts_with(b"HTTP/1.1 5"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    runtime.block_on(async {
        // A head larger than the server's buffer is refused with a 4xx, not served.
        let big = format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let answer = raw(running.api_addr, big.as_bytes()).await;
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
            "{}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
        let health = reqwest::get(format!("http://{}/", running.api_addr))
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "the server is healthy afterwards");
        running.shutdown(Duration::from_secs(2)).await.unwrap();
    });
}
