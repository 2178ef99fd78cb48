//! The pool of job slots on the filesystem: creates the slot cgroups (delegating controllers,
//! moving the executor to a leaf when it must), writes and checks their limits, hands slots out
//! and removes the cgroups again.
//!
//! The free list is a mutex-protected stack: a slot is held by exactly one run at a time.
//! `try_acquire` takes the topmost free slot that `prefer` says is ready (the composition root
//! passes the sandbox's answer: whether the slot's warm process listens), else the topmost one;
//! but while no free slot is ready and a busy one is, it hands out nothing for up to
//! `READY_WAIT`: the busy slot is free again within a job's time, sooner than a cold start.
//! `cleanup` (also on drop) removes the slot cgroups and any parent it created.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::layout::{
    detect_layout, oom_events_file, parse_oom_kills, render_limits, same_limit, slot_dir_name,
    CgroupVersion, Controller, Hierarchy, Layout, LimitFile, EXECUTOR_LEAF,
};
use super::CgroupError;
use crate::config::SandboxConfig;
use crate::domain::dal::{Slot, Slots};

/// How long free slots that still start are held back while a busy slot is ready. A warm job
/// frees its slot in milliseconds; a workerd started cold takes 60–150 ms on 2 cores, more when
/// several start at once (the jobs recovered after a restart). Past it, slots that still start
/// are handed out until a ready one is taken again (a long job must not hold every job back).
pub const READY_WAIT: Duration = Duration::from_millis(100);

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
    prefer: OnceLock<Preference>,
    ready_wait: Duration,
    /// Since when free slots have been held back for a busy ready one (None: not holding).
    holding_since: Mutex<Option<Instant>>,
}

/// Which slots `try_acquire` takes first.
struct Preference(Box<dyn Fn(usize) -> bool + Send + Sync>);

impl std::fmt::Debug for Preference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Preference")
    }
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
                let why = why.to_string();
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
            prefer: OnceLock::new(),
            ready_wait: READY_WAIT,
            holding_since: Mutex::new(None),
        }
    }

    /// `READY_WAIT` otherwise (zero: never hold a free slot back).
    pub fn with_ready_wait(mut self, wait: Duration) -> Self {
        self.ready_wait = wait;
        self
    }

    /// From now on `try_acquire` takes a free slot for which `ready` holds when there is one
    /// (set once; later calls are ignored). `ready` must not block.
    pub fn prefer(&self, ready: impl Fn(usize) -> bool + Send + Sync + 'static) {
        let _ = self.prefer.set(Preference(Box::new(ready)));
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

    fn make(
        capacity: usize,
        config: &SandboxConfig,
    ) -> Result<(CgroupVersion, Vec<Made>), CgroupError> {
        let read = |path: &str| {
            std::fs::read_to_string(path).map_err(|source| CgroupError::ReadProc {
                path: path.into(),
                source,
            })
        };
        let mountinfo = read("/proc/self/mountinfo")?;
        let proc_cgroup = read("/proc/self/cgroup")?;
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
) -> Result<(CgroupVersion, Vec<Made>), CgroupError> {
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
        let index = {
            let mut free = self.free.lock().ok()?;
            match self.prefer.get() {
                None => free.pop()?,
                Some(Preference(ready)) => {
                    let mut holding = self.holding_since.lock().ok()?;
                    if let Some(at) = free.iter().rposition(|&i| ready(i)) {
                        *holding = None;
                        free.remove(at)
                    } else if free.is_empty() {
                        return None;
                    } else if (0..self.capacity).any(|i| !free.contains(&i) && ready(i)) {
                        // None free is ready, a busy one is: it is free again sooner than a
                        // free one starts, unless its job runs long.
                        let since = *holding.get_or_insert_with(Instant::now);
                        if since.elapsed() < self.ready_wait {
                            return None;
                        }
                        free.pop()?
                    } else {
                        // Nothing is ready: starting one is the only way.
                        *holding = None;
                        free.pop()?
                    }
                }
            }
        };
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
        std::fs::read_to_string(dir.join(oom_events_file(version)))
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
) -> Result<Made, CgroupError> {
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
                reasons.push((base, why));
            }
        }
    }
    Err(CgroupError::NoPlace(reasons))
}

fn try_make(
    version: CgroupVersion,
    h: &Hierarchy,
    base: &Path,
    capacity: usize,
    limits: &[&LimitFile],
    made: &mut Made,
) -> Result<(), CgroupError> {
    // mkdir -p, remembering what we made.
    let rel = base
        .strip_prefix(&h.mount)
        .map_err(|_| CgroupError::OutsideMount)?;
    let mut dir = h.mount.clone();
    let mut chain = vec![dir.clone()];
    for part in rel.components() {
        dir.push(part);
        chain.push(dir.clone());
        match std::fs::create_dir(&dir) {
            Ok(()) => made.created.push(dir.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Mkdir { path: dir, source }),
        }
    }
    if version == CgroupVersion::V2 {
        let own = h.mount.join(&h.own);
        for d in &chain {
            delegate_controllers(d, &own, &h.controllers)?;
        }
    }
    for index in 0..capacity {
        let slot = base.join(slot_dir_name(index));
        // A slot left by an earlier run of the executor is reused with fresh limits.
        if let Err(source) = std::fs::create_dir(&slot) {
            if source.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(CgroupError::Mkdir { path: slot, source });
            }
        }
        made.slot_dirs.push(slot.clone());
        apply_limits(&slot, limits)?;
    }
    Ok(())
}

