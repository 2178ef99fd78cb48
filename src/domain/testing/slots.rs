//! The `Slots` port: a pool of slots without cgroups.

use std::sync::{Arc, Mutex};

/// A `MockSlots` pool of `capacity` slots without cgroups.
pub fn counting_slots(capacity: usize) -> crate::domain::dal::MockSlots {
    use crate::domain::dal::Slot;
    let free = Arc::new(Mutex::new((0..capacity).rev().collect::<Vec<usize>>()));
    let mut slots = crate::domain::dal::MockSlots::new();
    slots.expect_capacity().return_const(capacity);
    let f = free.clone();
    slots.expect_try_acquire().returning(move || {
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
