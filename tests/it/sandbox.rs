//! The sandbox against real workerd and, where this machine allows, real cgroups.
//! Run with `cargo test --test it sandbox::`. The `Slots` and `Sandbox` contract suites
//! (`domain::testing`) run here against the real adapters (`CgroupSlots`, `WorkerdSandbox`); the
//! domain's unit tests run them over its stubs.
//! Cgroup-specific assertions print "SKIP: cgroups not available: <why>" when they cannot run.
//! Every sandbox test runs in both modes (`<test>::process` and `<test>::warm`); the `warm_*`
//! tests check what only warm slots promise: no state from one job to the next, and a job that
//! fails its slot restarts that slot's workerd only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serverless_executor::config::{default_workerd_path, EgressPolicy, SandboxConfig, SandboxMode};
use serverless_executor::domain::dal::{RunResult, Sandbox, SandboxError, Slot, Slots};
use serverless_executor::domain::testing::{
    sandbox_contract, slots_contract, ECHO_JOB, NO_SECRET, SECRET_JOB,
};
use serverless_executor::effects::cgroup::{CgroupSlots, CgroupVersion};
use serverless_executor::effects::workerd::{RunReport, WorkerdSandbox};

const PRIMES_JOB: &str = r#"
export default {
  async fetch(request) {
    let body;
    try {
      body = await request.json();
    } catch {
      return new Response("invalid input", { status: 400 });
    }
    const n = body === null || typeof body !== "object" ? undefined : body.num;
    if (!Number.isSafeInteger(n) || n < 2) {
      return new Response("invalid input", { status: 400 });
    }
    const factors = [];
    let m = n;
    for (let d = 2; d * d <= m; d++) {
      while (m % d === 0) {
        factors.push(d);
        m /= d;
      }
    }
    if (m > 1) factors.push(m);
    return new Response(factors.join(","));
  },
};
"#;

/// Fetches every URL of the JSON array it gets; says per URL what happened.
const FETCH_JOB: &str = r#"
export default {
  async fetch(request) {
    const lines = [];
    for (const url of await request.json()) {
      try {
        const response = await fetch(url);
        lines.push(`reached ${url} ${response.status}`);
      } catch (e) {
        lines.push(`refused ${url}: ${e.message}`);
      }
    }
    return new Response(lines.join("\n"));
  },
};
"#;

const LOOP_JOB: &str = "export default { fetch() { while (true) {} } };";
const MEMORY_BOMB_JOB: &str = r#"
export default {
  fetch() {
    const hoard = [];
    while (true) hoard.push(new Array(1 << 20).fill(1.5));
  },
};
"#;
const THROW_JOB: &str = "export default { fetch() { throw new Error(\"boom from the job\"); } };";

fn sandbox_init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A config for one test: its own scratch dir and its own cgroup parent.
fn sandbox_config(work_dir: &Path, test: &str) -> SandboxConfig {
    SandboxConfig {
        workerd_path: default_workerd_path(),
        mode: SandboxMode::Process,
        slot_memory_bytes: 100 * 1024 * 1024,
        slot_cpu_percent: 50,
        output_limit_bytes: 20480,
        egress: EgressPolicy::Public,
        cgroup_parent: format!("serverless-executor-test-{}-{test}", std::process::id()),
        work_dir: work_dir.to_path_buf(),
        sandbox_user: test_sandbox_user(),
        hidden_paths: Vec::new(),
        allow_unlimited_slots: false,
    }
}

/// Run as root, every sandbox test runs workerd as `nobody` (65534:65534), as a deployment
/// with EXECUTOR_SANDBOX_UID/GID does; otherwise as this user.
fn test_sandbox_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0).then_some((65534, 65534))
}

fn unlimited_slot() -> Slot {
    Slot {
        index: 0,
        cgroup_procs: Vec::new(),
    }
}

fn sandbox_new(
    work: &tempfile::TempDir,
    egress: EgressPolicy,
    mode: SandboxMode,
) -> WorkerdSandbox {
    let mut config = sandbox_config(work.path(), "unused");
    config.egress = egress;
    config.mode = mode;
    WorkerdSandbox::new(&config).expect("workerd is installed (tools/install.sh)")
}

/// Stops the sandbox (warm mode: kills the slots' processes) and checks nothing is left.
fn finish(sandbox: WorkerdSandbox, work: &tempfile::TempDir) {
    drop(sandbox);
    assert_dir_empty(work.path());
}

/// Runs the sandbox test `$name(mode)` once per sandbox mode, as `$name::process` and `$name::warm`.
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn process() {
                super::$name(SandboxMode::Process).await
            }
            #[tokio::test]
            async fn warm() {
                super::$name(SandboxMode::Warm).await
            }
        }
    )*};
}

both_modes!(
    prime_factorisation_and_invalid_input,
    code_that_does_not_load_is_a_load_failure,
    deadline_kills_workerd,
    cancelled_run_leaves_no_process_or_directory,
    output_limit,
    uncaught_exception_gives_workerds_error_body,
    binary_and_utf8_pass_unchanged,
    version_and_self_check,
    egress_to_loopback_is_refused_and_nothing_arrives,
    egress_to_metadata_private_and_link_local_is_refused,
    public_egress_tries_public_addresses_and_none_refuses_them,
    egress_to_ipv4_compatible_ipv6_is_refused,
    egress_to_ipv4_mapped_ipv6_is_refused,
    egress_to_ipv4_translated_ipv6_is_refused,
    egress_to_6to4_is_refused,
    egress_to_teredo_is_refused,
    egress_to_nat64_is_refused,
    egress_to_local_use_nat64_is_refused,
    no_egress_resolves_no_names,
    memory_bomb_is_contained,
    concurrent_runs_one_per_slot,
    sandbox_contract_holds_for_workerd,
    secret_reaches_the_job_as_an_array_buffer_and_the_only_env_key,
    binary_secret_arrives_intact,
    job_without_a_secret_has_no_secret_key,
    a_job_cannot_see_an_earlier_or_a_concurrent_jobs_secret,
);

fn assert_dir_empty(dir: &Path) {
    let left: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("work dir exists")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "run directories left behind: {left:?}");
}

fn output(result: Result<RunResult, SandboxError>) -> String {
    match result {
        Ok(RunResult::Output(bytes)) => String::from_utf8(bytes).expect("UTF-8 output"),
        other => panic!("expected an output, got {other:?}"),
    }
}

fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

