//! The `Metrics` port: a stub that counts what it is told, and the contract.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ethers::types::Address;

use crate::domain::model::ErrorCode;

/// A `MockMetrics` that counts what it is told and renders the counts as `name value` lines.
pub fn counting_metrics() -> crate::domain::dal::MockMetrics {
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut metrics = crate::domain::dal::MockMetrics::new();
    let bump = |counts: &Arc<Mutex<BTreeMap<String, u64>>>, name: String| {
        *counts.lock().unwrap().entry(name).or_default() += 1;
    };
    let c = counts.clone();
    metrics
        .expect_job_executed()
        .returning(move |code, _| bump(&c, format!("executed_{}", code.as_u8())));
    let c = counts.clone();
    metrics
        .expect_job_finished()
        .returning(move |end, _, _| bump(&c, format!("finished_{end:?}")));
    let c = counts.clone();
    metrics
        .expect_sandbox_oom_kill()
        .returning(move || bump(&c, "oom_kills".into()));
    let c = counts.clone();
    metrics
        .expect_output_reverted()
        .returning(move |revert| bump(&c, format!("reverted_{}", revert.name())));
    let c = counts.clone();
    metrics
        .expect_enclave_slashed()
        .returning(move || bump(&c, "slashed".into()));
    let c = counts.clone();
    metrics.expect_set_readiness().returning(move |readiness| {
        c.lock()
            .unwrap()
            .insert("ready".into(), u64::from(readiness.ready));
    });
    let c = counts.clone();
    metrics.expect_enclave_refused().returning(move |refused| {
        let mut counts = c.lock().unwrap();
        if refused {
            counts.insert("enclave_refused".into(), 1);
        } else {
            counts.remove("enclave_refused");
        }
    });
    let c = counts.clone();
    metrics.expect_gas_spent().returning(move |gas| {
        *c.lock().unwrap().entry("gas_spent".into()).or_default() += gas;
    });
    let c = counts.clone();
    metrics
        .expect_gas_burner()
        .returning(move |owner| bump(&c, format!("gas_burner_{owner:?}")));
    let c = counts.clone();
    metrics
        .expect_store_error()
        .returning(move || bump(&c, "store_errors".into()));
    let c = counts.clone();
    metrics
        .expect_set_store_failing()
        .returning(move |failing| {
            c.lock()
                .unwrap()
                .insert("store_failing".into(), u64::from(failing));
        });
    let c = counts.clone();
    metrics.expect_set_load().returning(move |load| {
        c.lock()
            .unwrap()
            .insert("slots_busy".into(), load.slots_busy as u64);
    });
    let c = counts.clone();
    metrics.expect_set_chain().returning(move |sample| {
        let mut counts = c.lock().unwrap();
        counts.insert("chain_up".into(), u64::from(sample.chain_up));
        if let Some(lag) = sample.head_lag_blocks {
            counts.insert("head_lag_blocks".into(), lag);
        }
    });
    metrics.expect_render().returning(move || {
        counts
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k} {v}\n"))
            .collect()
    });
    metrics
}

/// What every `Metrics` must do: take every event without failing, and render text that
/// changes when something is recorded.
pub fn metrics_contract(metrics: &dyn crate::domain::dal::Metrics) {
    use crate::domain::dal::{JobEnd, Load};
    let before = metrics.render();
    metrics.job_executed(ErrorCode::Ok, 12);
    let after = metrics.render();
    assert_ne!(before, after, "a recorded execution shows in the rendering");
    metrics.job_executed(ErrorCode::DeadlineExceeded, 5_000);
    metrics.job_finished(JobEnd::Confirmed, Some(ErrorCode::Ok), 2_500);
    metrics.job_finished(JobEnd::Abandoned, None, 90_000);
    metrics.sandbox_oom_kill();
    let unrefused = metrics.render();
    metrics.enclave_refused(true);
    assert_ne!(unrefused, metrics.render(), "a refused enclave shows");
    metrics.enclave_refused(false);
    assert_eq!(
        unrefused,
        metrics.render(),
        "and stops showing once cleared"
    );
    let before_gas = metrics.render();
    metrics.gas_spent(21_000);
    assert_ne!(
        before_gas,
        metrics.render(),
        "gas spent shows in the rendering"
    );
    let before_burner = metrics.render();
    metrics.gas_burner(Address::repeat_byte(0xb0));
    let with_burner = metrics.render();
    assert_ne!(
        before_burner, with_burner,
        "a gas burner shows in the rendering"
    );
    assert!(
        with_burner.contains("0xb0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"),
        "the gas burner is named: {with_burner}"
    );
    metrics.store_error();
    metrics.set_store_failing(true);
    metrics.set_load(Load {
        slots_busy: 1,
        slots_total: 4,
        jobs_queued: 2,
        jobs_in_flight: 1,
        job_capacity: 4,
    });
    let last = metrics.render();
    assert_ne!(after, last, "every event shows in the rendering");
    assert!(!last.is_empty());

    // What alerts fire on: each shows on its own.
    let shows = |what: &str, event: &dyn Fn()| {
        let before = metrics.render();
        event();
        assert_ne!(before, metrics.render(), "{what} shows in the rendering");
    };
    shows("a reverted output", &|| {
        metrics.output_reverted(&crate::domain::dal::Revert::ExecutionTimeOver)
    });
    shows("a slash of this enclave", &|| metrics.enclave_slashed());
    shows("the chain probe", &|| {
        metrics.set_chain(crate::domain::dal::ChainSample {
            chain_up: true,
            head_lag_blocks: Some(3),
            pending_transactions: 1,
            gas_balance_wei: Some(ethers::types::U256::exp10(18)),
            output_cost_wei: Some(ethers::types::U256::exp10(15)),
            gas_nonce: Some(4),
            gas_pending_nonce: Some(5),
        })
    });
    let readiness = |ready| crate::domain::model::Readiness {
        registered: ready,
        chain_connected: ready,
        cgroups_enforced: ready,
        unlimited_slots_allowed: false,
        workerd_found: ready,
        enclave_verified: ready,
        follower_ok: ready,
        head_lag: None,
        follower_problem: None,
        ready,
    };
    metrics.set_readiness(readiness(false));
    shows("readiness", &|| metrics.set_readiness(readiness(true)));
}
