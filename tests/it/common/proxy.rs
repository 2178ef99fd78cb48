//! A TCP proxy for fault tests: it forwards to a target, and on demand drops every connection
//! and stops listening (a cut), or answers every new connection with an HTTP 503 (a failing RPC).
#![allow(dead_code)]

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
            accept: None,
            connections: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, connections, failing) =
            (self.target, self.connections.clone(), self.failing.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let failing = failing.clone();
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
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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