async fn prime_factorisation_and_invalid_input(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let slot = unlimited_slot();
    let (a, b, c, d) = tokio::join!(
        sandbox.run(&slot, PRIMES_JOB, br#"{"num":600}"#, None, 30_000),
        sandbox.run(&slot, PRIMES_JOB, br#"{"num":10}"#, None, 30_000),
        sandbox.run(&slot, PRIMES_JOB, b"not json", None, 30_000),
        sandbox.run(&slot, PRIMES_JOB, br#"{"number":10}"#, None, 30_000),
    );
    assert_eq!(output(a), "2,2,2,3,5,5");
    assert_eq!(output(b), "2,5");
    assert_eq!(output(c), "invalid input");
    assert_eq!(output(d), "invalid input");
    finish(sandbox, &work);
}

async fn code_that_does_not_load_is_a_load_failure(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let slot = unlimited_slot();
    let syntax = "export default { async fetch(r) { return new Response(await r.text() } }";
    let (syntax, named_only, no_exports, no_fetch) = tokio::join!(
        sandbox.run_detailed(&slot, syntax, b"x", None, 30_000),
        sandbox.run_detailed(&slot, "export const x = 1;", b"x", None, 30_000),
        sandbox.run_detailed(&slot, "const y = 1;", b"x", None, 30_000),
        sandbox.run_detailed(&slot, "export default {};", b"x", None, 30_000),
    );
    let message = |r: Result<RunReport, SandboxError>| match r.expect("no sandbox error").result {
        RunResult::LoadFailed(m) => m,
        other => panic!("expected LoadFailed, got {other:?}"),
    };
    let syntax = message(syntax);
    assert!(syntax.contains("SyntaxError"), "{syntax}");
    for m in [message(named_only), message(no_exports), message(no_fetch)] {
        assert!(
            m.contains("no default export with a fetch() handler"),
            "{m}"
        );
    }
    finish(sandbox, &work);
}

async fn deadline_kills_workerd(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let report = sandbox
        .run_detailed(&unlimited_slot(), LOOP_JOB, b"x", None, 1_500)
        .await
        .unwrap();
    assert_eq!(report.result, RunResult::DeadlineExceeded);
    assert!(report.pid != 0);
    assert!(
        process_gone(report.pid),
        "workerd {} still exists",
        report.pid
    );
    finish(sandbox, &work);
}

async fn cancelled_run_leaves_no_process_or_directory(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let slot = unlimited_slot();
    let run = sandbox.run(&slot, LOOP_JOB, b"x", None, 60_000);
    assert!(tokio::time::timeout(Duration::from_millis(800), run)
        .await
        .is_err());
    // The guard removed the directory at once and killed the process group.
    assert_dir_empty(work.path());
    let prefix = work.path().canonicalize().unwrap();
    for _ in 0..100 {
        if !live_process_under(&prefix) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a workerd of the cancelled run is still alive");
}

/// Whether a live (non-zombie) process has its working directory under `dir`.
fn live_process_under(dir: &Path) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cwd = std::fs::read_link(e.path().join("cwd"));
        matches!(cwd, Ok(p) if p.starts_with(dir))
    })
}

async fn output_limit(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let slot = unlimited_slot();
    let job = |n: usize| {
        format!("export default {{ fetch() {{ return new Response(\"x\".repeat({n})); }} }};")
    };
    let (at, past) = (job(20480), job(20481));
    let (at_limit, over, streamed) = tokio::join!(
        sandbox.run(&slot, &at, b"", None, 30_000),
        sandbox.run(&slot, &past, b"", None, 30_000),
        // A streamed (chunked) body that never ends is cut at the limit too.
        sandbox.run(
            &slot,
            "export default { fetch() { const chunk = new Uint8Array(4096); \
             return new Response(new ReadableStream({ pull(c) { c.enqueue(chunk); } })); } };",
            b"",
            None,
            30_000
        ),
    );
    assert_eq!(output(at_limit).len(), 20480);
    assert_eq!(over, Ok(RunResult::OutputTooLarge));
    assert_eq!(streamed, Ok(RunResult::OutputTooLarge));
    finish(sandbox, &work);
}

async fn uncaught_exception_gives_workerds_error_body(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let report = sandbox
        .run_detailed(&unlimited_slot(), THROW_JOB, b"x", None, 30_000)
        .await
        .unwrap();
    assert_eq!(
        report.result,
        RunResult::Output(b"Internal Server Error".to_vec())
    );
    assert!(
        report.stderr.contains("boom from the job"),
        "{}",
        report.stderr
    );
    finish(sandbox, &work);
}

async fn binary_and_utf8_pass_unchanged(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let slot = unlimited_slot();
    let binary: Vec<u8> = (0..=255u8).collect();
    let utf8 = "héllo wörld — 日本語 — 🎉🦀 ∑ ﷽".as_bytes().to_vec();
    let (b, u) = tokio::join!(
        sandbox.run(&slot, ECHO_JOB, &binary, None, 30_000),
        sandbox.run(&slot, ECHO_JOB, &utf8, None, 30_000),
    );
    assert_eq!(b, Ok(RunResult::Output(binary)));
    assert_eq!(u, Ok(RunResult::Output(utf8)));
    finish(sandbox, &work);
}

#[tokio::test]
async fn missing_binary_is_a_sandbox_error() {
    let work = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(work.path(), "unused");
    config.workerd_path = work.path().join("no-such-workerd");
    let err = WorkerdSandbox::new(&config).unwrap_err();
    assert!(err.0.contains("no-such-workerd"), "{err}");
}

async fn version_and_self_check(mode: SandboxMode) {
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::None, mode);
    let version = sandbox.version().await.unwrap();
    assert!(version.starts_with("workerd "), "{version}");
    sandbox.self_check().await.unwrap();
    finish(sandbox, &work);
}

/// A loopback HTTP server that counts the connections it accepts.
async fn counting_server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            use tokio::io::AsyncWriteExt;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
                .await;
        }
    });
    (port, hits)
}

fn urls(list: &[String]) -> Vec<u8> {
    serde_json::to_vec(list).unwrap()
}

/// Each URL's line says "refused": under `public`, workerd logged its policy refusal for each
/// address; under `none`, the job's request never reached a network service at all (no name
/// was resolved, no address considered).
fn assert_refused(egress: EgressPolicy, report: &RunReport, targets: &[(&str, &str)]) {
    let text = match &report.result {
        RunResult::Output(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("expected an output, got {other:?}"),
    };
    for (url, address) in targets {
        match egress {
            EgressPolicy::Public => {
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&format!("refused {url}:"))),
                    "{url} not refused:\n{text}"
                );
                let logged = format!("connecting to {address} is not allowed");
                assert!(
                    report.stderr.contains(&logged),
                    "no '{logged}' in workerd's log:\n{}",
                    report.stderr
                );
            }
            EgressPolicy::None => {
                let line = format!("refused {url}: no network access");
                assert!(
                    text.lines().any(|l| l.starts_with(&line)),
                    "{url} not refused without a network:\n{text}"
                );
                assert!(
                    !report.stderr.contains("connecting to"),
                    "a network service saw the request:\n{}",
                    report.stderr
                );
            }
        }
    }
}

async fn egress_to_loopback_is_refused_and_nothing_arrives(mode: SandboxMode) {
    sandbox_init_logs();
    let (port, hits) = counting_server().await;
    // The server works (so "no request" below means refused, not broken).
    let probe = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(probe.is_ok());
    drop(probe);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let baseline = hits.load(Ordering::SeqCst);

    for egress in [EgressPolicy::Public, EgressPolicy::None] {
        let work = tempfile::tempdir().unwrap();
        let sandbox = sandbox_new(&work, egress, mode);
        let list = vec![
            format!("http://127.0.0.1:{port}/secret"),
            format!("http://localhost:{port}/secret"),
            format!("http://[::ffff:127.0.0.1]:{port}/secret"),
        ];
        let report = sandbox
            .run_detailed(&unlimited_slot(), FETCH_JOB, &urls(&list), None, 30_000)
            .await
            .unwrap();
        assert_refused(
            egress,
            &report,
            &[
                (&list[0], &format!("127.0.0.1:{port}")),
                (&list[1], &format!("localhost:{port}")),
            ],
        );
        finish(sandbox, &work);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        baseline,
        "the loopback server was reached"
    );
}

/// Runs `f` on a thread of its own inside a new, empty network namespace (no interface up,
/// no route), so nothing the sandbox tries can leave this machine. None if not permitted.
fn in_empty_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    std::thread::spawn(move || {
        // SAFETY: plain syscall; it changes only this new thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

fn run_in_netns(
    egress: EgressPolicy,
    mode: SandboxMode,
    list: Vec<String>,
) -> Result<RunReport, String> {
    in_empty_netns(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let work = tempfile::tempdir().unwrap();
            let sandbox = sandbox_new(&work, egress, mode);
            let report = sandbox
                .run_detailed(&unlimited_slot(), FETCH_JOB, &urls(&list), None, 30_000)
                .await
                .unwrap();
            finish(sandbox, &work);
            report
        })
    })
}

