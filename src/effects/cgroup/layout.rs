//! The pure part of the cgroup slots: version and layout detection from parsed mount info,
//! the limit files and their values, and the parsing of what the kernel reports. No I/O.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// The CFS period the CPU quota is expressed in, µs: 20 ms, so that a slot's share is handed
/// out in small slices. With the kernel's default 100 ms, a slot at 50 % that had spent its
/// 50 ms (the warm process tearing down the last job's isolate, GC, a burst of the job itself)
/// stalled for up to 50 ms: a trivial job's p99 was 5× its p50. At 10 ms, a trivial warm job
/// (6–8 ms of CPU) no longer fitted in one period's 5 ms and was throttled in nearly every run
/// (p50 up by half); 20 ms lets it finish inside one period. The share is the same.
pub const CPU_PERIOD_US: u64 = 20_000;

/// The CFS burst, as a share of the quota: a slot may carry unused quota over, up to one more
/// period's worth, into the next period (`cpu.max.burst`, v1 `cpu.cfs_burst_us`; Linux ≥ 5.14,
/// written where the kernel offers it). A warm slot idles between jobs, so a trivial job that
/// needs a little more than one period's quota (isolate creation on several threads) finishes
/// without waiting for the next period; the average share stays the quota, and a job that
/// runs on spends the carried-over quota once.
pub const CPU_BURST_PERCENT_OF_QUOTA: u64 = 100;

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
/// enabled, and `cpu_percent` % of one core (`quota = percent × 200` µs per 20 ms period, with
/// a burst of one quota where the kernel has it).
pub fn render_limits(
    version: CgroupVersion,
    memory_bytes: u64,
    cpu_percent: u32,
) -> Vec<LimitFile> {
    let quota = u64::from(cpu_percent) * CPU_PERIOD_US / 100;
    // The kernel refuses a burst above the quota.
    let burst = quota * CPU_BURST_PERCENT_OF_QUOTA.min(100) / 100;
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
            file(Cpu, "cpu.max.burst", burst.to_string(), false),
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
            file(Cpu, "cpu.cfs_burst_us", burst.to_string(), false),
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
) -> Result<Layout, CgroupError> {
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
        (None, _) => Err(CgroupError::NoMemoryHierarchy),
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

/// The leaf cgroup the executor's own processes move to when its cgroup must hand controllers
/// down (cgroup v2 lets only a cgroup without processes of its own do that).
pub const EXECUTOR_LEAF: &str = "executor";

/// Whether a limit read back equals the one written (memory limits are rounded down to pages).
pub fn same_limit(written: &str, read: &str) -> bool {
    if let (Ok(w), Ok(r)) = (written.parse::<u64>(), read.parse::<u64>()) {
        return r <= w && w - r < 65_536;
    }
    written.split_whitespace().eq(read.split_whitespace())
}

impl Controller {
    /// The controller's name in `cgroup.subtree_control` and `/proc/self/cgroup`.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
        }
    }
}

/// The file of a slot's memory cgroup that counts OOM kills (read with `parse_oom_kills`).
pub fn oom_events_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V2 => "memory.events",
        CgroupVersion::V1 => "memory.oom_control",
    }
}

/// The count named `key` in `cpu.stat`: e.g. `nr_throttled` (CFS periods in which the quota
/// throttled) or `nr_bursts` (periods that used carried-over quota; Linux ≥ 5.14).
pub fn parse_cpu_stat(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .find_map(|n| n.trim().parse().ok())
}

/// The directory name of slot `index` under the slots' parent cgroup.
pub fn slot_dir_name(index: usize) -> String {
    format!("slot-{index}")
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

    fn pos_of(limits: &[LimitFile], file: &str) -> usize {
        limits.iter().position(|x| x.file == file).unwrap()
    }

    #[test]
    fn v1_limits() {
        let l = render_limits(CgroupVersion::V1, 100 << 20, 50);
        let get = |f: &str| l.iter().find(|x| x.file == f).map(|x| x.value.as_str());
        assert_eq!(get("memory.limit_in_bytes"), Some("104857600"));
        assert_eq!(get("memory.memsw.limit_in_bytes"), Some("104857600"));
        assert_eq!(get("memory.oom_control"), Some("0"));
        assert_eq!(get("cpu.cfs_period_us"), Some("20000"));
        assert_eq!(get("cpu.cfs_quota_us"), Some("10000"));
        assert_eq!(get("cpu.cfs_burst_us"), Some("10000"));
        // The burst is written after the quota it may not exceed.
        assert!(pos_of(&l, "cpu.cfs_quota_us") < pos_of(&l, "cpu.cfs_burst_us"));
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
        assert_eq!(get("cpu.max"), Some("50000 20000"));
        assert_eq!(get("cpu.max.burst"), Some("50000"));
        assert!(pos_of(&l, "cpu.max") < pos_of(&l, "cpu.max.burst"));
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
    fn throttled_periods_are_parsed() {
        let stat = "usage_usec 100\nnr_periods 10\nnr_throttled 4\nthrottled_usec 9\n";
        assert_eq!(parse_cpu_stat(stat, "nr_throttled"), Some(4));
        assert_eq!(parse_cpu_stat("nr_periods 1\n", "nr_throttled"), None);
        // A key is a whole word: `nr_throttled` is not `nr_throttled_extra`.
        assert_eq!(
            parse_cpu_stat("nr_throttled_extra 9\n", "nr_throttled"),
            None
        );
        assert_eq!(oom_events_file(CgroupVersion::V2), "memory.events");
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
}
