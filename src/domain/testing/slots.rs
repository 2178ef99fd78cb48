//! The `Slots` port: a pool of slots without cgroups (`counting_slots`), and the contract every
//! pool keeps (the stub here, `CgroupSlots` in `tests/sandbox.rs`).

use crate::domain::dal::Slots;

use std::sync::{Arc, Mutex};

/// A `MockSlots` pool of `capacity` slots without cgroups.
pub fn counting_slots(capacity: usize) -> crate::domain::dal::MockSlots {
    declining_slots(capacity, 0)
}

/// `counting_slots` whose first `declines` requests get None though slots are free, as a pool
/// holding free slots back for a busy one that is ready answers.
pub fn declining_slots(capacity: usize, declines: usize) -> crate::domain::dal::MockSlots {
    use crate::domain::dal::Slot;
    let free = Arc::new(Mutex::new((0..capacity).rev().collect::<Vec<usize>>()));
    let declines = Arc::new(Mutex::new(declines));
    let mut slots = crate::domain::dal::MockSlots::new();
    slots.expect_capacity().return_const(capacity);
    let f = free.clone();
    slots.expect_try_acquire().returning(move || {
        let mut left = declines.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return None;
        }
        f.lock().unwrap().pop().map(|index| Slot {
            index,
            cgroup_procs: vec![],
        })
    });
    let f = free.clone();
    slots.expect_release().returning(move |slot| {
        let mut free = f.lock().unwrap();
        assert!(
            !free.contains(&slot.index),
            "slot {} released twice",
            slot.index
        );
        free.push(slot.index);
    });
    let f = free.clone();
    slots
        .expect_busy()
        .returning(move || capacity - f.lock().unwrap().len());
    slots.expect_enforced().return_const(false);
    slots.expect_oom_kills().returning(|_| 0);
    slots
}

/// A fresh pool: every slot free. Takes all, checks they are distinct and that a full pool
/// gives None, then that a released slot is counted, reusable, and the pool drains to zero.
pub async fn slots_contract(s: &dyn Slots) {
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