async fn egress_to_metadata_private_and_link_local_is_refused(mode: SandboxMode) {
    sandbox_init_logs();
    let list = vec![
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://[fe80::1]/".to_string(),
        "http://100.100.100.200/".to_string(),
    ];
    let targets = [
        (list[0].as_str(), "169.254.169.254:80"),
        (list[1].as_str(), "10.0.0.1:80"),
        (list[2].as_str(), "192.168.1.1:80"),
        (list[3].as_str(), "fe80::1:80"),
        (list[4].as_str(), "100.100.100.200:80"),
    ];
    for egress in [EgressPolicy::Public, EgressPolicy::None] {
        // In an empty network namespace nothing can leave even if the policy were wrong.
        let report = match run_in_netns(egress, mode, list.clone()) {
            Ok(report) => report,
            Err(why) => {
                // The loopback test has shown the same policy refusing before connecting.
                println!("note: no empty network namespace ({why}); testing in this one");
                let work = tempfile::tempdir().unwrap();
                sandbox_new(&work, egress, mode)
                    .run_detailed(&unlimited_slot(), FETCH_JOB, &urls(&list), None, 30_000)
                    .await
                    .unwrap()
            }
        };
        assert_refused(egress, &report, &targets);
    }
}

async fn public_egress_tries_public_addresses_and_none_refuses_them(mode: SandboxMode) {
    sandbox_init_logs();
    // Only inside an empty network namespace: nothing is ever sent to a public address.
    let list = vec!["http://1.1.1.1/".to_string()];
    let public = run_in_netns(EgressPolicy::Public, mode, list.clone());
    let none = run_in_netns(EgressPolicy::None, mode, list.clone());
    let (public, none) = match (public, none) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(why), _) | (_, Err(why)) => {
            println!("SKIP: no empty network namespace to test public egress in: {why}");
            return;
        }
    };
    // Public: workerd tried to connect (and found no network); None: refused by policy.
    assert!(
        !public.stderr.contains("is not allowed"),
        "public egress refused a public address:\n{}",
        public.stderr
    );
    assert!(matches!(&public.result, RunResult::Output(o) if o.starts_with(b"refused")));
    assert_refused(
        EgressPolicy::None,
        &none,
        &[("http://1.1.1.1/", "1.1.1.1:80")],
    );
}

/// The IPv6 forms that carry an IPv4 address, each spelling 127.0.0.1, with the range that
/// must refuse it.
const IPV6_FORMS_OF_LOOPBACK: &[(&str, &str)] = &[
    ("::7f00:1", "::/96 (IPv4-compatible)"),
    ("::ffff:7f00:1", "::ffff:0:0/96 (IPv4-mapped)"),
    ("::ffff:0:7f00:1", "::ffff:0:0:0/96 (IPv4-translated)"),
    ("2002:7f00:1::1", "2002::/16 (6to4)"),
    ("2001:0:7f00:1::1", "2001::/32 (Teredo)"),
    ("64:ff9b::7f00:1", "64:ff9b::/96 (NAT64)"),
    ("64:ff9b:1::7f00:1", "64:ff9b:1::/48 (local-use NAT64)"),
];

