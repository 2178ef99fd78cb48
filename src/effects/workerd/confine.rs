//! What confines a workerd process besides its cgroups, applied between fork and exec: its own
//! mount view without the data directory and the enclave key file, a separate unprivileged
//! user, no core dumps, no new privileges, and a seccomp filter against syscalls it never needs.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Syscalls workerd never makes that open the kernel (or other processes) to a runtime
/// escape: debugging other processes, namespaces and mounts, kernel modules and keyrings, BPF,
/// perf, userfaultfd and io_uring (frequent exploit primitives), clock and system changes.
/// Each fails with EPERM.
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("acct", libc::SYS_acct),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("personality", libc::SYS_personality),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("mknodat", libc::SYS_mknodat),
];

/// What the sandbox asks for: who workerd runs as, and what it must not see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Separate uid/gid to run workerd as (None: the executor's own).
    pub user: Option<(u32, u32)>,
    /// Directories and files hidden from workerd (the data directory, the enclave key file).
    pub hidden: Vec<PathBuf>,
    /// Rely on file modes only, even where a private mount view is possible (tests of that
    /// fallback).
    pub file_modes_only: bool,
}

/// A path to hide, prepared before fork (no allocation afterwards).
#[derive(Debug, Clone)]
struct Hidden {
    path: CString,
    is_dir: bool,
}

/// The layers in force for every workerd this executor starts.
#[derive(Debug, Clone)]
pub struct Confinement {
    user: Option<(u32, u32)>,
    /// Hide `hidden` in a private mount namespace (needs CAP_SYS_ADMIN).
    mount_namespace: bool,
    hidden: Vec<Hidden>,
    seccomp: Option<BpfProgram>,
    /// Why a layer is missing, for the start-up log.
    notes: Vec<String>,
}

