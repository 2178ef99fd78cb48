//! A TCP proxy for fault tests: it forwards to a target, and on demand drops every connection
//! and stops listening (a cut), or answers every new connection with an HTTP 503 (a failing RPC).
//! It counts the JSON-RPC methods clients send over plain HTTP (`calls`), for tests of how much
//! the executor asks the node.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    listen: SocketAddr,
    target: SocketAddr,
    failing: Arc<AtomicBool>,
    /// JSON-RPC method → requests seen.
    calls: Arc<Mutex<HashMap<String, usize>>>,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut proxy = Proxy {
            listen: listener.local_addr().expect("local addr"),
            target,
            failing: Arc::default(),
            calls: Arc::default(),
            accept: None,
            connections: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, connections, failing, calls) = (
            self.target,
            self.connections.clone(),
            self.failing.clone(),
            self.calls.clone(),
        );
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let failing = failing.clone();
                let calls = calls.clone();
                let handle = tokio::spawn(async move {
                    if failing.load(Ordering::SeqCst) {
                        // Read what the client sent (one request) before answering, so it sees
                        // a response rather than a reset.
                        let mut buf = [0u8; 4096];
                        let _ = tokio::time::timeout(
                            Duration::from_millis(200),
                            inbound.read(&mut buf),
                        )
                        .await;
                        let _ = inbound.write_all(UNAVAILABLE).await;
                        let _ = inbound.shutdown().await;
                        return;
                    }
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        forward(inbound, outbound, calls).await;
                    }
                });
                connections.lock().unwrap().push(handle);
            }
        }));
    }

    fn drop_connections(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Closes every connection and the listening socket.
    pub fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.drop_connections();
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) {
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(self.listen).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot listen on {} again", self.listen);
    }

    /// From now on every connection gets a 503 (open ones are dropped), until `heal`.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    /// How many requests for JSON-RPC `method` went through (over HTTP).
    pub fn calls(&self, method: &str) -> usize {
        self.calls.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    /// Every method seen, with its count (for failure messages).
    pub fn all_calls(&self) -> Vec<(String, usize)> {
        let mut all: Vec<_> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(m, n)| (m.clone(), *n))
            .collect();
        all.sort();
        all
    }

    pub fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.listen)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// Copies both ways until both ends are done, counting the methods the client sends.
async fn forward(
    inbound: TcpStream,
    outbound: TcpStream,
    calls: Arc<Mutex<HashMap<String, usize>>>,
) {
    let (mut from_client, mut to_client) = inbound.into_split();
    let (mut from_target, mut to_target) = outbound.into_split();
    let up = async move {
        let mut scan = MethodScan::default();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            scan.feed(&buf[..n], &calls);
            if to_target.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_target.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut from_target, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Finds `"method":"<name>"` in a client's byte stream (JSON-RPC over HTTP; a WebSocket's
/// masked frames are not read), across read boundaries.
#[derive(Default)]
struct MethodScan {
    pending: Vec<u8>,
}

const METHOD_KEY: &[u8] = b"\"method\":\"";

impl MethodScan {
    fn feed(&mut self, data: &[u8], calls: &Mutex<HashMap<String, usize>>) {
        self.pending.extend_from_slice(data);
        let mut from = 0;
        while let Some(at) = find(&self.pending[from..], METHOD_KEY) {
            let start = from + at + METHOD_KEY.len();
            let Some(len) = self.pending[start..].iter().position(|&b| b == b'"') else {
                // The name goes on in the next read.
                from += at;
                self.pending.drain(..from);
                return;
            };
            let name = String::from_utf8_lossy(&self.pending[start..start + len]).into_owned();
            *calls.lock().unwrap().entry(name).or_default() += 1;
            from = start + len + 1;
        }
        // Keep what could be the start of a key cut by the read.
        let keep_from = self
            .pending
            .len()
            .saturating_sub(METHOD_KEY.len() - 1)
            .max(from);
        self.pending.drain(..keep_from);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