/// In a new network namespace whose loopback also answers on every IPv6 form above (as a
/// relay or translator would make them reach 127.0.0.1), a dual-stack listener counts every
/// connection; a job fetches `form` under both egress policies and must never reach it.
async fn egress_to_ipv6_form_is_refused_and_nothing_arrives(mode: SandboxMode, form: &'static str) {
    sandbox_init_logs();
    let forms: Vec<&(&str, &str)> = IPV6_FORMS_OF_LOOPBACK
        .iter()
        .filter(|(address, _)| *address == form)
        .collect();
    assert_eq!(forms.len(), 1, "{form} is one of IPV6_FORMS_OF_LOOPBACK");
    let outcome = in_empty_netns(move || {
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !matches!(up, Ok(s) if s.success()) {
            return Err(format!("cannot bring lo up with `ip`: {up:?}"));
        }
        for (address, _) in IPV6_FORMS_OF_LOOPBACK {
            if address.starts_with("::ffff:7f00") {
                continue; // the kernel maps it to 127.0.0.1 itself
            }
            let added = std::process::Command::new("ip")
                .args(["-6", "addr", "add", &format!("{address}/128"), "dev", "lo"])
                .status();
            if !matches!(added, Ok(s) if s.success()) {
                return Err(format!("cannot add {address} to lo: {added:?}"));
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Ok(runtime.block_on(async move {
            // [::] without V6ONLY: every IPv6 address above and 127.0.0.1.
            let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let hits = Arc::new(AtomicUsize::new(0));
            let counter = hits.clone();
            tokio::spawn(async move {
                while let Ok((_stream, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
            // The listener is reachable on each form (so "no connection" means refused).
            for (address, form) in IPV6_FORMS_OF_LOOPBACK {
                let ip: std::net::Ipv6Addr = address.parse().unwrap();
                let probe = tokio::net::TcpStream::connect((ip, port)).await;
                assert!(
                    probe.is_ok(),
                    "{form}: the listener is not reachable: {probe:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let baseline = hits.load(Ordering::SeqCst);
            assert_eq!(baseline, IPV6_FORMS_OF_LOOPBACK.len());
            let list = vec![format!("http://[{form}]:{port}/secret")];
            let mut reports = Vec::new();
            for egress in [EgressPolicy::Public, EgressPolicy::None] {
                let work = tempfile::tempdir().unwrap();
                let sandbox = sandbox_new(&work, egress, mode);
                let report = sandbox
                    .run_detailed(&unlimited_slot(), FETCH_JOB, &urls(&list), None, 30_000)
                    .await
                    .unwrap();
                finish(sandbox, &work);
                reports.push((egress, report));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            (port, list, reports, hits.load(Ordering::SeqCst) - baseline)
        }))
    });
    let (port, list, reports, reached) = match outcome {
        Ok(Ok(found)) => found,
        Ok(Err(why)) | Err(why) => {
            println!("SKIP: no network namespace with IPv6 forms of loopback: {why}");
            return;
        }
    };
    for (egress, report) in &reports {
        let address = format!("{form}:{port}");
        assert_refused(*egress, report, &[(list[0].as_str(), address.as_str())]);
    }
    assert_eq!(
        reached, 0,
        "a job reached the listener through {} {form}",
        forms[0].1
    );
}

async fn egress_to_ipv4_compatible_ipv6_is_refused(mode: SandboxMode) {
    egress_to_ipv6_form_is_refused_and_nothing_arrives(mode, "::7f00:1").await
}

async fn egress_to_ipv4_mapped_ipv6_is_refused(mode: SandboxMode) {
    egress_to_ipv6_form_is_refused_and_nothing_arrives(mode, "::ffff:7f00:1").await
}

async fn egress_to_ipv4_translated_ipv6_is_refused(mode: SandboxMode) {
    egress_to_ipv6_form_is_refused_and_nothing_arrives(mode, "::ffff:0:7f00:1").await
}

async fn egress_to_6to4_is_refused(mode: SandboxMode) {
    egress_to_ipv6_form_is_refused_and_nothing_arrives(mode, "2002:7f00:1::1").await
}

async fn egress_to_teredo_is_refused(mode: SandboxMode) {
    egress_to_ipv6_form_is_refused_and_nothing_arrives(mode, "2001:0:7f00:1::1").await
}

async fn egress_to_nat64_is_refused(mode: SandboxMode) {
    egress_to_ipv6_form_is_refused_and_nothing_arrives(mode, "64:ff9b::7f00:1").await
}

async fn egress_to_local_use_nat64_is_refused(mode: SandboxMode) {
    egress_to_ipv6_form_is_refused_and_nothing_arrives(mode, "64:ff9b:1::7f00:1").await
}

/// `none` gives the job no network service: a host name is never resolved (a DNS query would
/// carry data out), the request is refused before anything is looked up.
async fn no_egress_resolves_no_names(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::None, mode);
    let list = vec![
        "http://secret-data.exfil-probe.invalid/".to_string(),
        "http://localhost/".to_string(),
    ];
    let report = sandbox
        .run_detailed(&unlimited_slot(), FETCH_JOB, &urls(&list), None, 30_000)
        .await
        .unwrap();
    finish(sandbox, &work);
    assert_refused(
        EgressPolicy::None,
        &report,
        &[(&list[0], "unused"), (&list[1], "unused")],
    );
    let text = String::from_utf8_lossy(match &report.result {
        RunResult::Output(bytes) => bytes,
        other => panic!("expected an output, got {other:?}"),
    })
    .into_owned();
    assert!(
        !text.to_lowercase().contains("dns") && !report.stderr.to_lowercase().contains("dns"),
        "a name was looked up:\n{text}\n{}",
        report.stderr
    );
}

fn cgroup_slots(capacity: usize, work: &Path, test: &str) -> CgroupSlots {
    CgroupSlots::new(capacity, &sandbox_config(work, test))
}

fn skip_reason(slots: &CgroupSlots) -> Option<String> {
    slots
        .unenforced_reason()
        .map(|why| format!("SKIP: cgroups not available: {why}"))
}

async fn memory_bomb_is_contained(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let slots = cgroup_slots(1, work.path(), &format!("memory-bomb-{mode:?}"));
    let slot = slots.try_acquire().unwrap();
    if let Some(skip) = skip_reason(&slots) {
        println!("{skip} (the bomb runs without a limit, until V8's own heap limit)");
    } else {
        let memory_dir = slots
            .slot_dirs(slot.index)
            .into_iter()
            .find(|d| d.join("memory.max").exists() || d.join("memory.limit_in_bytes").exists())
            .expect("a memory cgroup");
        let file = match slots.version() {
            Some(CgroupVersion::V2) => "memory.max",
            _ => "memory.limit_in_bytes",
        };
        let limit = std::fs::read_to_string(memory_dir.join(file)).unwrap();
        assert_eq!(limit.trim(), (100u64 * 1024 * 1024).to_string());
    }
    let before = slots.oom_kills(&slot);
    let report = sandbox
        .run_detailed(&slot, MEMORY_BOMB_JOB, b"x", None, 20_000)
        .await
        .expect("the sandbox itself survives");
    let after = slots.oom_kills(&slot);
    println!(
        "memory bomb: {:?} (workerd exit: {:?}; OOM kills in the slot {before} -> {after}; {:?})",
        report.result, report.exit, report.elapsed
    );
    assert!(process_gone(report.pid));
    if slots.enforced() {
        assert!(
            after > before,
            "the slot's OOM killer did not fire; result {:?}, stderr:\n{}",
            report.result,
            report.stderr
        );
        assert!(
            matches!(report.result, RunResult::Crashed(_)),
            "{:?}",
            report.result
        );
    }
    // The slot still works after the kill.
    let echo = sandbox
        .run(&slot, ECHO_JOB, b"still alive", None, 30_000)
        .await;
    assert_eq!(echo, Ok(RunResult::Output(b"still alive".to_vec())));
    slots.release(slot);
    finish(sandbox, &work);
    slots.cleanup();
}

async fn concurrent_runs_one_per_slot(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = Arc::new(sandbox_new(&work, EgressPolicy::Public, mode));
    let slots = cgroup_slots(4, work.path(), &format!("concurrent-{mode:?}"));
    if let Some(skip) = skip_reason(&slots) {
        println!("{skip} (the runs go unlimited)");
    }
    let held: Vec<Slot> = (0..4).map(|_| slots.try_acquire().unwrap()).collect();
    assert!(slots.try_acquire().is_none());
    let mut tasks = Vec::new();
    for (n, slot) in held.iter().cloned().enumerate() {
        let sandbox = sandbox.clone();
        tasks.push(tokio::spawn(async move {
            let input = format!("{{\"num\":{}}}", [600, 10, 97, 1024][n]);
            let result = sandbox
                .run(&slot, PRIMES_JOB, input.as_bytes(), None, 60_000)
                .await;
            (n, result)
        }));
    }
    let expected = ["2,2,2,3,5,5", "2,5", "97", "2,2,2,2,2,2,2,2,2,2"];
    let mut seen = BTreeSet::new();
    for task in tasks {
        let (n, result) = task.await.unwrap();
        assert_eq!(output(result), expected[n], "run {n}");
        seen.insert(n);
    }
    assert_eq!(seen.len(), 4);
    for slot in held {
        slots.release(slot);
    }
    assert_eq!(slots.busy(), 0);
    // Warm processes live in the slots' cgroups until the sandbox goes.
    let sandbox = Arc::try_unwrap(sandbox).expect("no run holds the sandbox");
    finish(sandbox, &work);
    let dirs: Vec<PathBuf> = (0..4).flat_map(|i| slots.slot_dirs(i)).collect();
    slots.cleanup();
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[tokio::test]
async fn cgroup_slots_are_made_limited_and_removed() {
    let work = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(work.path(), "limits");
    config.slot_memory_bytes = 64 * 1024 * 1024;
    config.slot_cpu_percent = 25;
    let slots = CgroupSlots::new(2, &config);
    let Some(version) = slots.version() else {
        println!("{}", skip_reason(&slots).unwrap());
        assert!(!slots.enforced());
        assert!(slots.try_acquire().unwrap().cgroup_procs.is_empty());
        return;
    };
    let dirs = slots.slot_dirs(1);
    let read = |file: &str| {
        dirs.iter()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
    };
    match version {
        CgroupVersion::V2 => {
            assert_eq!(read("memory.max").as_deref(), Some("67108864"));
            assert_eq!(read("cpu.max").as_deref(), Some("5000 20000"));
            // Where the kernel has CFS burst (5.14 on), a slot carries one quota over.
            if let Some(burst) = read("cpu.max.burst") {
                assert_eq!(burst, "5000");
            }
        }
        CgroupVersion::V1 => {
            assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864"));
            assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("5000"));
            assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("20000"));
            if let Some(burst) = read("cpu.cfs_burst_us") {
                assert_eq!(burst, "5000");
            }
            let oom = read("memory.oom_control").unwrap();
            assert!(oom.contains("oom_kill_disable 0"), "{oom}");
            if let Some(memsw) = read("memory.memsw.limit_in_bytes") {
                assert_eq!(memsw, "67108864");
            }
        }
    }
    let slot = slots.try_acquire().unwrap();
    assert!(slot
        .cgroup_procs
        .iter()
        .all(|p| p.ends_with("cgroup.procs") && p.exists()));
    assert_eq!(slots.oom_kills(&slot), 0);
    slots.release(slot);
    let all: Vec<PathBuf> = (0..2).flat_map(|i| slots.slot_dirs(i)).collect();
    drop(slots);
    for dir in all {
        assert!(!dir.exists(), "{} left behind", dir.display());
        // The per-test parent was made by the pool and goes with it.
        assert!(
            !dir.parent().unwrap().exists(),
            "{} left behind",
            dir.parent().unwrap().display()
        );
    }
}

#[tokio::test]
async fn slots_contract_holds_for_cgroup_slots() {
    let work = tempfile::tempdir().unwrap();
    let slots = cgroup_slots(3, work.path(), "slots-contract");
    if let Some(skip) = skip_reason(&slots) {
        println!("{skip} (contract checked on unlimited slots)");
    }
    slots_contract(&slots).await;
}

async fn sandbox_contract_holds_for_workerd(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, mode);
    let slots = cgroup_slots(1, work.path(), &format!("sandbox-contract-{mode:?}"));
    if let Some(skip) = skip_reason(&slots) {
        println!("{skip} (contract checked in an unlimited slot)");
    }
    let slot = slots.try_acquire().unwrap();
    sandbox_contract(&sandbox, &slot).await;
    slots.release(slot);
    finish(sandbox, &work);
}

/// Reads what an earlier job may have left (a global, a module variable), then leaves its own
/// input there; also lists the bindings it sees.
const SNOOP_JOB: &str = r#"
let moduleState;
export default {
  async fetch(request, env) {
    const seen = { global: globalThis.leak ?? null, module: moduleState ?? null };
    const input = await request.text();
    globalThis.leak = input;
    moduleState = input;
    return new Response(JSON.stringify({ seen, env: Object.keys(env) }));
  },
};
"#;

fn slot(index: usize) -> Slot {
    Slot {
        index,
        cgroup_procs: Vec::new(),
    }
}

#[tokio::test]
async fn warm_jobs_share_no_state_and_see_no_host_bindings() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slot = unlimited_slot();
    let first = sandbox
        .run_detailed(&slot, SNOOP_JOB, b"secret of job 1", None, 30_000)
        .await
        .unwrap();
    let second = sandbox
        .run_detailed(&slot, SNOOP_JOB, b"job 2", None, 30_000)
        .await
        .unwrap();
    // One warm process served both jobs ...
    assert_eq!(first.pid, second.pid);
    assert!(!process_gone(first.pid));
    // ... and neither saw anything of the other, nor any binding of the host worker.
    let nothing = r#"{"seen":{"global":null,"module":null},"env":[]}"#;
    assert_eq!(first.result, RunResult::Output(nothing.as_bytes().to_vec()));
    assert_eq!(
        second.result,
        RunResult::Output(nothing.as_bytes().to_vec())
    );
    finish(sandbox, &work);
}

/// Counts its own requests and says when its top-level code ran, and with which input.
const COUNTING_JOB: &str = r#"
console.error("top-level code ran");
let requests = 0;
export default {
  async fetch(request) {
    requests += 1;
    return new Response(JSON.stringify({ requests, input: await request.text() }));
  },
};
"#;

/// The same code again in a slot runs on an isolate made before the job came (the request
/// prepared after the last job), and that isolate is still the job's alone: made for it, its
/// handler never called before, its top-level log lines the job's. Any other job (other code,
/// a secret) gets an isolate of its own as before.
#[tokio::test]
async fn a_repeated_code_runs_on_an_isolate_prepared_for_it_alone() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slot = unlimited_slot();
    let mut reports = Vec::new();
    for input in ["one", "two", "three"] {
        // Idle time between jobs, as on a chain: the prepared isolate has started by then.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = sandbox
            .run_detailed(&slot, COUNTING_JOB, input.as_bytes(), None, 30_000)
            .await
            .unwrap();
        let expected = format!(r#"{{"requests":1,"input":"{input}"}}"#);
        assert_eq!(report.result, RunResult::Output(expected.into_bytes()));
        assert!(
            report.stderr.contains("top-level code ran"),
            "{:?}",
            report.stderr
        );
        reports.push(report);
    }
    assert!(!reports[0].prepared, "the first job had nothing prepared");
    assert!(reports[1].prepared && reports[2].prepared, "{reports:?}");
    assert!(reports.iter().all(|r| r.pid == reports[0].pid));

    // Other code, then a job with a secret, then one again (nothing is prepared after a job
    // with a secret): none takes an isolate prepared for another.
    let others = [
        (ECHO_JOB, "echo", None, "echo"),
        (SECRET_JOB, "", Some("s3cret"), "s3cret"),
        (SECRET_JOB, "", Some("other"), "other"),
    ];
    let mut again = None;
    for (code, input, secret, expected) in others {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = sandbox
            .run_detailed(
                &slot,
                code,
                input.as_bytes(),
                secret.map(str::as_bytes),
                30_000,
            )
            .await
            .unwrap();
        assert_eq!(
            report.result,
            RunResult::Output(expected.as_bytes().to_vec())
        );
        assert!(!report.prepared, "{code}");
        again = Some(report);
    }
    let again = again.unwrap();
    assert_eq!(again.pid, reports[0].pid, "no process was replaced");
    finish(sandbox, &work);
}

/// A slot whose prepared isolate is still starting is not ready (the pool then prefers a slot
/// whose isolate is there already), and is again once it has started.
#[tokio::test]
async fn a_slot_is_not_ready_while_its_prepared_isolate_starts() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slot = unlimited_slot();
    // Top-level work of some ms, so that the start is not over by the time we look.
    let code = "let x = 0; for (let i = 0; i < 5000000; i++) x += i;\nexport default { fetch() { return new Response(String(x > 0)); } };";
    // Only a run under 250 ms has its code prepared; on a machine busy with other tests a run
    // may take longer, and is tried again.
    let mut prepared_after = false;
    for _ in 0..20 {
        let first = sandbox
            .run_detailed(&slot, code, b"", None, 30_000)
            .await
            .unwrap();
        assert_eq!(first.result, RunResult::Output(b"true".to_vec()));
        if first.elapsed < Duration::from_millis(200) {
            prepared_after = true;
            break;
        }
    }
    assert!(
        prepared_after,
        "no run was short enough to be prepared after"
    );
    assert!(
        !sandbox.ready(slot.index),
        "ready while its next isolate starts"
    );
    let started = async {
        while !sandbox.ready(slot.index) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .expect("never ready again");
    let next = sandbox
        .run_detailed(&slot, code, b"", None, 30_000)
        .await
        .unwrap();
    assert_eq!(next.result, RunResult::Output(b"true".to_vec()));
    assert!(next.prepared);
    finish(sandbox, &work);
}

/// Top-level code that never ends one time in two (top-level code need not run the same way
/// twice: `Math.random` works there), after printing the line by which the host worker says a
/// prepared isolate started (without its nonce).
const STUCK_SOMETIMES_JOB: &str = r#"
if (Math.random() < 0.5) {
  console.error("serverless-executor: prepared 0123456789abcdef");
  for (;;) {}
}
export default { fetch() { return new Response("ran"); } };
"#;

/// Runs [`STUCK_SOMETIMES_JOB`] until a run ends with its output (the runs whose own start got
/// stuck meet their deadline), then `next`; whether the isolate prepared after that run got
/// stuck, as `next` finds out.
async fn after_a_clean_run_of_stuck_sometimes<F, Fut>(
    sandbox: &WorkerdSandbox,
    slot: &Slot,
    next: F,
) -> bool
where
    F: FnOnce(RunReport) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..50 {
        let first = sandbox
            .run_detailed(slot, STUCK_SOMETIMES_JOB, b"", None, 1_000)
            .await
            .unwrap();
        match first.result {
            RunResult::Output(ref out) if out == b"ran" => return next(first).await,
            RunResult::DeadlineExceeded => continue,
            ref other => panic!("unexpected result {other:?}"),
        }
    }
    panic!("no run of the job ended with its output");
}

/// Attack: a job's code whose top-level code hangs when the slot prepares it for a next job.
/// The next job, of other code, must not wait behind it until its own deadline (an executor
/// is slashed for the jobs it does not answer), whatever the job prints: the slot's process is
/// replaced once the prepared isolate has not started within its limit (1 s).
#[tokio::test]
async fn a_prepared_isolate_stuck_in_top_level_code_does_not_hold_up_the_next_job() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slot = unlimited_slot();
    let mut stuck_seen = 0;
    for _ in 0..20 {
        let (sandbox, slot) = (&sandbox, &slot);
        let stuck = after_a_clean_run_of_stuck_sometimes(sandbox, slot, |first| async move {
            // Soon after (as on a chain: by then the prepared isolate is starting), a job of
            // other code, with a deadline far past the limit.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let next = sandbox
                .run_detailed(slot, ECHO_JOB, b"next", None, 10_000)
                .await
                .unwrap();
            assert_eq!(next.result, RunResult::Output(b"next".to_vec()));
            // Replaced: the prepared isolate had not started (nothing else replaces it here).
            next.pid != first.pid
        })
        .await;
        if stuck {
            stuck_seen += 1;
            break;
        }
    }
    assert_eq!(stuck_seen, 1, "no prepared isolate got stuck in 20 tries");
    finish(sandbox, &work);
}

/// The same attack with no job coming: the stuck process is replaced all the same, so that its
/// top-level code does not keep burning the slot's CPU share while the slot looks idle.
#[tokio::test]
async fn a_prepared_isolate_stuck_in_top_level_code_is_replaced_while_the_slot_idles() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slot = unlimited_slot();
    let mut replaced = false;
    for _ in 0..20 {
        replaced = after_a_clean_run_of_stuck_sometimes(&sandbox, &slot, |first| async move {
            // The limit, and time for the replacement; a prepared isolate that started is
            // never replaced.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            process_gone(first.pid)
        })
        .await;
        if replaced {
            break;
        }
    }
    assert!(replaced, "no stuck process was replaced in 20 tries");
    assert!(sandbox.warm_pid(slot.index).await.is_some());
    let next = sandbox
        .run_detailed(&slot, ECHO_JOB, b"next", None, 10_000)
        .await
        .unwrap();
    assert_eq!(next.result, RunResult::Output(b"next".to_vec()));
    finish(sandbox, &work);
}

#[tokio::test]
async fn prewarm_starts_slots_side_by_side() {
    sandbox_init_logs();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        println!("SKIP prewarm_starts_slots_side_by_side: one core, slots start one at a time");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slots: Vec<Slot> = (0..6).map(slot).collect();
    sandbox.prewarm(&slots, 1).await.unwrap();
    // Until every slot listens, count the slots whose process exists but does not listen yet:
    // started one after the other, never more than one at a time.
    let mut most_starting = 0;
    for _ in 0..20_000 {
        let mut starting = 0;
        let mut ready = 0;
        for s in &slots {
            if sandbox.ready(s.index) {
                ready += 1;
            } else if sandbox.warm_pid(s.index).await.is_some() {
                starting += 1;
            }
        }
        most_starting = most_starting.max(starting);
        if ready == slots.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        slots.iter().all(|s| sandbox.ready(s.index)),
        "not every slot came up"
    );
    assert!(
        most_starting >= 2,
        "at most {most_starting} slot started at a time on {cores} cores"
    );
    finish(sandbox, &work);
}

/// Shutdown while slots are still being started in the background: no slot gets a process
/// after `stop` (one would keep its slot's cgroup busy, so the executor could not remove it).
#[tokio::test]
async fn stop_ends_prewarming_still_in_progress() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slots: Vec<Slot> = (0..8).map(slot).collect();
    sandbox.prewarm(&slots, 1).await.unwrap();
    sandbox.stop().await;
    // Long enough for the background to have started every slot, had it gone on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut running = Vec::new();
    for s in &slots {
        if let Some(pid) = sandbox.warm_pid(s.index).await {
            running.push((s.index, pid));
        }
    }
    assert!(
        running.is_empty(),
        "slots with a process after stop: {running:?}"
    );
    finish(sandbox, &work);
}

#[tokio::test]
async fn warm_deadline_restarts_only_its_own_slot() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    sandbox.prewarm(&[slot(0), slot(1)], 2).await.unwrap();
    let (Some(pid0), Some(pid1)) = (sandbox.warm_pid(0).await, sandbox.warm_pid(1).await) else {
        panic!("prewarm started no process");
    };
    assert_ne!(pid0, pid1);
    let report = sandbox
        .run_detailed(&slot(0), LOOP_JOB, b"x", None, 1_500)
        .await
        .unwrap();
    assert_eq!(report.result, RunResult::DeadlineExceeded);
    assert_eq!(report.pid, pid0);
    assert!(process_gone(pid0), "slot 0's workerd {pid0} still exists");
    let new0 = sandbox.warm_pid(0).await.expect("slot 0 restarted");
    assert_ne!(new0, pid0);
    assert_eq!(sandbox.warm_pid(1).await, Some(pid1), "slot 1 was touched");
    // Both slots serve the next job: slot 0 from its new process, slot 1 from its old one.
    for (index, pid) in [(0, new0), (1, pid1)] {
        let echo = sandbox
            .run_detailed(&slot(index), ECHO_JOB, b"next", None, 30_000)
            .await
            .unwrap();
        assert_eq!(echo.result, RunResult::Output(b"next".to_vec()));
        assert_eq!(echo.pid, pid);
    }
    finish(sandbox, &work);
}

