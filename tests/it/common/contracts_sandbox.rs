//! The shared behavioural suites of the `Slots` and `Sandbox` ports. Each takes any
//! implementation: `tests/it/sandbox.rs` runs them against the mockall stubs the domain tests use
//! and against the real adapters (`CgroupSlots`, `WorkerdSandbox`), so a stub cannot drift
//! from the adapter it stands in for.

#![allow(dead_code)]

use serverless_executor::domain::dal::{RunResult, Sandbox, Slot, Slots};

/// Answers with the request body, unchanged.
pub const ECHO_JOB: &str =
    "export default { async fetch(request) { return new Response(await request.arrayBuffer()); } };";

/// Answers "ok" whatever the input.
pub const OK_JOB: &str = "export default { fetch() { return new Response(\"ok\"); } };";

/// A fresh pool: every slot free. Takes all, checks they are distinct and that a full pool
/// gives None, then that a released slot is counted, reusable, and the pool drains to zero.
pub async fn slots_contract<S: Slots>(s: &S) {
    let capacity = s.capacity();
    assert!(capacity >= 1, "a pool has at least one slot");
    assert_eq!(s.busy(), 0, "a fresh pool has no busy slot");

    let mut held = Vec::new();
    for taken in 1..=capacity {
        let slot = s.try_acquire().expect("a free slot while busy < capacity");
        assert!(
            slot.index < capacity,
            "slot index {} out of range",
            slot.index
        );
        assert_eq!(
            slot.cgroup_procs.is_empty(),
            !s.enforced(),
            "cgroup files exactly when limits are enforced"
        );
        let _ = s.oom_kills(&slot);
        assert_eq!(s.busy(), taken);
        held.push(slot);
    }
    assert!(s.try_acquire().is_none(), "a full pool gives no slot");
    let mut indexes: Vec<usize> = held.iter().map(|slot| slot.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), capacity, "slots held at once are distinct");

    let returned = held.pop().expect("at least one slot");
    let index = returned.index;
    s.release(returned);
    assert_eq!(s.busy(), capacity - 1, "release frees one slot");
    let again = s.try_acquire().expect("a released slot can be taken again");
    assert_eq!(again.index, index, "the only free slot is the released one");
    assert!(s.try_acquire().is_none());
    held.push(again);

    for slot in held {
        s.release(slot);
    }
    assert_eq!(s.busy(), 0, "all released");
}

/// The sandbox runs code on input inside `slot`: an echo job returns its input byte for byte
/// (binary, UTF-8, empty), a trivial job returns its output.
pub async fn sandbox_contract<S: Sandbox>(s: &S, slot: &Slot) {
    let utf8 = "contract: héllo — 日本語 🎉".as_bytes().to_vec();
    let binary: Vec<u8> = vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff];
    for input in [utf8, binary, Vec::new()] {
        let result = s.run(slot, ECHO_JOB, &input, 30_000).await;
        assert_eq!(
            result,
            Ok(RunResult::Output(input.clone())),
            "echo of {input:?}"
        );
    }
    let result = s.run(slot, OK_JOB, b"{\"num\":1}", 30_000).await;
    assert_eq!(result, Ok(RunResult::Output(b"ok".to_vec())));
}
