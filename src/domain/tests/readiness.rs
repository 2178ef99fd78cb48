//! Readiness without slot limits.

use super::*;

#[test]
fn without_slot_limits_the_executor_is_not_ready_unless_the_operator_allows_it() {
    // The stub slots report no enforced limits, like a container that cannot make cgroups.
    for allow in [false, true] {
        let mut h = harness();
        registered(&h);
        let ports = Ports {
            slots: Arc::new(counting_slots(2)),
            ..h.executor.ports().clone()
        };
        let settings = Settings {
            allow_unlimited_slots: allow,
            ..Settings::default()
        };
        h.executor = Executor::new(ports, settings);
        h.executor.record_probe(crate::domain::model::Probe {
            chain_head: Some(10),
            workerd_found: true,
            gas_balance_wei: None,
            at_ms: T0_MS,
        });
        let r = h.executor.readiness().unwrap();
        assert!(r.registered && r.chain_connected && r.workerd_found);
        assert!(!r.cgroups_enforced);
        assert_eq!(r.ready, allow, "{r:?}");
        let reasons = r.reasons();
        if allow {
            assert!(reasons.is_empty(), "{reasons:?}");
        } else {
            assert_eq!(reasons.len(), 1, "{reasons:?}");
            assert!(reasons[0].contains("EXECUTOR_ALLOW_UNLIMITED_SLOTS"));
        }
    }
}