/// Attack: code whose top-level statements keep 40 MB, so that the isolate prepared for its
/// next job holds them in the slot while it idles. A job of other code then comes to that slot
/// and needs 40 MB itself: it must not be killed for the memory the prepared isolate held (the
/// dropped isolate is freed only when the host worker collects its garbage), so the slot's
/// process is replaced first when its heaps are past half the slot's memory.
#[tokio::test]
async fn memory_held_by_a_dropped_prepared_isolate_does_not_starve_the_next_job() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slots = cgroup_slots(1, work.path(), "warm-prepared-memory");
    if let Some(skip) = skip_reason(&slots) {
        println!("{skip} (no slot memory limit to exhaust)");
        return;
    }
    let slot = slots.try_acquire().unwrap();
    sandbox
        .prewarm(std::slice::from_ref(&slot), 1)
        .await
        .unwrap();
    const MB40: usize = 40 * 1024 * 1024;
    let keeper = format!(
        "const kept = new Uint8Array({MB40}); kept.fill(7);\nexport default {{ fetch() {{ return new Response(String(kept[{MB40} - 1])); }} }};"
    );
    let needer = format!(
        "export default {{ fetch() {{ const mine = new Uint8Array({MB40}); mine.fill(9); return new Response(String(mine[{MB40} - 1])); }} }};"
    );
    for _ in 0..3 {
        let kept = sandbox
            .run_detailed(&slot, &keeper, b"", None, 20_000)
            .await
            .unwrap();
        assert_eq!(kept.result, RunResult::Output(b"7".to_vec()));
        // Time for the prepared isolate to start and fill its 40 MB.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let needs = sandbox
            .run_detailed(&slot, &needer, b"", None, 20_000)
            .await
            .unwrap();
        assert_eq!(needs.result, RunResult::Output(b"9".to_vec()));
    }
    slots.release(slot);
    finish(sandbox, &work);
    slots.cleanup();
}

