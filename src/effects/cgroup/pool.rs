//! Job slots as cgroups: one cgroup per slot under `CGROUP_PARENT`, with the slot's memory
//! limit (no swap, OOM killer on) and CPU quota. Works with cgroup v2, or v1 with the memory
//! (and cpu) controllers mounted; where neither can be set up (not mounted, no permission), the
//! slots still exist but run without limits, and one loud warning says so at construction.
//!
//! The free list is a mutex-protected stack: a slot is held by exactly one run at a time.
//! `cleanup` (also on drop) removes the slot cgroups and any parent it created.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::SandboxConfig;
use crate::domain::dal::{Slot, Slots};

/// The CFS period the CPU quota is expressed in, µs.
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
}

/// One file to write in a slot's cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitFile {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    /// Required files must be written and read back equal; optional ones are written when the
    /// kernel offers them (swap accounting, OOM group kill, …).
    pub required: bool,
}

/// The files that set a slot's limits: `memory_bytes` of memory and no swap, the OOM killer
/// enabled, and `cpu_percent` % of one core (`quota = percent × 1000` per 100 ms period).
pub fn render_limits(
    version: CgroupVersion,
    memory_bytes: u64,
    cpu_percent: u32,
) -> Vec<LimitFile> {
    let quota = u64::from(cpu_percent) * CPU_PERIOD_US / 100;
    let file = |controller, file, value: String, required| LimitFile {
        controller,
        file,
        value,
        required,
    };
    use Controller::{Cpu, Memory};
    match version {
        CgroupVersion::V2 => vec![
            file(Memory, "memory.max", memory_bytes.to_string(), true),
            file(Memory, "memory.swap.max", "0".into(), false),
            file(Memory, "memory.oom.group", "1".into(), false),
            file(Cpu, "cpu.max", format!("{quota} {CPU_PERIOD_US}"), true),
        ],
        CgroupVersion::V1 => vec![
            file(
                Memory,
                "memory.limit_in_bytes",
                memory_bytes.to_string(),
                true,
            ),
            // memory + swap = memory: no swap (present only with swap accounting).
            file(
                Memory,
                "memory.memsw.limit_in_bytes",
                memory_bytes.to_string(),
                false,
            ),
            file(Memory, "memory.swappiness", "0".into(), false),
            // 0 = the OOM killer is enabled (1 would freeze the job instead of killing it).
            file(Memory, "memory.oom_control", "0".into(), false),
            file(Cpu, "cpu.cfs_period_us", CPU_PERIOD_US.to_string(), true),
            file(Cpu, "cpu.cfs_quota_us", quota.to_string(), true),
        ],
    }
}

/// The number after `oom_kill` in v2 `memory.events` or v1 `memory.oom_control`.
/// (`memory.failcnt` counts hits of the limit, not kills, and is not used.)
pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("oom_kill"), Some(n)) => n.parse().ok(),
            _ => None,
        }
    })
}

/// One mounted cgroup hierarchy we use, and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub controllers: Vec<Controller>,
    pub mount: PathBuf,
    /// This process's cgroup, relative to `mount`.
    pub own: PathBuf,
}

/// The cgroup hierarchies found, before anything is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub version: CgroupVersion,
    pub hierarchies: Vec<Hierarchy>,
}

