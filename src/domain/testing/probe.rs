//! The `ChainProbe` port: a node at a fixed head (`probed_chain`), and the contract.

use ethers::types::U256;

use crate::domain::dal::{ChainProbe, MockChainProbe};

/// What the probe suite needs to know of the node behind the probe.
pub struct ProbeCase {
    /// The node answers.
    pub chain_up: bool,
    /// A gas key is set (so there is a gas account to ask about).
    pub gas_key: bool,
}

/// A node at block `head` (None: down) whose gas account, if `gas_key`, holds 1 ether with
/// nonce 3; nothing of ours in flight.
pub fn probed_chain(head: Option<u64>, gas_key: bool) -> MockChainProbe {
    let up = head.is_some();
    let account = up && gas_key;
    let mut probe = MockChainProbe::new();
    probe.expect_head_block().returning(move || head);
    probe
        .expect_gas_balance()
        .returning(move || account.then(|| U256::exp10(18)));
    probe
        .expect_gas_price()
        .returning(move || up.then(|| U256::from(1_000_000_000u64)));
    probe
        .expect_gas_nonces()
        .returning(move || account.then_some((3, 3)));
    probe.expect_pending_transactions().return_const(0u64);
    probe.expect_output_gas().return_const(200_000u64);
    probe
}

/// What every `ChainProbe` must do, with nothing of ours in flight.
pub async fn chain_probe_contract(probe: &dyn ChainProbe, case: &ProbeCase) {
    let head = probe.head_block().await;
    assert_eq!(
        head.is_some(),
        case.chain_up,
        "a head exactly when the node answers"
    );
    if let Some(head) = head {
        let again = probe.head_block().await.expect("the node still answers");
        assert!(
            again >= head,
            "the head does not go back: {head} then {again}"
        );
    }
    let account = case.chain_up && case.gas_key;
    assert_eq!(
        probe.gas_balance().await.is_some(),
        account,
        "a balance exactly when there is a gas account on a node that answers"
    );
    let nonces = probe.gas_nonces().await;
    assert_eq!(nonces.is_some(), account, "nonces likewise");
    if let Some((mined, pending)) = nonces {
        assert!(pending >= mined, "the pool's nonce counts the mined ones");
    }
    if case.chain_up {
        assert!(
            probe
                .gas_price()
                .await
                .is_some_and(|price| !price.is_zero()),
            "a node that answers has a gas price"
        );
    }
    assert_eq!(probe.pending_transactions(), 0, "nothing in flight");
    assert!(probe.output_gas() > 0, "an output costs gas");
}
