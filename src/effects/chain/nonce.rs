//! The gas account's next nonce as the sender keeps it: counted locally from the last send, and
//! asked of the node (its pending count) only when in doubt — at start, after a key change, a
//! refusal, a nonce gap or a send whose fate is unknown.

use ethers::types::U256;

/// What the sender knows about the gas account's nonce. Only touched under the send lock.
#[derive(Debug, Default)]
pub(super) struct NonceState {
    pub(super) key_generation: u64,
    /// The nonce after our last sent transaction; None = ask the chain.
    pub(super) next: Option<U256>,
    /// Set when the node may know of a transaction of this key that we do not (a refusal saying
    /// another holds the nonce): the next send asks the chain and takes the higher of both.
    pub(super) ask_chain: bool,
}

impl NonceState {
    pub(super) fn new(key_generation: u64) -> Self {
        NonceState {
            key_generation,
            ..NonceState::default()
        }
    }

    /// The next nonce when it can be trusted without asking the chain.
    pub(super) fn local(&self) -> Option<U256> {
        self.next.filter(|_| !self.ask_chain)
    }

    /// The next nonce, given the node's pending count: the higher of both.
    pub(super) fn with_chain(&self, pending: U256) -> U256 {
        self.next.map_or(pending, |local| local.max(pending))
    }

    /// A transaction with `nonce` was accepted by the node.
    pub(super) fn sent(&mut self, nonce: U256) {
        self.next = Some(nonce + 1);
        self.ask_chain = false;
    }

    /// A self-transfer took `nonce` back: later sends go past it (asking the chain as well when
    /// nothing was known before).
    pub(super) fn taken_back(&mut self, nonce: U256) {
        if self.next.is_none() {
            self.ask_chain = true;
        }
        self.next = Some(self.next.unwrap_or_default().max(nonce + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_asked_only_when_in_doubt() {
        let mut state = NonceState::new(1);
        assert_eq!(state.local(), None, "a fresh start asks the chain");
        assert_eq!(state.with_chain(U256::from(7)), U256::from(7));
        state.sent(U256::from(7));
        assert_eq!(state.local(), Some(U256::from(8)));
        // A refusal saying another transaction holds the nonce: ask, never go below ours.
        state.ask_chain = true;
        assert_eq!(state.local(), None);
        assert_eq!(state.with_chain(U256::from(5)), U256::from(8));
        assert_eq!(state.with_chain(U256::from(9)), U256::from(9));
        state.sent(U256::from(9));
        assert_eq!(state.local(), Some(U256::from(10)));
        // A take-back with nothing known: past its nonce, and the chain asked too.
        let mut fresh = NonceState::new(2);
        fresh.taken_back(U256::from(3));
        assert_eq!(fresh.local(), None);
        assert_eq!(fresh.with_chain(U256::from(2)), U256::from(4));
        state.taken_back(U256::from(3));
        assert_eq!(state.local(), Some(U256::from(10)));
    }
}
