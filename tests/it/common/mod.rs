//! Helpers shared by the integration tests.

pub mod anvil;
pub mod devnet;
pub mod proxy;
pub mod server;

/// A TCP port on loopback that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
