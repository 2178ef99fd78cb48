//! Whether looking for a receipt before its block's head is announced pays on this node. Some
//! nodes (anvil among them) have the receipt well before their `newHeads` notification; on a
//! busy or slower chain such looks only miss, and each is a request the node must answer.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// What a hit adds to the score and a miss takes away: looks stay on while at least one in
/// five finds its receipt.
const HIT: i32 = 4;
const MISS: i32 = 1;
/// The score's bounds: a long run of hits or misses is forgotten within a few waits.
const MOST: i32 = 16;
const LEAST: i32 = -4;
/// While off, one wait in this many still looks early, to notice when they would pay again.
const PROBE_EVERY: u32 = 32;

/// A running score of early looks: hits raise it, misses lower it; they are made while it is
/// not negative. Starts on, so the first jobs after a start are not slowed.
pub struct EarlyLooks {
    score: AtomicI32,
    waits: AtomicU32,
}

impl Default for EarlyLooks {
    fn default() -> Self {
        Self {
            score: AtomicI32::new(MOST),
            waits: AtomicU32::new(0),
        }
    }
}

impl EarlyLooks {
    /// Whether the receipt wait beginning now looks early.
    pub fn this_wait(&self) -> bool {
        let probe = self.waits.fetch_add(1, Ordering::Relaxed) % PROBE_EVERY == PROBE_EVERY - 1;
        self.score.load(Ordering::Relaxed) >= 0 || probe
    }

    /// Records one early look: whether it found the receipt.
    pub fn looked(&self, found: bool) {
        let step = if found { HIT } else { -MISS };
        let _ = self
            .score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s + step).clamp(LEAST, MOST))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits_looking(early: &EarlyLooks, waits: u32) -> u32 {
        (0..waits).filter(|_| early.this_wait()).count() as u32
    }

    #[test]
    fn looks_stop_after_misses_and_return_when_probes_find_receipts() {
        let early = EarlyLooks::default();
        assert!(early.this_wait(), "on at start");
        // Three misses per wait, as on a node whose heads come first: off within a few waits.
        let mut on = 0;
        while early.this_wait() {
            on += 1;
            assert!(on < 10, "still looking after {on} waits of misses");
            (0..3).for_each(|_| early.looked(false));
        }
        // Off: only the probes look.
        assert_eq!(waits_looking(&early, 3 * PROBE_EVERY), 3);
        // Probes that find the receipt turn them on again.
        early.looked(true);
        assert!(early.this_wait());
    }

    #[test]
    fn looks_stay_on_while_one_in_three_finds_its_receipt() {
        let early = EarlyLooks::default();
        for _ in 0..200 {
            assert!(early.this_wait());
            early.looked(false);
            early.looked(false);
            early.looked(true);
        }
    }
}
