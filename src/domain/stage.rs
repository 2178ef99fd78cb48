//! The stages a job passes through, in the domain's words, and the log target their marks go
//! to. The executor logs one `job_stage` event (debug) per stage with the stage's name; the log
//! stamps it with unix microseconds (`logging`), which is what the benchmark reads.

/// The `tracing` target of the stage marks (and of the span that names the job in the
/// adapters' marks).
pub const STAGE_TARGET: &str = "job_stage";

/// One stage mark of a job, in the order a job reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The job's `JobCreated` log was handled and the job queued.
    Seen,
    /// The job holds a slot and its code.
    CodeFetched,
    /// The sandbox has loaded the job's code (workerd listens).
    SandboxReady,
    /// The sandbox run ended.
    Executed,
    /// The output is signed with the enclave key.
    Signed,
    /// The output transaction was sent.
    Sent,
    /// The output transaction's receipt is in.
    Mined,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Seen,
        Stage::CodeFetched,
        Stage::SandboxReady,
        Stage::Executed,
        Stage::Signed,
        Stage::Sent,
        Stage::Mined,
    ];

    /// The `stage` field of the mark.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Seen => "seen",
            Stage::CodeFetched => "code_fetched",
            Stage::SandboxReady => "sandbox_ready",
            Stage::Executed => "executed",
            Stage::Signed => "signed",
            Stage::Sent => "sent",
            Stage::Mined => "mined",
        }
    }

    /// The stage a mark's `stage` field names.
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Stage;

    #[test]
    fn names_round_trip_in_order() {
        for stage in Stage::ALL {
            assert_eq!(Stage::from_name(stage.name()), Some(stage));
        }
        assert_eq!(Stage::from_name("queued"), None);
        assert_eq!(Stage::ALL.map(Stage::name)[2], "sandbox_ready");
    }
}
