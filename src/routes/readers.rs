//! The threads that run the job routes' journal reads: a few dedicated threads at a lower CPU
//! priority, so that a flood of listings neither occupies the async workers nor takes CPU time
//! from job execution (the kernel favours the workers, the sandboxes and the sender).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Niceness of the reader threads (0 is normal; higher yields the CPU to normal threads).
const READER_NICENESS: libc::c_int = 10;

type Read = Box<dyn FnOnce() + Send>;

/// A fixed pool of reader threads fed through one queue; dropped, its threads end.
pub struct Readers {
    queue: Mutex<mpsc::Sender<Read>>,
}

impl Readers {
    /// Starts `threads` reader threads.
    pub fn new(threads: usize) -> Self {
        let (queue, reads) = mpsc::channel::<Read>();
        let reads = Arc::new(Mutex::new(reads));
        for n in 0..threads.max(1) {
            let reads = reads.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("journal-reader-{n}"))
                .spawn(move || {
                    // SAFETY: setpriority(2) on this thread's own id; raising niceness needs
                    // no privilege, and a refusal only leaves the priority as it was.
                    unsafe {
                        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                        libc::setpriority(libc::PRIO_PROCESS, tid, READER_NICENESS);
                    }
                    loop {
                        let next = reads.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match next {
                            // A read that panics loses its answer (the caller gets a 503),
                            // not the thread.
                            Ok(read) => {
                                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
                                    .is_err()
                                {
                                    tracing::error!("a journal read panicked");
                                }
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a journal reader thread");
            }
        }
        Self {
            queue: Mutex::new(queue),
        }
    }

    /// Runs `read` on a reader thread (in turn with the others) and returns its result; None
    /// if no reader could run it.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (answer, answered) = oneshot::channel();
        let job: Read = Box::new(move || {
            let _ = answer.send(read());
        });
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .ok()?;
        answered.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_that_panics_loses_its_answer_not_the_reader() {
        let readers = Readers::new(1);
        assert_eq!(readers.run(|| -> u8 { panic!("bad read") }).await, None);
        assert_eq!(
            readers.run(|| 7).await,
            Some(7),
            "the one reader still reads"
        );
    }

    #[tokio::test]
    async fn reads_run_on_the_reader_threads_at_a_lower_priority() {
        let readers = Readers::new(2);
        let (name, niceness) = readers
            .run(|| {
                // SAFETY: getpriority(2) on this thread's own id.
                let niceness = unsafe {
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::getpriority(libc::PRIO_PROCESS, tid)
                };
                (std::thread::current().name().map(str::to_string), niceness)
            })
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("journal-reader-"));
        assert!(niceness >= READER_NICENESS, "niceness {niceness}");
    }
}