#[tokio::test]
async fn warm_out_of_memory_restarts_only_its_own_slot() {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::Public, SandboxMode::Warm);
    let slots = cgroup_slots(2, work.path(), "warm-oom");
    if let Some(skip) = skip_reason(&slots) {
        println!("{skip} (no slot memory limit to exhaust)");
        return;
    }
    let (a, b) = (slots.try_acquire().unwrap(), slots.try_acquire().unwrap());
    sandbox.prewarm(&[a.clone(), b.clone()], 2).await.unwrap();
    let (pid_a, pid_b) = (
        sandbox.warm_pid(a.index).await.unwrap(),
        sandbox.warm_pid(b.index).await.unwrap(),
    );
    let before = slots.oom_kills(&a);
    let report = sandbox
        .run_detailed(&a, MEMORY_BOMB_JOB, b"x", None, 20_000)
        .await
        .expect("the sandbox itself survives");
    assert!(
        matches!(report.result, RunResult::Crashed(_)),
        "{:?}",
        report.result
    );
    assert!(
        slots.oom_kills(&a) > before,
        "the slot's OOM killer did not fire"
    );
    assert_eq!(report.pid, pid_a);
    assert!(process_gone(pid_a));
    let new_a = sandbox.warm_pid(a.index).await.expect("slot restarted");
    assert_ne!(new_a, pid_a);
    assert_eq!(sandbox.warm_pid(b.index).await, Some(pid_b));
    for (slot, pid) in [(&a, new_a), (&b, pid_b)] {
        let echo = sandbox
            .run_detailed(slot, ECHO_JOB, b"still alive", None, 30_000)
            .await
            .unwrap();
        assert_eq!(echo.result, RunResult::Output(b"still alive".to_vec()));
        assert_eq!(echo.pid, pid);
    }
    slots.release(a);
    slots.release(b);
    finish(sandbox, &work);
    slots.cleanup();
}

