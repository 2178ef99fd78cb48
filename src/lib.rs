//! serverless-executor: runs JavaScript jobs requested on chain (Oyster Serverless protocol) in
//! workerd and answers them with outputs signed by the enclave key.

pub mod bootstrap;
pub mod client;
pub mod config;
pub mod domain;
pub mod effects;
pub mod logging;
pub mod routes;