/// Finds the cgroup layout from `/proc/self/mountinfo`, `/proc/self/cgroup` and a reader of a
/// v2 mount's `cgroup.controllers`. v2 wins when a cgroup2 mount offers the memory controller;
/// otherwise v1 needs a memory hierarchy (a cpu one is used when present).
pub fn detect_layout(
    mountinfo: &str,
    proc_cgroup: &str,
    v2_controllers: impl Fn(&Path) -> Option<String>,
) -> Result<Layout, String> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_mount).collect();
    for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
        let Some(list) = v2_controllers(&m.point) else {
            continue;
        };
        let offered: Vec<&str> = list.split_whitespace().collect();
        if !offered.contains(&"memory") {
            continue;
        }
        let mut controllers = vec![Controller::Memory];
        if offered.contains(&"cpu") {
            controllers.push(Controller::Cpu);
        }
        let own = own_cgroup(proc_cgroup, None).unwrap_or_default();
        return Ok(Layout {
            version: CgroupVersion::V2,
            hierarchies: vec![Hierarchy {
                controllers,
                mount: m.point.clone(),
                own: relative_to_root(&own, &m.root),
            }],
        });
    }
    let v1 = |name: &str, controller| {
        mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == name))
            .map(|m| Hierarchy {
                controllers: vec![controller],
                mount: m.point.clone(),
                own: relative_to_root(
                    &own_cgroup(proc_cgroup, Some(name)).unwrap_or_default(),
                    &m.root,
                ),
            })
    };
    match (v1("memory", Controller::Memory), v1("cpu", Controller::Cpu)) {
        (Some(memory), cpu) => Ok(Layout {
            version: CgroupVersion::V1,
            hierarchies: std::iter::once(memory).chain(cpu).collect(),
        }),
        (None, _) => Err(
            "no cgroup v2 mount offers the memory controller and no cgroup v1 memory hierarchy is mounted"
                .into(),
        ),
    }
}

struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn parse_mount(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split(' ').collect();
    let mut right = right.split(' ');
    let fstype = right.next()?.to_string();
    let _source = right.next()?;
    let super_opts = right.next().unwrap_or_default().to_string();
    Some(Mount {
        root: unescape(left.get(3)?),
        point: PathBuf::from(unescape(left.get(4)?)),
        fstype,
        super_opts,
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup path from `/proc/self/cgroup`: the v1 line naming `controller`, or
/// the v2 line (`0::/path`) when `controller` is None.
fn own_cgroup(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => list.is_empty(),
            Some(name) => list.split(',').any(|c| c == name),
        };
        hit.then(|| path.to_string())
    })
}

/// A cgroup path as seen from a mount of `root` (a mount may show only a subtree).
fn relative_to_root(path: &str, root: &str) -> PathBuf {
    let rel = path
        .strip_prefix(root.trim_end_matches('/'))
        .unwrap_or(path);
    PathBuf::from(rel.trim_start_matches('/'))
}

/// A hierarchy with the slot cgroups made in it.
#[derive(Debug)]
struct Made {
    controllers: Vec<Controller>,
    slot_dirs: Vec<PathBuf>,
    /// Parent directories this pool created (outermost first); removed when empty.
    created: Vec<PathBuf>,
}

#[derive(Debug)]
enum Limits {
    Enforced {
        version: CgroupVersion,
        made: Vec<Made>,
    },
    Unenforced {
        why: String,
    },
}

/// The job slots, with cgroup limits where the machine allows.
#[derive(Debug)]
pub struct CgroupSlots {
    capacity: usize,
    free: Mutex<Vec<usize>>,
    limits: Limits,
    cleaned: AtomicBool,
}

impl CgroupSlots {
    /// Makes `capacity` slot cgroups `<controller root>/<cgroup_parent>/slot-<n>` (or, when the
    /// root is not writable, under this process's own cgroup), each limited to
    /// `slot_memory_bytes` and `slot_cpu_percent`, and checks the limits by reading them back.
    /// Without cgroups the slots are unlimited and a warning is logged once.
    pub fn new(capacity: usize, config: &SandboxConfig) -> Self {
        let limits = match Self::make(capacity, config) {
            Ok((version, made)) => {
                tracing::info!(
                    ?version,
                    slots = capacity,
                    memory_bytes = config.slot_memory_bytes,
                    cpu_percent = config.slot_cpu_percent,
                    dirs = ?made.iter().filter_map(|m| m.slot_dirs.first().and_then(|d| d.parent())).collect::<Vec<_>>(),
                    "job slots are cgroups"
                );
                Limits::Enforced { version, made }
            }
            Err(why) => {
                tracing::warn!(
                    "CGROUPS NOT AVAILABLE: the {capacity} job slots run WITHOUT memory or CPU limits \
                     (a job can exhaust this machine): {why}"
                );
                Limits::Unenforced { why }
            }
        };
        CgroupSlots {
            capacity,
            free: Mutex::new((0..capacity).rev().collect()),
            limits,
            cleaned: AtomicBool::new(false),
        }
    }

