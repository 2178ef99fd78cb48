//! The `Clock` port: tokio's clock (the domain tests' clock: paused, it jumps ahead whenever
//! every task waits), and the contract every clock keeps (this one, `SystemClock`).

use crate::domain::dal::Clock;

/// A clock on tokio's timer: with `#[tokio::test(start_paused = true)]` time jumps ahead
/// whenever every task waits, so window and backoff logic runs instantly and in order.
pub struct TokioClock {
    base_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base_ms: u64) -> Self {
        Self {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

#[async_trait::async_trait]
impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + self.start.elapsed().as_millis() as u64
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// What every `Clock` must do: time is unix ms and sleeping lets time pass.
pub async fn clock_contract(clock: &dyn Clock) {
    let before = clock.now_ms();
    assert!(before > 1_600_000_000_000, "now is unix milliseconds");
    clock.sleep_ms(20).await;
    assert!(clock.now_ms() >= before + 20, "sleeping lets time pass");
}
