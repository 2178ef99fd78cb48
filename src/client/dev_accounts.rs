//! The one table of anvil's well-known dev accounts: which role each plays on a local devnet
//! (the `devnet` command, the bench and the tests all take their keys from here).
//!
//! | role | account |
//! |---|---|
//! | deployer of the dev contracts, and job author | 0 |
//! | owner of devnet executor `n` (1..=4) | `n` |
//! | gas key of devnet executor `n` | `n + 5` |
//!
//! Account 5 has no role. Every account holds the dev tokens (POND and USDC).

use std::ops::RangeInclusive;

use anyhow::Result;
use ethers::types::Address;

/// The private keys of anvil's ten default accounts (mnemonic
/// "test test test test test test test test test test test junk"), each funded with 10000 ETH.
pub const DEV_KEYS: [&str; 10] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// The devnet executors' numbers: executor `n` is owned by account `n`.
pub const EXECUTORS: RangeInclusive<usize> = 1..=4;

/// A role on a local devnet, and the dev account that plays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevAccount {
    /// Deploys the dev contracts.
    Deployer,
    /// Saves code and creates jobs (the `client` commands' default key).
    JobAuthor,
    /// Owns devnet executor `n` (1..=4) on chain: sets it up and registers it.
    ExecutorOwner(usize),
    /// Pays devnet executor `n`'s gas: its gas key.
    ExecutorGas(usize),
}

impl DevAccount {
    /// The account's index among anvil's ten.
    pub const fn index(self) -> usize {
        match self {
            DevAccount::Deployer | DevAccount::JobAuthor => 0,
            DevAccount::ExecutorOwner(n) => n,
            DevAccount::ExecutorGas(n) => n + 5,
        }
    }

    /// The account's private key (0x hex).
    pub const fn key(self) -> &'static str {
        DEV_KEYS[self.index() % DEV_KEYS.len()]
    }

    /// The account's address.
    pub fn address(self) -> Result<Address> {
        Ok(ethers::signers::Signer::address(&super::wallet(
            self.key(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_own_and_pay_with_their_own_accounts() {
        assert_eq!(DevAccount::Deployer.key(), DEV_KEYS[0]);
        assert_eq!(DevAccount::JobAuthor.index(), 0);
        for n in EXECUTORS {
            assert_eq!(DevAccount::ExecutorOwner(n).index(), n);
            assert!(DevAccount::ExecutorGas(n).index() < DEV_KEYS.len());
            assert!(!EXECUTORS.contains(&DevAccount::ExecutorGas(n).index()));
        }
        assert_eq!(
            format!("{:?}", DevAccount::JobAuthor.address().unwrap()),
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
    }
}