    /// The cgroup version in use, None when not enforced.
    pub fn version(&self) -> Option<CgroupVersion> {
        match &self.limits {
            Limits::Enforced { version, .. } => Some(*version),
            Limits::Unenforced { .. } => None,
        }
    }

    /// Why limits are not enforced (None when they are).
    pub fn unenforced_reason(&self) -> Option<&str> {
        match &self.limits {
            Limits::Enforced { .. } => None,
            Limits::Unenforced { why } => Some(why),
        }
    }

    /// The cgroup directories of slot `index`, one per hierarchy (empty when not enforced).
    pub fn slot_dirs(&self, index: usize) -> Vec<PathBuf> {
        match &self.limits {
            Limits::Enforced { made, .. } => made
                .iter()
                .filter_map(|m| m.slot_dirs.get(index).cloned())
                .collect(),
            Limits::Unenforced { .. } => Vec::new(),
        }
    }

    /// Removes the slot cgroups (and parents this pool created) once no process is inside.
    /// Idempotent; also done on drop. Slots must not be used afterwards.
    pub fn cleanup(&self) {
        if self.cleaned.swap(true, Ordering::SeqCst) {
            return;
        }
        let Limits::Enforced { made, .. } = &self.limits else {
            return;
        };
        for m in made {
            for dir in &m.slot_dirs {
                if let Err(e) = rmdir_patiently(dir) {
                    tracing::warn!("cannot remove slot cgroup {}: {e}", dir.display());
                }
            }
            for dir in m.created.iter().rev() {
                // Fails (and stays) when another pool still has slots there: fine.
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    fn make(capacity: usize, config: &SandboxConfig) -> Result<(CgroupVersion, Vec<Made>), String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let layout = detect_layout(&mountinfo, &proc_cgroup, |mount| {
            std::fs::read_to_string(mount.join("cgroup.controllers")).ok()
        })?;
        make_slots(&layout, capacity, config)
    }
}

/// Makes the slot cgroups of every hierarchy of `layout` (undoing all on failure).
fn make_slots(
    layout: &Layout,
    capacity: usize,
    config: &SandboxConfig,
) -> Result<(CgroupVersion, Vec<Made>), String> {
    {
        let limits = render_limits(
            layout.version,
            config.slot_memory_bytes,
            config.slot_cpu_percent,
        );
        let mut made: Vec<Made> = Vec::new();
        for h in &layout.hierarchies {
            match make_in(layout.version, h, &config.cgroup_parent, capacity, &limits) {
                Ok(m) => made.push(m),
                Err(why) => {
                    for m in &made {
                        undo(m);
                    }
                    return Err(why);
                }
            }
        }
        if !made
            .iter()
            .any(|m| m.controllers.contains(&Controller::Cpu))
        {
            tracing::warn!(
                "no cgroup cpu controller: job slots have a memory limit but no CPU quota"
            );
        }
        Ok((layout.version, made))
    }
}

impl CgroupSlots {
    fn memory_dir(&self, index: usize) -> Option<(CgroupVersion, &Path)> {
        let Limits::Enforced { version, made } = &self.limits else {
            return None;
        };
        made.iter()
            .find(|m| m.controllers.contains(&Controller::Memory))
            .and_then(|m| m.slot_dirs.get(index))
            .map(|d| (*version, d.as_path()))
    }
}

impl Slots for CgroupSlots {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn try_acquire(&self) -> Option<Slot> {
        let index = self.free.lock().ok()?.pop()?;
        let cgroup_procs = self
            .slot_dirs(index)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect();
        Some(Slot {
            index,
            cgroup_procs,
        })
    }

    fn release(&self, slot: Slot) {
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        if slot.index >= self.capacity || free.contains(&slot.index) {
            tracing::warn!(
                slot = slot.index,
                "released a slot that is not held; ignored"
            );
            return;
        }
        free.push(slot.index);
    }

    fn busy(&self) -> usize {
        self.capacity - self.free.lock().map(|f| f.len()).unwrap_or(self.capacity)
    }

    fn enforced(&self) -> bool {
        matches!(self.limits, Limits::Enforced { .. })
    }

    fn oom_kills(&self, slot: &Slot) -> u64 {
        let Some((version, dir)) = self.memory_dir(slot.index) else {
            return 0;
        };
        let file = match version {
            CgroupVersion::V2 => "memory.events",
            CgroupVersion::V1 => "memory.oom_control",
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| parse_oom_kills(&t))
            .unwrap_or(0)
    }
}

impl Drop for CgroupSlots {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Makes the slot cgroups of one hierarchy: first under the controller's root, then under our
/// own cgroup; the first place where every slot takes (and reads back) its limits wins.
fn make_in(
    version: CgroupVersion,
    h: &Hierarchy,
    parent: &str,
    capacity: usize,
    limits: &[LimitFile],
) -> Result<Made, String> {
    let mut bases = vec![h.mount.join(parent)];
    if !h.own.as_os_str().is_empty() {
        bases.push(h.mount.join(&h.own).join(parent));
    }
    let mine: Vec<&LimitFile> = limits
        .iter()
        .filter(|l| h.controllers.contains(&l.controller))
        .collect();
    let mut reasons = Vec::new();
    for base in bases {
        let mut made = Made {
            controllers: h.controllers.clone(),
            slot_dirs: Vec::new(),
            created: Vec::new(),
        };
        match try_make(version, h, &base, capacity, &mine, &mut made) {
            Ok(()) => return Ok(made),
            Err(why) => {
                undo(&made);
                reasons.push(format!("{}: {why}", base.display()));
            }
        }
    }
    Err(reasons.join("; "))
}

fn try_make(
    version: CgroupVersion,
    h: &Hierarchy,
    base: &Path,
    capacity: usize,
    limits: &[&LimitFile],
    made: &mut Made,
) -> Result<(), String> {
    // mkdir -p, remembering what we made.
    let rel = base
        .strip_prefix(&h.mount)
        .map_err(|_| "outside the mount".to_string())?;
    let mut dir = h.mount.clone();
    let mut chain = vec![dir.clone()];
    for part in rel.components() {
        dir.push(part);
        chain.push(dir.clone());
        match std::fs::create_dir(&dir) {
            Ok(()) => made.created.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("mkdir {}: {e}", dir.display())),
        }
    }
    if version == CgroupVersion::V2 {
        let own = h.mount.join(&h.own);
        for d in &chain {
            delegate_controllers(d, &own, &h.controllers)?;
        }
    }
    for index in 0..capacity {
        let slot = base.join(format!("slot-{index}"));
        // A slot left by an earlier run of the executor is reused with fresh limits.
        if let Err(e) = std::fs::create_dir(&slot) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(format!("mkdir {}: {e}", slot.display()));
            }
        }
        made.slot_dirs.push(slot.clone());
        apply_limits(&slot, limits)?;
    }
    Ok(())
}

