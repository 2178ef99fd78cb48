//! The fee data the sender reuses between transactions (`EXECUTOR_FEE_CACHE_MS`): the base fee
//! (legacy chains: the gas price) and the priority fee, read from the node at most once per
//! period. A new head replaces the base fee with its own (no request) on EIP-1559 chains and drops
//! a legacy gas price; a fee-related refusal drops everything (`clear`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ethers::types::U256;

use super::heads::Head;

/// What fees are derived from, as of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FeeData {
    /// The block's base fee; on a chain without one, the node's gas price.
    pub(super) base_fee: U256,
    /// `eth_maxPriorityFeePerGas` (None: a legacy chain).
    pub(super) priority_fee: Option<U256>,
    /// The block the base fee is from.
    pub(super) block: u64,
}

#[derive(Debug)]
pub(super) struct FeeCache {
    ttl: Duration,
    entry: Mutex<Option<(FeeData, Instant)>>,
}

impl FeeCache {
    /// Keeps fee data for `ttl` (zero: never).
    pub(super) fn new(ttl: Duration) -> Self {
        FeeCache {
            ttl,
            entry: Mutex::new(None),
        }
    }

    /// The cached fee data, if younger than the period; brought to `head` when that is newer.
    pub(super) fn get(&self, head: Option<Head>) -> Option<FeeData> {
        let mut entry = self.entry.lock().unwrap_or_else(|p| p.into_inner());
        let (data, at) = entry.as_mut()?;
        if at.elapsed() >= self.ttl {
            *entry = None;
            return None;
        }
        if let Some(head) = head.filter(|h| h.number > data.block) {
            match (data.priority_fee, head.base_fee) {
                (Some(_), Some(base_fee)) => {
                    data.base_fee = base_fee;
                    data.block = head.number;
                }
                // A legacy gas price, or a head without a base fee: read again.
                _ => {
                    *entry = None;
                    return None;
                }
            }
        }
        Some(*data)
    }

    pub(super) fn put(&self, data: FeeData) {
        if self.ttl.is_zero() {
            return;
        }
        *self.entry.lock().unwrap_or_else(|p| p.into_inner()) = Some((data, Instant::now()));
    }

    /// Forgets the fee data (the node refused a fee, or the caller wants the market's now).
    pub(super) fn clear(&self) {
        *self.entry.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(base: u64, priority: Option<u64>, block: u64) -> FeeData {
        FeeData {
            base_fee: U256::from(base),
            priority_fee: priority.map(U256::from),
            block,
        }
    }

    fn head(number: u64, base: Option<u64>) -> Option<Head> {
        Some(Head {
            number,
            hash: None,
            base_fee: base.map(U256::from),
        })
    }

    #[test]
    fn a_new_head_brings_its_base_fee_and_a_refusal_or_the_period_drops_the_data() {
        let cache = FeeCache::new(Duration::from_secs(60));
        assert_eq!(cache.get(None), None);
        cache.put(data(100, Some(2), 10));
        assert_eq!(cache.get(None), Some(data(100, Some(2), 10)));
        // The same or an older head changes nothing; a newer one brings its base fee.
        assert_eq!(cache.get(head(9, Some(1))), Some(data(100, Some(2), 10)));
        assert_eq!(cache.get(head(11, Some(130))), Some(data(130, Some(2), 11)));
        // A head without a base fee: read again.
        assert_eq!(cache.get(head(12, None)), None);
        assert_eq!(cache.get(None), None);
        // A legacy gas price is dropped by any new head.
        cache.put(data(50, None, 20));
        assert_eq!(cache.get(head(20, None)), Some(data(50, None, 20)));
        assert_eq!(cache.get(head(21, None)), None);
        cache.put(data(50, None, 20));
        cache.clear();
        assert_eq!(cache.get(None), None);
        // A zero period keeps nothing; an expired entry is gone.
        let never = FeeCache::new(Duration::ZERO);
        never.put(data(1, Some(1), 1));
        assert_eq!(never.get(None), None);
        let short = FeeCache::new(Duration::from_millis(1));
        short.put(data(1, Some(1), 1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get(None), None);
    }
}
