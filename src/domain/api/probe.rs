//! The readiness probe: asks the chain node and the sandbox what the domain cannot see itself
//! (the head, the gas account, the workerd binary), records it for readiness and the status
//! page, and reports it to the metrics. The listener in `listeners/timers.rs` runs it.

use crate::domain::dal::ChainSample;
use crate::domain::model::Probe;
use crate::domain::Executor;

impl Executor {
    /// Probes once: records what was found (readiness, status page) and feeds the metrics.
    pub async fn probe(&self) -> Probe {
        let chain = &self.ports.probe;
        let head = chain.head_block().await;
        let cursor = self.ports.store.cursor().ok().flatten();
        // The cursor is the first block not yet handled: head + 1 - cursor blocks are behind.
        let lag = head
            .zip(cursor)
            .map(|(head, cursor)| (head + 1).saturating_sub(cursor));
        let (balance, gas_price, nonces) = match head {
            Some(_) => (
                chain.gas_balance().await,
                chain.gas_price().await,
                chain.gas_nonces().await,
            ),
            None => (None, None, None),
        };
        self.ports.metrics.set_chain(ChainSample {
            chain_up: head.is_some(),
            head_lag_blocks: lag,
            pending_transactions: chain.pending_transactions(),
            gas_balance_wei: balance,
            output_cost_wei: gas_price.map(|price| price.saturating_mul(chain.output_gas().into())),
            gas_nonce: nonces.map(|(mined, _)| mined),
            gas_pending_nonce: nonces.map(|(_, pending)| pending),
        });
        let probe = Probe {
            chain_head: head,
            workerd_found: self.ports.sandbox.runtime_found(),
            gas_balance_wei: balance,
            at_ms: self.ports.clock.now_ms(),
        };
        self.record_probe(probe);
        probe
    }
}