/// The leaf cgroup the executor's own processes move to when its cgroup must hand controllers
/// down (cgroup v2 lets only a cgroup without processes of its own do that).
pub const EXECUTOR_LEAF: &str = "executor";

/// cgroup v2: makes `dir` hand the controllers on to its children, unless it already does (a
/// delegating parent such as systemd's `Delegate=yes` or a private cgroup namespace did it).
/// When `dir` is the executor's own, non-root cgroup and holds processes, they first move to
/// its leaf `executor`: then the delegated subtree can hold the slots beside it.
fn delegate_controllers(dir: &Path, own: &Path, controllers: &[Controller]) -> Result<(), String> {
    let names: Vec<&str> = controllers
        .iter()
        .map(|c| match c {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
        })
        .collect();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    if names
        .iter()
        .all(|n| enabled.split_whitespace().any(|e| e == *n))
    {
        return Ok(());
    }
    // Only the hierarchy's root has no cgroup.type, and only it may hold processes and
    // hand controllers down at once.
    let is_root = !dir.join("cgroup.type").exists();
    if dir == own && !is_root {
        move_processes_to_leaf(dir)?;
    }
    let enable: Vec<String> = names.iter().map(|n| format!("+{n}")).collect();
    std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" ")).map_err(|e| {
        format!(
            "enable {} in {}: {e} (the executor needs a delegated cgroup v2 subtree: see README, \
             Sandbox containment)",
            enable.join(" "),
            dir.display()
        )
    })
}

