//! Job slots as cgroups: one cgroup per slot under `CGROUP_PARENT`, with the slot's memory
//! limit (no swap, OOM killer on) and CPU quota. Works with cgroup v2, or v1 with the memory
//! (and cpu) controllers mounted; where neither can be set up (not mounted, no permission), the
//! slots still exist but run without limits, and one loud warning says so at construction.
//!
//! `layout` is the pure part (detection, paths, limit values, parsing what the kernel reports);
//! `pool` does the filesystem work and implements the `Slots` port.

mod layout;
mod pool;

use std::path::PathBuf;

pub use layout::{
    detect_layout, oom_events_file, parse_cpu_stat, parse_oom_kills, render_limits, slot_dir_name,
    CgroupVersion, Controller, Hierarchy, Layout, LimitFile, CPU_PERIOD_US, EXECUTOR_LEAF,
};
pub use pool::{rmdir_patiently, CgroupSlots};

/// Why the slot cgroups could not be set up (the slots then run without limits).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 mount offers the memory controller and no cgroup v1 memory hierarchy is mounted"
    )]
    NoMemoryHierarchy,
    #[error("cannot read {}: {source}", path.display())]
    ReadProc {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mkdir {}: {source}", path.display())]
    Mkdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {value} to {}: {source}", path.display())]
    Write {
        value: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} reads back '{read}' instead of '{written}'", path.display())]
    ReadBack {
        path: PathBuf,
        read: String,
        written: String,
    },
    #[error(
        "enable {enable} in {}: {source} (the executor needs a delegated cgroup v2 subtree: see \
         README, Sandbox containment)",
        dir.display()
    )]
    Delegate {
        enable: String,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("move process {pid} to {}: {source}", leaf.display())]
    MoveProcess {
        pid: String,
        leaf: PathBuf,
        source: std::io::Error,
    },
    #[error("outside the mount")]
    OutsideMount,
    /// Every place tried, with why it failed there.
    #[error("{}", places(.0))]
    NoPlace(Vec<(PathBuf, CgroupError)>),
}

fn places(tried: &[(PathBuf, CgroupError)]) -> String {
    tried
        .iter()
        .map(|(base, why)| format!("{}: {why}", base.display()))
        .collect::<Vec<_>>()
        .join("; ")
}
