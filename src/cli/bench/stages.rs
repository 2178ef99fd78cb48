//! Reads the executor child's JSON log: its `job_stage` marks (stage → unix µs, per job), so the
//! bench can split a job's latency into stages and wait for outputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serverless_executor::domain::stage::{Stage, STAGE_TARGET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

/// What the executor's log said about each job: stage → unix µs of the mark.
#[derive(Default)]
pub struct StageLog {
    pub marks: Mutex<HashMap<String, HashMap<Stage, u64>>>,
    pub mined: Notify,
}

impl StageLog {
    pub fn get(&self, job: &str) -> Option<HashMap<Stage, u64>> {
        self.marks.lock().ok()?.get(job).cloned()
    }

    pub fn mined_count(&self) -> usize {
        self.marks
            .lock()
            .map(|m| m.values().filter(|s| s.contains_key(&Stage::Mined)).count())
            .unwrap_or(0)
    }
}

/// Reads the executor's JSON log: `job_stage` marks into `log`; warnings and errors echoed.
pub async fn read_log(stderr: tokio::process::ChildStderr, log: Arc<StageLog>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            eprintln!("[executor] {line}");
            continue;
        };
        if event["target"] != STAGE_TARGET {
            eprintln!("[executor] {line}");
            continue;
        }
        let Some(stage) = event["fields"]["stage"].as_str().and_then(Stage::from_name) else {
            continue;
        };
        let job = event["fields"]["job"]
            .as_str()
            .or_else(|| event["span"]["job"].as_str());
        let (Some(job), Some(at)) = (job, event["timestamp_us"].as_u64()) else {
            continue;
        };
        if let Ok(mut marks) = log.marks.lock() {
            // The first mark of a stage counts (a retry sends again).
            marks
                .entry(job.to_string())
                .or_default()
                .entry(stage)
                .or_insert(at);
        }
        if stage == Stage::Mined {
            log.mined.notify_waiters();
        }
    }
}

/// A job's time in the executor: from its event seen to its output mined, in ms.
pub fn internal_ms(log: &StageLog, job: &str) -> Result<f64> {
    let marks = log.get(job).unwrap_or_default();
    match (marks.get(&Stage::Seen), marks.get(&Stage::Mined)) {
        (Some(seen), Some(mined)) => Ok(mined.saturating_sub(*seen) as f64 / 1000.0),
        _ => bail!("job {job}: no seen and mined marks in the executor's log"),
    }
}

pub async fn wait_mined(log: &StageLog, job: &str, timeout: Duration) -> Result<()> {
    let limit = Instant::now() + timeout;
    loop {
        let notified = log.mined.notified();
        if log.get(job).is_some_and(|m| m.contains_key(&Stage::Mined)) {
            return Ok(());
        }
        if Instant::now() > limit {
            bail!("job {job} got no output within {timeout:?}");
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
    }
}
