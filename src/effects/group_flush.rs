//! Group commit for the sled journal: callers that each need their own writes durable share one
//! `flush` instead of queueing a flush (and an fsync) apiece.

use std::sync::{Condvar, Mutex};

use super::off_worker::off_the_worker;

/// Flushes `sled::Db` on behalf of many writers. A caller's writes are durable once a flush that
/// *started after* them has finished: the caller either starts that flush itself (the leader) or
/// waits for the one that does. Under one writer at a time this is a plain flush.
#[derive(Default)]
pub struct GroupFlush {
    state: Mutex<Generations>,
    finished: Condvar,
}

#[derive(Default)]
struct Generations {
    /// Flushes started so far; the one running, if any, is number `started`.
    started: u64,
    /// The latest flush that finished without an error.
    done: u64,
    running: bool,
    /// Callers waiting for a flush to finish.
    waiting: usize,
}

impl GroupFlush {
    /// Returns once everything this thread wrote before the call is durable in `db`; an error
    /// of the flush that would have covered it is returned to this caller (a waiter whose flush
    /// failed leads the next attempt and sees its own outcome).
    pub fn flush(&self, db: &sled::Db) -> sled::Result<()> {
        off_the_worker(|| self.flush_here(db))
    }

    fn flush_here(&self, db: &sled::Db) -> sled::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // The flush running now may have started before our writes: only a later one counts.
        let needed = state.started + 1;
        loop {
            if state.done >= needed {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                state.started += 1;
                let mine = state.started;
                drop(state);
                let outcome = db.flush().map(|_| ());
                state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.running = false;
                if outcome.is_ok() {
                    state.done = state.done.max(mine);
                }
                self.finished.notify_all();
                outcome?;
                // `mine >= needed` always holds for a leader; the check above returns.
                continue;
            }
            state.waiting += 1;
            state = self.finished.wait(state).unwrap_or_else(|p| p.into_inner());
            state.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn every_write_is_durable_once_its_flush_returns() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupFlush::default();
        let (writers, writes) = (8, 50);
        std::thread::scope(|scope| {
            for w in 0..writers {
                let (db, group) = (&db, &group);
                scope.spawn(move || {
                    for i in 0..writes {
                        db.insert(format!("{w}-{i}"), &[1u8][..]).unwrap();
                        group.flush(db).unwrap();
                    }
                });
            }
        });
        drop(db);
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(db.len(), writers * writes);
    }

    /// Four writers arrive while a flush runs that may predate their writes: none returns on it,
    /// and one flush after it serves all four.
    #[test]
    fn writers_waiting_on_a_running_flush_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let group = GroupFlush::default();
        {
            let mut state = group.state.lock().unwrap();
            state.started = 1;
            state.running = true;
        }
        std::thread::scope(|scope| {
            let waiters: Vec<_> = (0..4).map(|_| scope.spawn(|| group.flush(&db))).collect();
            let deadline = Instant::now() + Duration::from_secs(30);
            while group.state.lock().unwrap().waiting < 4 {
                assert!(Instant::now() < deadline, "the writers never waited");
                std::thread::sleep(Duration::from_millis(5));
            }
            {
                let mut state = group.state.lock().unwrap();
                state.running = false;
                state.done = 1;
                group.finished.notify_all();
            }
            for waiter in waiters {
                waiter.join().unwrap().unwrap();
            }
        });
        let state = group.state.lock().unwrap();
        assert_eq!(
            (state.started, state.done),
            (2, 2),
            "one more flush served all four"
        );
    }
}