/// Moves every process of cgroup `dir` into `dir/executor`.
fn move_processes_to_leaf(dir: &Path) -> Result<(), String> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map_err(|e| format!("read {}: {e}", dir.join("cgroup.procs").display()))?;
    let pids: Vec<&str> = procs.split_whitespace().collect();
    if pids.is_empty() {
        return Ok(());
    }
    let leaf = dir.join(EXECUTOR_LEAF);
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("mkdir {}: {e}", leaf.display())),
    }
    for pid in pids {
        match std::fs::write(leaf.join("cgroup.procs"), pid) {
            Ok(()) => {}
            // Gone meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(format!("move process {pid} to {}: {e}", leaf.display())),
        }
    }
    tracing::info!(leaf = %leaf.display(), "moved the executor's processes to a leaf cgroup so its cgroup can hold the slots");
    Ok(())
}

/// Writes the limits (a second pass fixes order dependencies, e.g. v1 memsw ≥ limit), then
/// reads the required ones back.
fn apply_limits(dir: &Path, limits: &[&LimitFile]) -> Result<(), String> {
    let present: Vec<&&LimitFile> = limits
        .iter()
        .filter(|l| l.required || dir.join(l.file).exists())
        .collect();
    let mut failed: Vec<&&LimitFile> = Vec::new();
    for l in &present {
        if std::fs::write(dir.join(l.file), &l.value).is_err() {
            failed.push(l);
        }
    }
    for l in failed {
        if let Err(e) = std::fs::write(dir.join(l.file), &l.value) {
            if l.required {
                return Err(format!(
                    "write {} to {}: {e}",
                    l.value,
                    dir.join(l.file).display()
                ));
            }
            tracing::debug!(
                "optional cgroup file {} not set: {e}",
                dir.join(l.file).display()
            );
        }
    }
    for l in present.iter().filter(|l| l.required) {
        let path = dir.join(l.file);
        let read =
            std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        if !same_limit(&l.value, read.trim()) {
            return Err(format!(
                "{} reads back '{}' instead of '{}'",
                path.display(),
                read.trim(),
                l.value
            ));
        }
    }
    Ok(())
}

/// Whether a limit read back equals the one written (memory limits are rounded down to pages).
fn same_limit(written: &str, read: &str) -> bool {
    if let (Ok(w), Ok(r)) = (written.parse::<u64>(), read.parse::<u64>()) {
        return r <= w && w - r < 65_536;
    }
    written.split_whitespace().eq(read.split_whitespace())
}

