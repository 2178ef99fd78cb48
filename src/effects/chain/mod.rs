//! The chain adapter (ethers): the log follower (subscribe + backfill), the transaction sender
//! (nonce, gas, resend), and the protocol bindings both use.

pub mod bindings;
mod early_looks;
mod fee_cache;
pub mod follower;
pub mod heads;
mod nonce;
pub mod origin;
mod receipt_turns;
pub mod revert;
pub mod sender;
pub mod tee;

pub use follower::{FollowerItem, LogFollower};
pub use origin::OriginChecker;
pub use sender::TxSender;