/// A line of `/proc/<pid>/status` (e.g. "Uid:"), without its label.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The layers of containment, checked on a real warm workerd (its /proc entries and its own
/// mount view) and on a shell started under the very same set-up: the data directory and the
/// key file are out of sight, the user is the sandbox's, core dumps are off, privileges cannot
/// be regained and the seccomp filter refuses what workerd never needs.
#[tokio::test]
async fn workerd_runs_confined_and_cannot_read_the_data_directory_or_the_key_file() {
    sandbox_init_logs();
    let secrets = tempfile::tempdir().unwrap();
    let data = secrets.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("db"), b"journal-and-sealed-keys").unwrap();
    let key_file = secrets.path().join("enclave.key");
    std::fs::write(&key_file, b"enclave-secret-bytes-0123456789a").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let mut config = sandbox_config(work.path(), "confined");
    config.mode = SandboxMode::Warm;
    config.hidden_paths = vec![data.clone(), key_file.clone()];
    let sandbox = WorkerdSandbox::new(&config).unwrap();
    let confinement = sandbox.confinement().clone();
    println!("applied: {}", confinement.describe());
    if !confinement.hides_secrets() {
        println!(
            "SKIP: neither a private mount view nor a separate user is possible here (not root): {}",
            confinement.describe()
        );
        finish(sandbox, &work);
        return;
    }

    // A real warm workerd, serving a job.
    let slot = slot(0);
    assert_eq!(
        output(
            sandbox
                .run(&slot, ECHO_JOB, b"still works", None, 30_000)
                .await
        ),
        "still works"
    );
    let pid = sandbox.warm_pid(0).await.expect("the slot's workerd runs");
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1");
    assert_eq!(status_field(pid, "Seccomp:"), "2", "seccomp filter mode");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    if let Some((uid, gid)) = test_sandbox_user() {
        let uids = status_field(pid, "Uid:");
        assert!(
            uids.split_whitespace().all(|u| u == uid.to_string()),
            "{uids}"
        );
        let gids = status_field(pid, "Gid:");
        assert!(
            gids.split_whitespace().all(|g| g == gid.to_string()),
            "{gids}"
        );
        assert_eq!(status_field(pid, "Groups:"), "");
    }
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let its_ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    if own_ns != its_ns {
        // In workerd's own mount view the data directory is empty and the key file is empty.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let seen_data = root.join(data.strip_prefix("/").unwrap());
        let listed: Vec<_> = std::fs::read_dir(&seen_data)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            listed.is_empty(),
            "workerd sees {listed:?} in the data directory"
        );
        let seen_key =
            std::fs::read(root.join(key_file.strip_prefix("/").unwrap())).unwrap_or_default();
        assert!(seen_key.is_empty(), "workerd can read the key file");
    }

    // What an escaped job could do with workerd's powers: read, debug, mount.
    let script = format!(
        "cat {key} 2>/dev/null; ls -A {data} 2>/dev/null; cat {data}/db 2>/dev/null; \
         echo; id -u; unshare -r true 2>/dev/null && echo unshared",
        key = key_file.display(),
        data = data.display()
    );
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    let c = confinement.clone();
    // SAFETY: `apply` is made for pre_exec (async-signal-safe, no allocation).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || c.apply());
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("enclave-secret"),
        "the key file was read:\n{text}"
    );
    assert!(
        !text.contains("journal"),
        "the data directory was read:\n{text}"
    );
    assert!(
        !text.contains("db"),
        "the data directory was listed:\n{text}"
    );
    assert!(
        !text.contains("unshared"),
        "a new namespace was made:\n{text}"
    );
    if let Some((uid, _)) = test_sandbox_user() {
        assert!(text.lines().any(|l| l == uid.to_string()), "{text}");
    }
    finish(sandbox, &work);
}

/// Where no private mount view can be made, file modes keep the sandbox user out: a shell under
/// that set-up cannot read a 0600 key file or list a 0700 data directory, and start-up refuses
/// a key file the sandbox user could read.
#[test]
fn without_a_mount_view_file_modes_keep_the_sandbox_user_out() {
    use serverless_executor::effects::workerd::confine::{Confinement, Request};
    use std::os::unix::fs::PermissionsExt;
    let Some(user) = test_sandbox_user() else {
        println!("SKIP: switching to a sandbox user needs root");
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let data = secrets.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("db"), b"journal").unwrap();
    let key_file = secrets.path().join("enclave.key");
    std::fs::write(&key_file, b"enclave-secret").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The temp dir itself must be passable for the check to mean anything.
    std::fs::set_permissions(secrets.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let request = Request {
        user: Some(user),
        hidden: vec![data.clone(), key_file.clone()],
        file_modes_only: true,
    };
    let confinement = Confinement::establish(&request, &default_workerd_path()).unwrap();
    let text = confinement.describe();
    assert!(!text.contains("mount view"), "{text}");
    let script = format!(
        "cat {key}; ls -A {data}; cat {data}/db; echo done",
        key = key_file.display(),
        data = data.display()
    );
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", &script]).env_clear();
    let c = confinement.clone();
    // SAFETY: `apply` is made for pre_exec (async-signal-safe, no allocation).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || c.apply());
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "done", "read something: {stdout}");
    assert_eq!(
        stderr.matches("Permission denied").count(),
        3,
        "each read refused: {stderr}"
    );

    // A key file others may read is refused at start.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Confinement::establish(&request, &default_workerd_path()).unwrap_err();
    assert!(err.contains("is open to the sandbox user"), "{err}");
}

/// Says what `env` is to the job: the secret's type, `env`'s keys, and the secret decoded.
const ENV_JOB: &str = r#"
export default {
  fetch(request, env) {
    const kind = Object.prototype.toString.call(env.secret);
    const text = env.secret instanceof ArrayBuffer ? new TextDecoder().decode(env.secret) : null;
    return new Response(JSON.stringify({ kind, keys: Object.keys(env), text, has: "secret" in env }));
  },
};
"#;