fn undo(made: &Made) {
    for dir in &made.slot_dirs {
        let _ = std::fs::remove_dir(dir);
    }
    for dir in made.created.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// rmdir, retrying briefly while the last process in it is still going away.
fn rmdir_patiently(dir: &Path) -> std::io::Result<()> {
    let mut last = None;
    for _ in 0..25 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("rmdir failed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP_V1: &str = "\
9:name=systemd:/
4:memory:/process_api/dd2b
1:cpu:/
0::/
";

    #[test]
    fn v1_limits() {
        let l = render_limits(CgroupVersion::V1, 100 << 20, 50);
        let get = |f: &str| l.iter().find(|x| x.file == f).map(|x| x.value.as_str());
        assert_eq!(get("memory.limit_in_bytes"), Some("104857600"));
        assert_eq!(get("memory.memsw.limit_in_bytes"), Some("104857600"));
        assert_eq!(get("memory.oom_control"), Some("0"));
        assert_eq!(get("cpu.cfs_period_us"), Some("100000"));
        assert_eq!(get("cpu.cfs_quota_us"), Some("50000"));
        // The limit comes before memsw (memsw may never be below it).
        let pos = |f: &str| l.iter().position(|x| x.file == f).unwrap();
        assert!(pos("memory.limit_in_bytes") < pos("memory.memsw.limit_in_bytes"));
    }

    #[test]
    fn v2_limits() {
        let l = render_limits(CgroupVersion::V2, 100 << 20, 250);
        let get = |f: &str| l.iter().find(|x| x.file == f).map(|x| x.value.as_str());
        assert_eq!(get("memory.max"), Some("104857600"));
        assert_eq!(get("memory.swap.max"), Some("0"));
        assert_eq!(get("cpu.max"), Some("250000 100000"));
        assert!(l
            .iter()
            .filter(|x| x.required)
            .all(|x| x.file == "memory.max" || x.file == "cpu.max"));
    }

    #[test]
    fn oom_kill_counts_are_parsed_not_failcnt() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_oom_kills(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), Some(1));
        assert_eq!(parse_oom_kills("12\n"), None);
    }

    #[test]
    fn detects_v1_here_style_layout() {
        let layout = detect_layout(MOUNTINFO_V1, CGROUP_V1, |_| Some("hugetlb\n".into())).unwrap();
        assert_eq!(layout.version, CgroupVersion::V1);
        assert_eq!(
            layout.hierarchies,
            vec![
                Hierarchy {
                    controllers: vec![Controller::Memory],
                    mount: "/sys/fs/cgroup/memory".into(),
                    own: "process_api/dd2b".into(),
                },
                Hierarchy {
                    controllers: vec![Controller::Cpu],
                    mount: "/sys/fs/cgroup/cpu".into(),
                    own: "".into(),
                },
            ]
        );
    }

    #[test]
    fn detects_v2_and_none() {
        let mi = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = detect_layout(mi, "0::/user.slice/x.scope\n", |_| {
            Some("cpuset cpu io memory pids\n".into())
        })
        .unwrap();
        assert_eq!(layout.version, CgroupVersion::V2);
        assert_eq!(
            layout.hierarchies[0].controllers,
            vec![Controller::Memory, Controller::Cpu]
        );
        assert_eq!(
            layout.hierarchies[0].own,
            PathBuf::from("user.slice/x.scope")
        );
        assert!(detect_layout("22 1 0:5 / /proc rw - proc proc rw\n", "0::/\n", |_| None).is_err());
        // v2 without the memory controller delegated: not usable.
        assert!(detect_layout(mi, "0::/\n", |_| Some("pids\n".into())).is_err());
    }

    #[test]
    fn mount_points_are_unescaped_and_limits_compared() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert!(same_limit("104857600", "104857600"));
        assert!(same_limit("104857601", "104857600"));
        assert!(!same_limit("104857600", "9223372036854771712"));
        assert!(same_limit("50000 100000", "50000 100000"));
        assert!(!same_limit("50000 100000", "max 100000"));
    }

    /// A fake cgroup v2 mount in a temporary directory: each cgroup a directory with the
    /// interface files the kernel would show (`cgroup.type` on every cgroup but the root).
    struct FakeCgroupFs(tempfile::TempDir);

    impl FakeCgroupFs {
        fn new() -> Self {
            FakeCgroupFs(tempfile::tempdir().unwrap())
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.0.path().join(rel)
        }
        /// A cgroup at `rel` ("" = the root) with its processes and enabled controllers.
        fn cgroup(&self, rel: &str, procs: &[u32], subtree: &str) {
            let dir = self.path(rel);
            std::fs::create_dir_all(&dir).unwrap();
            let procs: String = procs.iter().map(|p| format!("{p}\n")).collect();
            std::fs::write(dir.join("cgroup.procs"), procs).unwrap();
            std::fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
            std::fs::write(
                dir.join("cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            )
            .unwrap();
            if !rel.is_empty() {
                std::fs::write(dir.join("cgroup.type"), "domain\n").unwrap();
            }
        }
        fn read(&self, rel: &str) -> String {
            std::fs::read_to_string(self.path(rel)).unwrap_or_default()
        }
        fn layout(&self, own: &str) -> Layout {
            Layout {
                version: CgroupVersion::V2,
                hierarchies: vec![Hierarchy {
                    controllers: vec![Controller::Memory, Controller::Cpu],
                    mount: self.0.path().to_path_buf(),
                    own: own.into(),
                }],
            }
        }
    }

    fn config(parent: &str) -> SandboxConfig {
        let raw = [("CGROUP_PARENT".to_string(), parent.to_string())]
            .into_iter()
            .collect();
        crate::config::Config::from_map(&raw).unwrap().sandbox
    }

    #[test]
    fn a_private_cgroup_namespace_is_used_after_moving_the_executor_to_a_leaf() {
        // `docker run --cgroupns=private` with a writable cgroupfs: the container's cgroup is
        // the namespace's root but not the hierarchy's, and holds the container's processes.
        let fs = FakeCgroupFs::new();
        fs.cgroup("", &[1, 7], "");
        std::fs::write(fs.path("cgroup.type"), "domain\n").unwrap();
        let (version, made) = make_slots(&fs.layout(""), 2, &config("slots")).unwrap();
        assert_eq!(version, CgroupVersion::V2);
        // The processes left for the leaf before the controllers were handed down.
        assert!(fs.path("executor").is_dir());
        assert_eq!(
            fs.read("executor/cgroup.procs"),
            "7",
            "the last pid written"
        );
        assert_eq!(fs.read("cgroup.subtree_control"), "+memory +cpu");
        assert_eq!(fs.read("slots/cgroup.subtree_control"), "+memory +cpu");
        assert_eq!(
            made[0].slot_dirs,
            vec![fs.path("slots/slot-0"), fs.path("slots/slot-1")]
        );
        assert_eq!(
            fs.read("slots/slot-1/memory.max"),
            (100u64 << 20).to_string()
        );
        assert_eq!(fs.read("slots/slot-1/cpu.max"), "50000 100000");
        assert_eq!(
            made[0].created,
            vec![fs.path("slots")],
            "the leaf is not removed later"
        );
    }

    #[test]
    fn a_systemd_delegated_service_cgroup_holds_the_slots() {
        // Delegate=yes: the root and system.slice already hand memory and cpu down (and are not
        // writable by the service's user); the service's own cgroup is delegated to it.
        let fs = FakeCgroupFs::new();
        fs.cgroup("", &[1], "cpu memory pids");
        fs.cgroup("system.slice", &[], "cpu memory");
        fs.cgroup("system.slice/executor.service", &[4242], "");
        // The root is not ours: here a file stands where the root-level parent would go.
        std::fs::write(fs.path("slots"), "not a cgroup").unwrap();
        let (_, made) = make_slots(
            &fs.layout("system.slice/executor.service"),
            1,
            &config("slots"),
        )
        .unwrap();
        let service = "system.slice/executor.service";
        assert_eq!(
            made[0].slot_dirs,
            vec![fs.path(&format!("{service}/slots/slot-0"))]
        );
        assert_eq!(fs.read(&format!("{service}/executor/cgroup.procs")), "4242");
        assert_eq!(
            fs.read(&format!("{service}/cgroup.subtree_control")),
            "+memory +cpu"
        );
        // What was already handed down is not written again.
        assert_eq!(fs.read("cgroup.subtree_control"), "cpu memory pids");
        assert_eq!(fs.read("system.slice/cgroup.subtree_control"), "cpu memory");
        assert!(!fs.path("executor").exists(), "the root's processes stay");
    }

    #[test]
    fn the_hierarchy_root_keeps_its_processes() {
        // The real root may hold processes and hand controllers down at once: nothing moves.
        let fs = FakeCgroupFs::new();
        fs.cgroup("", &[1, 2, 3], "");
        let (_, made) = make_slots(&fs.layout(""), 1, &config("slots")).unwrap();
        assert!(!fs.path("executor").exists());
        assert_eq!(fs.read("cgroup.subtree_control"), "+memory +cpu");
        assert_eq!(made[0].slot_dirs, vec![fs.path("slots/slot-0")]);
    }

    #[test]
    fn an_undelegated_subtree_is_refused_with_a_pointer_to_the_fix() {
        // Not root, not delegated: a read-only cgroupfs (as Docker mounts it by default).
        let fs = FakeCgroupFs::new();
        fs.cgroup("", &[1], "");
        std::fs::write(fs.path("cgroup.type"), "domain\n").unwrap();
        std::fs::write(fs.path("slots"), "not a cgroup").unwrap();
        let err = make_slots(&fs.layout(""), 1, &config("slots")).unwrap_err();
        assert!(err.contains("delegated cgroup v2 subtree"), "{err}");
    }
}
