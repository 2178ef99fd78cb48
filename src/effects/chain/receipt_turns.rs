//! Whose turn it is to look for a receipt. An account's transactions are mined in nonce order,
//! so of the transactions one account waits for at once, only the one with the lowest nonce can
//! be mined next: it looks on every head and early poll; the others look only at the safety
//! interval until those before them are settled, then at once.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ethers::types::{Address, U256};
use tokio::sync::watch;
use tokio::time::Instant;

/// The (account, nonce) pairs whose receipts are being waited for.
pub struct ReceiptTurns {
    waiting: Mutex<BTreeMap<(Address, U256), usize>>,
    /// Bumped whenever a wait ends: those behind it look again.
    ended: watch::Sender<u64>,
}

impl Default for ReceiptTurns {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(BTreeMap::new()),
            ended: watch::channel(0).0,
        }
    }
}

/// One transaction's place in line, from its send until its outcome is known (dropped: out).
pub struct Turn<'a> {
    turns: &'a ReceiptTurns,
    key: (Address, U256),
    ended: watch::Receiver<u64>,
    /// When its receipt was last looked for (at first: when it entered, just after its send),
    /// across the sender's successive waits: one behind looks once a safety interval.
    pub looked_at: Instant,
}

impl ReceiptTurns {
    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Address, U256), usize>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enter(&self, from: Address, nonce: U256) -> Turn<'_> {
        *self.waiting().entry((from, nonce)).or_default() += 1;
        Turn {
            turns: self,
            key: (from, nonce),
            ended: self.ended.subscribe(),
            looked_at: Instant::now(),
        }
    }
}

impl Turn<'_> {
    /// Whether a transaction of the same account with a lower nonce is still waited for: this
    /// one cannot be mined before it. Marks the line as seen (see `line_moved`).
    pub fn behind(&mut self) -> bool {
        self.ended.borrow_and_update();
        let (from, nonce) = self.key;
        self.turns
            .waiting()
            .range((from, U256::zero())..(from, nonce))
            .next()
            .is_some()
    }

    /// Whether no other transaction of the same account is waited for.
    pub fn alone(&self) -> bool {
        let (from, _) = self.key;
        let waiting = self.turns.waiting();
        let mut of_account = waiting.range((from, U256::zero())..=(from, U256::MAX));
        matches!((of_account.next(), of_account.next()), (Some((_, 1)), None))
    }

    /// Resolves when a wait has ended since `behind` was last asked.
    pub async fn line_moved(&mut self) {
        if self.ended.changed().await.is_err() {
            // Cannot happen while `turns` lives (it owns the sender); never spin on it.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut waiting = self.turns.waiting();
        if let Some(count) = waiting.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.key);
            }
        }
        drop(waiting);
        self.turns.ended.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn only_the_lowest_nonce_of_an_account_is_in_front_and_the_next_hears_when_it_leaves() {
        let turns = ReceiptTurns::default();
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let mut first = turns.enter(a, 5.into());
        let mut second = turns.enter(a, 6.into());
        let mut other_account = turns.enter(b, 9.into());
        assert!(!first.behind());
        assert!(second.behind());
        assert!(!other_account.behind(), "another account's line is its own");
        assert!(!first.alone() && !second.alone());
        assert!(other_account.alone());

        let moved = tokio::time::timeout(Duration::from_millis(50), second.line_moved()).await;
        assert!(moved.is_err(), "nothing ended yet");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second.line_moved())
            .await
            .expect("told when the one before it ends");
        assert!(!second.behind(), "now in front");

        // A second wait for the same nonce (never expected) keeps the place until both end.
        let twin_a = turns.enter(a, 7.into());
        let twin_b = turns.enter(a, 7.into());
        let mut last = turns.enter(a, 8.into());
        drop(second);
        drop(twin_a);
        assert!(last.behind());
        drop(twin_b);
        assert!(!last.behind());
        assert!(last.alone());
    }
}