/// The compiled seccomp filter of [`DENIED_SYSCALLS`] for this machine's architecture.
pub fn seccomp_filter() -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = DENIED_SYSCALLS
        .iter()
        // c_long is i64 on every architecture seccompiler supports.
        .map(|(_, nr)| (*nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

impl Confinement {
    /// Nothing but no-new-privileges and no core dumps (for tests of other layers).
    pub fn minimal() -> Self {
        Confinement {
            user: None,
            mount_namespace: false,
            hidden: Vec::new(),
            seccomp: None,
            notes: Vec::new(),
        }
    }

    /// Every layer `request` asks for that this machine allows, each proven by starting
    /// `probe` (workerd `--version`) under it. A separate user that cannot be applied is an
    /// error (the operator asked for it); a missing mount namespace or seccomp is noted.
    pub fn establish(request: &Request, probe: &Path) -> Result<Self, String> {
        let mut hidden = Vec::new();
        for path in &request.hidden {
            let Ok(meta) = std::fs::metadata(path) else {
                continue; // nothing there to hide
            };
            let path = path.canonicalize().unwrap_or_else(|_| path.clone());
            hidden.push(Hidden {
                path: CString::new(path.as_os_str().as_bytes())
                    .map_err(|_| format!("{} contains a NUL byte", path.display()))?,
                is_dir: meta.is_dir(),
            });
        }
        let mut confinement = Confinement {
            user: request.user,
            mount_namespace: !hidden.is_empty() && !request.file_modes_only,
            hidden,
            seccomp: None,
            notes: Vec::new(),
        };
        match seccomp_filter() {
            Ok(bpf) => confinement.seccomp = Some(bpf),
            Err(e) => confinement
                .notes
                .push(format!("no seccomp filter: cannot compile it: {e}")),
        }
        if let Err(e) = confinement.probe(probe) {
            if !confinement.mount_namespace {
                return Err(confinement.hint(e));
            }
            confinement.mount_namespace = false;
            confinement.notes.push(format!(
                "no private mount view ({e}): the data directory and key file are hidden from \
                 workerd by file modes only"
            ));
            if let Err(e) = confinement.probe(probe) {
                if confinement.seccomp.is_none() {
                    return Err(confinement.hint(e));
                }
                confinement.seccomp = None;
                confinement
                    .notes
                    .push(format!("no seccomp filter: the kernel refused it ({e})"));
                confinement.probe(probe).map_err(|e| confinement.hint(e))?;
            }
        }
        if !confinement.mount_namespace && confinement.user.is_some() {
            confinement.check_file_modes()?;
        }
        Ok(confinement)
    }

    /// Adds what a failure to switch users usually means.
    fn hint(&self, e: String) -> String {
        match self.user {
            Some((uid, gid)) => format!(
                "{e} (running workerd as {uid}:{gid}, EXECUTOR_SANDBOX_UID/GID, needs root or \
                 CAP_SETUID, CAP_SETGID, CAP_CHOWN and CAP_KILL)"
            ),
            None => e,
        }
    }

    /// Without a private mount view only file modes keep the sandbox user out: every hidden
    /// path must deny "others" (the sandbox user is neither its owner nor in its group).
    fn check_file_modes(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let Some((uid, gid)) = self.user else {
            return Ok(());
        };
        for hidden in &self.hidden {
            let path = Path::new(std::ffi::OsStr::from_bytes(hidden.path.as_bytes()));
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("cannot check {}: {e}", path.display()))?;
            if meta.mode() & 0o007 != 0 || meta.uid() == uid || meta.gid() == gid {
                return Err(format!(
                    "{} is open to the sandbox user {uid}:{gid} (mode {:o}, owner {}:{}): make it \
                     mode 0600 (a file) or 0700 (a directory), owned by the executor's user",
                    path.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ));
            }
        }
        Ok(())
    }

    /// Starts `probe --version` under this confinement; Err says why it could not run.
    fn probe(&self, probe: &Path) -> Result<(), String> {
        let mut cmd = std::process::Command::new(probe);
        cmd.arg("--version")
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let this = self.clone();
        // SAFETY: `apply` only makes async-signal-safe calls on data prepared before fork.
        unsafe {
            cmd.pre_exec(move || this.apply());
        }
        match cmd.status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("{} --version under it: {status}", probe.display())),
            Err(e) => Err(format!("cannot start {} under it: {e}", probe.display())),
        }
    }

    /// Who workerd runs as (None: the executor's user).
    pub fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    /// What is in force, for the start-up log.
    pub fn describe(&self) -> String {
        let mut layers = vec!["no new privileges".to_string(), "no core dumps".to_string()];
        match self.user {
            Some((uid, gid)) => layers.push(format!("user {uid}:{gid}")),
            None => layers.push("the executor's own user (EXECUTOR_SANDBOX_UID unset)".into()),
        }
        if self.mount_namespace {
            let paths: Vec<String> = self
                .hidden
                .iter()
                .map(|h| h.path.to_string_lossy().into_owned())
                .collect();
            layers.push(format!("private mount view hiding {}", paths.join(", ")));
        }
        if self.seccomp.is_some() {
            layers.push(format!(
                "seccomp filter denying {} syscalls",
                DENIED_SYSCALLS.len()
            ));
        }
        let mut text = layers.join("; ");
        for note in &self.notes {
            text.push_str("; ");
            text.push_str(note);
        }
        text
    }

    /// Whether the data directory and key file are out of workerd's sight (a private mount
    /// view, or another user than the owner of the 0700 / 0600 files).
    pub fn hides_secrets(&self) -> bool {
        self.mount_namespace || self.user.is_some()
    }

    /// Applies every layer to the calling process. For `pre_exec` only: after fork, before
    /// exec, in a single-threaded child.
    ///
    /// # Safety
    /// Makes only async-signal-safe calls (unshare, mount, setrlimit, setgroups, setresgid,
    /// setresuid, prctl, seccomp) on data prepared before the fork, and allocates nothing.
    pub unsafe fn apply(&self) -> io::Result<()> {
        let fail = || Err(io::Error::last_os_error());
        if self.mount_namespace {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            // Nothing done here propagates back to the executor's view.
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            for hidden in &self.hidden {
                let done = if hidden.is_dir {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        hidden.path.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=4k,mode=0000".as_ptr().cast(),
                    )
                } else {
                    libc::mount(
                        c"/dev/null".as_ptr(),
                        hidden.path.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                };
                if done != 0 {
                    return fail();
                }
            }
        }
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
            return fail();
        }
        if let Some((uid, gid)) = self.user {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return fail();
            }
            if libc::getuid() != uid || libc::geteuid() != uid {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail();
        }
        if let Some(bpf) = &self.seccomp {
            if seccompiler::apply_filter(bpf).is_err() {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        Ok(())
    }
}

/// Makes the executor's own process non-dumpable: its memory and `/proc/<pid>/` entries
/// (environ, mem, root — the way into its mount view) are closed to processes of the same
/// user, and it leaves no core dump with its keys.
pub fn harden_executor() -> io::Result<()> {
    // SAFETY: plain prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_names_each_syscall_once() {
        let bpf = seccomp_filter().unwrap();
        assert!(!bpf.is_empty());
        let mut numbers: Vec<_> = DENIED_SYSCALLS.iter().map(|(_, n)| *n).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), DENIED_SYSCALLS.len());
        // What workerd needs is never denied.
        for needed in [
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_mmap,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_epoll_wait,
        ] {
            assert!(!numbers.contains(&needed), "{needed}");
        }
    }

    #[test]
    fn describe_says_what_is_applied() {
        let c = Confinement {
            user: Some((10002, 10002)),
            mount_namespace: true,
            hidden: vec![Hidden {
                path: CString::new("/var/lib/executor/data").unwrap(),
                is_dir: true,
            }],
            seccomp: Some(seccomp_filter().unwrap()),
            notes: vec![],
        };
        let text = c.describe();
        for part in [
            "user 10002:10002",
            "private mount view hiding /var/lib/executor/data",
            "seccomp filter",
            "no new privileges",
            "no core dumps",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
        assert!(c.hides_secrets());
        assert!(!Confinement::minimal().hides_secrets());
    }
}