async fn secret_reaches_the_job_as_an_array_buffer_and_the_only_env_key(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::None, mode);
    let slot = unlimited_slot();
    let secret = "my API key: sk-ünïcode-🔑".as_bytes();
    let (with, empty) = tokio::join!(
        sandbox.run(&slot, ENV_JOB, b"", Some(secret), 30_000),
        // An empty secret is still a secret: the key is there, with a zero-length buffer.
        sandbox.run(&slot, ENV_JOB, b"", Some(b""), 30_000),
    );
    assert_eq!(
        output(with),
        r#"{"kind":"[object ArrayBuffer]","keys":["secret"],"text":"my API key: sk-ünïcode-🔑","has":true}"#
    );
    assert_eq!(
        output(empty),
        r#"{"kind":"[object ArrayBuffer]","keys":["secret"],"text":"","has":true}"#
    );
    finish(sandbox, &work);
}

async fn binary_secret_arrives_intact(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::None, mode);
    let slot = unlimited_slot();
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = (0..=255u8).rev().cycle().take(4096).collect();
    let (a, b) = tokio::join!(
        sandbox.run(&slot, SECRET_JOB, b"input", Some(&every_byte), 30_000),
        // The input after the secret stays the input (warm mode frames them in one body).
        sandbox.run(&slot, ECHO_JOB, &every_byte, Some(&reversed), 30_000),
    );
    assert_eq!(a, Ok(RunResult::Output(every_byte.clone())));
    assert_eq!(b, Ok(RunResult::Output(every_byte)));
    let c = sandbox
        .run(&slot, SECRET_JOB, b"", Some(&reversed), 30_000)
        .await;
    assert_eq!(c, Ok(RunResult::Output(reversed)));
    finish(sandbox, &work);
}

async fn job_without_a_secret_has_no_secret_key(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::None, mode);
    let slot = unlimited_slot();
    let (env, secret) = tokio::join!(
        sandbox.run(&slot, ENV_JOB, b"", None, 30_000),
        sandbox.run(&slot, SECRET_JOB, b"", None, 30_000),
    );
    assert_eq!(
        output(env),
        r#"{"kind":"[object Undefined]","keys":[],"text":null,"has":false}"#
    );
    assert_eq!(secret, Ok(RunResult::Output(NO_SECRET.to_vec())));
    finish(sandbox, &work);
}

/// A hostile job: reports what it can find of earlier jobs' secrets (a global, a module
/// variable, `env`), then hides its own secret in the same places for the next job.
const STEAL_JOB: &str = r#"
let kept;
export default {
  fetch(request, env) {
    const decode = (b) => (b instanceof ArrayBuffer ? new TextDecoder().decode(b) : null);
    const seen = {
      keys: Object.keys(env),
      own: decode(env.secret),
      global: globalThis.stolen ?? null,
      module: kept ?? null,
    };
    if (env.secret) {
      globalThis.stolen = decode(env.secret);
      kept = decode(env.secret);
    }
    return new Response(JSON.stringify(seen));
  },
};
"#;

async fn a_job_cannot_see_an_earlier_or_a_concurrent_jobs_secret(mode: SandboxMode) {
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::None, mode);
    let detailed = |slot: Slot, secret: Option<&'static [u8]>| {
        let sandbox = &sandbox;
        async move {
            sandbox
                .run_detailed(&slot, STEAL_JOB, b"", secret, 30_000)
                .await
                .unwrap()
        }
    };
    // In one slot, one after the other: in warm mode the same workerd serves all three.
    let first = detailed(slot(0), Some(b"alpha secret")).await;
    let second = detailed(slot(0), None).await;
    let third = detailed(slot(0), Some(b"beta secret")).await;
    let expect = |r: &RunReport, json: &str| {
        assert_eq!(
            r.result,
            RunResult::Output(json.as_bytes().to_vec()),
            "{:?}",
            String::from_utf8_lossy(match &r.result {
                RunResult::Output(b) => b,
                _ => b"",
            })
        )
    };
    expect(
        &first,
        r#"{"keys":["secret"],"own":"alpha secret","global":null,"module":null}"#,
    );
    expect(
        &second,
        r#"{"keys":[],"own":null,"global":null,"module":null}"#,
    );
    expect(
        &third,
        r#"{"keys":["secret"],"own":"beta secret","global":null,"module":null}"#,
    );
    if mode == SandboxMode::Warm {
        assert_eq!(first.pid, second.pid, "one warm process served the jobs");
        assert_eq!(second.pid, third.pid, "one warm process served the jobs");
        assert!(!process_gone(first.pid));
    }
    // In two slots at once: each sees its own secret only.
    let (a, b) = tokio::join!(
        detailed(slot(1), Some(b"gamma secret")),
        detailed(slot(2), Some(b"delta secret")),
    );
    expect(
        &a,
        r#"{"keys":["secret"],"own":"gamma secret","global":null,"module":null}"#,
    );
    expect(
        &b,
        r#"{"keys":["secret"],"own":"delta secret","global":null,"module":null}"#,
    );
    // Nothing of any secret in what workerd logged.
    for r in [&first, &second, &third, &a, &b] {
        for word in ["alpha", "beta", "gamma", "delta"] {
            assert!(!r.stderr.contains(word), "{}", r.stderr);
        }
    }
    finish(sandbox, &work);
}

/// Per-job mode writes the secret to a file of the run directory for workerd to embed: only
/// its owner (the user workerd runs as) may read it, and it goes with the run, cancelled or not.
#[tokio::test]
async fn process_secret_file_is_owner_only_and_gone_after_the_run() {
    use std::os::unix::fs::MetadataExt;
    sandbox_init_logs();
    let work = tempfile::tempdir().unwrap();
    let sandbox = sandbox_new(&work, EgressPolicy::None, SandboxMode::Process);
    let secret = b"file secret \x00\xff";
    // The config is written after the secret file is complete: once it is there, look.
    let look = async {
        loop {
            let ready = std::fs::read_dir(work.path())
                .unwrap()
                .flatten()
                .map(|run| run.path())
                .find(|run| run.join("config.capnp").exists());
            if let Some(run) = ready {
                let path = run.join("secret.bin");
                let meta = std::fs::metadata(&path).expect("the secret file is there");
                return (std::fs::read(&path).unwrap(), meta, path);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // A job that never ends keeps its run directory while the file is examined; the select
    // then cancels the run.
    let slot = unlimited_slot();
    let (contents, meta, path) = tokio::select! {
        seen = look => seen,
        r = sandbox.run(&slot, LOOP_JOB, b"", Some(secret), 60_000) => {
            panic!("the run ended before its secret file was seen: {r:?}")
        }
    };
    assert_eq!(contents, secret);
    assert_eq!(meta.mode() & 0o777, 0o400, "owner-only, read-only");
    // SAFETY: geteuid and getegid have no preconditions.
    let me = unsafe { (libc::geteuid(), libc::getegid()) };
    let owner = test_sandbox_user().unwrap_or(me);
    assert_eq!((meta.uid(), meta.gid()), owner, "owned by workerd's user");
    assert!(!path.exists(), "{} left behind", path.display());
    assert_dir_empty(work.path());

    // A run that ends on its own removes it too.
    let done = sandbox
        .run(&unlimited_slot(), SECRET_JOB, b"", Some(secret), 30_000)
        .await;
    assert_eq!(done, Ok(RunResult::Output(secret.to_vec())));
    finish(sandbox, &work);
}