/// cgroup v2: makes `dir` hand the controllers on to its children, unless it already does (a
/// delegating parent such as systemd's `Delegate=yes` or a private cgroup namespace did it).
/// When `dir` is the executor's own, non-root cgroup and holds processes, they first move to
/// its leaf `executor`: then the delegated subtree can hold the slots beside it.
fn delegate_controllers(
    dir: &Path,
    own: &Path,
    controllers: &[Controller],
) -> Result<(), CgroupError> {
    let names: Vec<&str> = controllers.iter().map(|c| c.name()).collect();
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
    std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" ")).map_err(|source| {
        CgroupError::Delegate {
            enable: enable.join(" "),
            dir: dir.to_path_buf(),
            source,
        }
    })
}

/// Moves every process of cgroup `dir` into `dir/executor`.
fn move_processes_to_leaf(dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.procs");
    let procs =
        std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    let pids: Vec<&str> = procs.split_whitespace().collect();
    if pids.is_empty() {
        return Ok(());
    }
    let leaf = dir.join(EXECUTOR_LEAF);
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(CgroupError::Mkdir { path: leaf, source }),
    }
    for pid in pids {
        match std::fs::write(leaf.join("cgroup.procs"), pid) {
            Ok(()) => {}
            // Gone meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::MoveProcess {
                    pid: pid.to_string(),
                    leaf,
                    source,
                })
            }
        }
    }
    tracing::info!(leaf = %leaf.display(), "moved the executor's processes to a leaf cgroup so its cgroup can hold the slots");
    Ok(())
}

/// Writes the limits (a second pass fixes order dependencies, e.g. v1 memsw ≥ limit), then
/// reads the required ones back.
fn apply_limits(dir: &Path, limits: &[&LimitFile]) -> Result<(), CgroupError> {
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
                return Err(CgroupError::Write {
                    value: l.value.clone(),
                    path: dir.join(l.file),
                    source: e,
                });
            }
            tracing::debug!(
                "optional cgroup file {} not set: {e}",
                dir.join(l.file).display()
            );
        }
    }
    for l in present.iter().filter(|l| l.required) {
        let path = dir.join(l.file);
        let read = match std::fs::read_to_string(&path) {
            Ok(read) => read,
            Err(source) => return Err(CgroupError::Read { path, source }),
        };
        if !same_limit(&l.value, read.trim()) {
            return Err(CgroupError::ReadBack {
                path,
                read: read.trim().to_string(),
                written: l.value.clone(),
            });
        }
    }
    Ok(())
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
pub fn rmdir_patiently(dir: &Path) -> std::io::Result<()> {
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
        assert_eq!(fs.read("slots/slot-1/cpu.max"), "10000 20000");
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
        let err = make_slots(&fs.layout(""), 1, &config("slots"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("delegated cgroup v2 subtree"), "{err}");
    }

    fn three_unlimited_slots(ready_wait: Duration) -> CgroupSlots {
        CgroupSlots {
            capacity: 3,
            free: Mutex::new(vec![2, 1, 0]),
            limits: Limits::Unenforced { why: "test".into() },
            cleaned: AtomicBool::new(false),
            prefer: OnceLock::new(),
            ready_wait,
            holding_since: Mutex::new(None),
        }
    }

    #[test]
    fn ready_slots_are_taken_first() {
        let slots = three_unlimited_slots(Duration::ZERO);
        // Without a preference: the top of the stack.
        let first = slots.try_acquire().unwrap();
        assert_eq!(first.index, 0);
        slots.release(first);
        // Slot 0 (on top) still starts; 2 listens.
        slots.prefer(|index| index == 2);
        assert_eq!(slots.try_acquire().unwrap().index, 2);
        // None of the free ones is ready (and no wait for the busy one): the top one.
        assert_eq!(slots.try_acquire().unwrap().index, 0);
        assert_eq!(slots.try_acquire().unwrap().index, 1);
        assert!(slots.try_acquire().is_none());
    }

    #[test]
    fn free_slots_that_still_start_wait_briefly_for_a_busy_ready_one() {
        let slots = three_unlimited_slots(Duration::from_millis(200));
        // Only slot 2 listens, and a job holds it.
        slots.prefer(|index| index == 2);
        let ready = slots.try_acquire().unwrap();
        assert_eq!(ready.index, 2);
        assert!(
            slots.try_acquire().is_none(),
            "held back for the busy ready slot"
        );
        // Its job ends: the ready slot goes out again, not one that still starts.
        slots.release(ready);
        let again = slots.try_acquire().unwrap();
        assert_eq!(again.index, 2);
        // A long job: once the wait is over, the slots that still start go out, one after
        // the other without a new wait.
        assert!(slots.try_acquire().is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(slots.try_acquire().unwrap().index, 0);
        assert_eq!(slots.try_acquire().unwrap().index, 1);
    }

    #[test]
    fn with_nothing_ready_a_slot_that_still_starts_goes_out_at_once() {
        let slots = three_unlimited_slots(Duration::from_secs(60));
        slots.prefer(|_| false);
        assert_eq!(slots.try_acquire().unwrap().index, 0);
        assert_eq!(slots.try_acquire().unwrap().index, 1);
    }
}
