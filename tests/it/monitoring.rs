//! Monitoring against real parts: the alert rules under `promtool`, every metric the rules and
//! the Grafana dashboard query exported by a live executor on a devnet, and the HTML status page
//! in a real headless chromium (with the screenshot the README shows). The tools come from
//! `tools/install-monitoring.sh`; a test that lacks its tool prints `SKIP: …` and says why.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ethers::types::Address;
use serde_json::Value;
use serverless_executor::client::deploy::DeployParams;
use serverless_executor::client::devnet::{Devnet, DevnetOptions, ExecutorOptions};
use serverless_executor::client::jobs::{create_job, save_code, wait_for_response};

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `promtool`, unpacked by tools/install-monitoring.sh or on the PATH.
fn promtool() -> Option<PathBuf> {
    let unpacked = repo().join("tools/apt/usr/bin/promtool");
    if unpacked.exists() {
        return Some(unpacked);
    }
    on_path("promtool")
}

fn skip(what: &str) {
    println!("SKIP: {what} is not installed (bash tools/install-monitoring.sh installs it)");
}

// ---- PromQL: which metrics an expression reads -------------------------------------------------

/// Metric names read by a PromQL expression (or a Grafana `label_values(metric, label)`
/// query): identifiers that are not functions, keywords, label names, strings, durations or
/// Grafana variables.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    // Followed by a parenthesised list of label names.
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let after = |from: usize, close: char| {
        chars[from..]
            .iter()
            .position(|&c| c == close)
            .map_or(chars.len(), |p| from + p + 1)
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == '{' {
            i = after(i, '}');
        } else if c == '[' {
            i = after(i, ']');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            // `sum by (x) (…)`: an aggregation whose grouping comes first.
            let grouped = ["by", "without"].iter().any(|word| {
                chars[next..].starts_with(&word.chars().collect::<Vec<_>>())
                    && chars
                        .get(next + word.len())
                        .is_some_and(|&c| c == '(' || c.is_whitespace())
            });
            if grouped {
                continue;
            }
            if LABEL_LISTS.contains(&ident.as_str()) {
                if call {
                    i = after(next, ')');
                }
            } else if call && ident == "label_values" {
                let end = after(next, ')');
                let args: String = chars[next + 1..end - 1].iter().collect();
                if let Some((metric, _label)) = args.split_once(',') {
                    names.extend(metric_names(metric));
                }
                i = end;
            } else if !call && !KEYWORDS.contains(&ident.as_str()) {
                names.push(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_promql_reader_finds_metrics_and_nothing_else() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le) (rate(a_bucket{instance=~"$instance", x="b c"}[$__rate_interval])))
           + count without(job) (e) + max (f) by (g)
           / on(instance) group_left(job) b_total offset 5m > 0.5 and bool c:rate5m unless d"#,
    );
    assert_eq!(names, ["a_bucket", "e", "f", "b_total", "c:rate5m", "d"]);
    assert_eq!(
        metric_names("label_values(executor_ready, instance)"),
        ["executor_ready"]
    );
    assert!(metric_names("label_values(instance)").is_empty());
}

/// Every PromQL expression of the alert rules (`expr:` lines; the file keeps them on one line).
fn rule_expressions() -> Vec<String> {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let exprs: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_string())
        .collect();
    assert!(
        exprs.iter().all(|e| !e.is_empty() && e != "|" && e != ">"),
        "keep each rule's expr on one line: {exprs:?}"
    );
    exprs
}

/// Every query of the dashboard: panel targets' `expr` and the variables' queries.
fn dashboard_expressions() -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(repo().join("deploy/grafana/executor.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = vec![];
    walk(&dashboard, &mut out);
    out
}

#[test]
fn the_dashboard_imports_with_a_prometheus_input_and_distinct_panels() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/executor.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are distinct");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries something");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}"
            );
        }
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap();
        assert!(right <= 24, "{title} fits the 24-column grid");
    }
}

/// The sample names of a Prometheus text exposition (`_bucket`, `_sum`, `_count` included).
fn exported_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

// ---- promtool ----------------------------------------------------------------------------------

fn run_promtool(promtool: &Path, args: &[&str]) {
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    println!("promtool {}: {}", args.join(" "), text.trim());
}

#[test]
fn every_alert_rule_has_promtool_cases_that_fire_and_that_stay_quiet() {
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    // Each alert's cases: `alertname: X` followed by `exp_alerts: []` (quiet) or a list (fires).
    let tests = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.test.yml")).unwrap();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for pair in lines.windows(2) {
        if let Some(name) = pair[0].strip_prefix("alertname:") {
            match pair[1] {
                "exp_alerts: []" => quiet.insert(name.trim()),
                "exp_alerts:" => fires.insert(name.trim()),
                other => panic!("unexpected line after {}: {other}", pair[0]),
            };
        }
    }
    for alert in &alerts {
        assert!(fires.contains(alert), "no case where {alert} fires");
        assert!(quiet.contains(alert), "no case where {alert} stays quiet");
    }

    let Some(promtool) = promtool() else {
        return skip("promtool");
    };
    run_promtool(&promtool, &["check", "rules", "alerts.yml"]);
    run_promtool(&promtool, &["check", "config", "prometheus.yml"]);
    run_promtool(&promtool, &["test", "rules", "alerts.test.yml"]);
}

// ---- chromium ----------------------------------------------------------------------------------

/// Runs headless chromium on a loopback `url` with `args`; returns its stdout.
async fn chromium(url: &str, args: &[String]) -> String {
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "the browser only ever loads loopback URLs: {url}"
    );
    let binary = on_path("chromium").expect("checked by the caller");
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium finishes within 2 minutes")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The page's DOM after the browser parsed it.
async fn browser_dom(url: &str) -> String {
    chromium(url, &["--dump-dom".to_string()]).await
}

/// The text a person reads in `dom`: tags dropped, entities decoded, spaces collapsed.
fn visible_text(dom: &str) -> String {
    let body = dom.split("<body>").nth(1).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---- a live executor ---------------------------------------------------------------------------

async fn get(http: &reqwest::Client, url: &str, accept: Option<&str>) -> reqwest::Response {
    let mut request = http.get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    request.send().await.unwrap()
}

async fn metrics_text(http: &reqwest::Client, api: &str) -> String {
    get(http, &format!("{api}/metrics"), None)
        .await
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled sample.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// Polls /metrics until `done` holds, for at most `timeout`; returns that text.
async fn wait_for_metrics(
    http: &reqwest::Client,
    api: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let started = tokio::time::Instant::now();
    loop {
        let metrics = metrics_text(http, api).await;
        if done(&metrics) {
            return metrics;
        }
        assert!(
            started.elapsed() < timeout,
            "not {what} within {timeout:?}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls /metrics until it has `line`, for at most `timeout`.
async fn wait_for_metric(http: &reqwest::Client, api: &str, line: &str, timeout: Duration) {
    wait_for_metrics(http, api, line, timeout, |m| m.lines().any(|l| l == line)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_executor_exports_what_monitoring_reads_and_shows_its_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let net = Devnet::start(DevnetOptions {
        anvil_port: None,
        deploy: DeployParams {
            execution_buffer_secs: 5,
            executors_to_select: 1,
            ..DeployParams::default()
        },
        work_dir: dir.path().to_path_buf(),
    })
    .await
    .expect("devnet starts");
    let ex = net
        .start_executor(ExecutorOptions::default())
        .await
        .expect("executor starts and registers");
    let http = reqwest::Client::new();
    let rpc = net.anvil.http_url();

    // One job answered, so the page has a job and the output cost is measured.
    let code = include_str!("../../examples/factors.js");
    let codehash = save_code(&rpc, net.author_key(), net.deployment.user_code, code)
        .await
        .unwrap();
    let job = create_job(
        &rpc,
        net.author_key(),
        net.deployment.jobs,
        1,
        codehash,
        br#"{"num":10}"#,
        5000,
    )
    .await
    .unwrap();
    wait_for_response(
        &rpc,
        net.deployment.jobs,
        job.job_id,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let finished = "executor_jobs_finished_total{error_code=\"0\",outcome=\"confirmed\"} 1";
    wait_for_metric(&http, &ex.api_url, finished, Duration::from_secs(30)).await;
    // The probe (every 5 s) has seen the chain and the gas account since.
    let probed = |m: &str| {
        value(m, "executor_ready") == Some(1.0)
            && value(m, "executor_gas_balance_ether").is_some_and(|v| v > 0.0)
    };
    let metrics = wait_for_metrics(
        &http,
        &ex.api_url,
        "probed",
        Duration::from_secs(30),
        probed,
    )
    .await;

    // Every metric a rule or a panel reads is exported, read from the live /metrics.
    let exported = exported_names(&metrics);
    let mut read = BTreeSet::new();
    for (source, exprs) in [
        ("deploy/prometheus/alerts.yml", rule_expressions()),
        ("deploy/grafana/executor.json", dashboard_expressions()),
    ] {
        assert!(!exprs.is_empty(), "{source} has queries");
        for expr in exprs {
            for name in metric_names(&expr) {
                // `up` is made by Prometheus itself for every scrape target.
                assert!(
                    name == "up" || exported.contains(&name),
                    "{source} reads {name} (in `{expr}`), which the executor does not export:\n{metrics}"
                );
                read.insert(name);
            }
        }
    }
    // What the issue asks the dashboard and rules to cover is really read.
    for name in [
        "executor_jobs_finished_total",
        "executor_jobs_executed_total",
        "executor_job_execution_seconds_bucket",
        "executor_job_end_to_end_seconds_bucket",
        "executor_slots_busy",
        "executor_jobs_queued",
        "executor_chain_head_lag_blocks",
        "executor_gas_balance_ether",
        "executor_pending_transactions",
        "executor_ready",
        "executor_chain_up",
        "executor_outputs_reverted_total",
        "executor_slashed_total",
        "executor_output_cost_ether",
        "executor_gas_account_nonce",
        "executor_gas_account_pending_nonce",
        "executor_job_capacity",
        "executor_sandbox_oom_kills_total",
        "executor_cgroups_enforced",
    ] {
        assert!(read.contains(name), "nothing reads {name}");
    }
    let value = |name: &str| value(&metrics, name).unwrap_or_else(|| panic!("no {name}"));
    assert!(
        value("executor_output_cost_ether") > 0.0,
        "the output cost is known"
    );
    assert_eq!(value("executor_job_capacity"), 4.0);

    // GET / stays JSON unless the client prefers HTML.
    for accept in [None, Some("*/*"), Some("application/json")] {
        let r = get(&http, &format!("{}/", ex.api_url), accept).await;
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{accept:?}"
        );
        let health: Value = r.json().await.unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["ready"], true, "{health}");
    }
    let r = get(&http, &format!("{}/", ex.api_url), Some(BROWSER_ACCEPT)).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = r.text().await.unwrap();
    for external in ["http://", "https://", "<script", "src="] {
        assert!(
            !html.contains(external),
            "the page loads nothing: {external}"
        );
    }

    // A real browser renders it: readiness, chain, gas, slots and the job.
    let Some(_) = on_path("chromium") else {
        ex.stop().await.unwrap();
        return skip("chromium");
    };
    let enclave = format!("{:?}", ex.enclave);
    let page = visible_text(&browser_dom(&format!("{}/", ex.api_url)).await);
    for expected in [
        "Ready: serving jobs",
        "registered on chain yes",
        "chain connected yes",
        "workerd found yes",
        "status serving",
        "slots busy 0 of 4",
        "job capacity (on chain) 4",
        &format!("enclave address {enclave}"),
        " ETH",
        &format!("{} confirmed yes 5000 0", job.job_id),
    ] {
        assert!(
            page.contains(expected),
            "the page lacks '{expected}':\n{page}"
        );
    }
    assert!(!page.contains("unknown"), "every value is known: {page}");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &format!("{}/", ex.api_url),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1100".to_string(),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium saved the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a rendered page, not a blank one: {} bytes",
        png.len()
    );
    println!("status page screenshot: {}", shot.display());

    // The gas runs out: the next job is abandoned, someone slashes us, and the metrics the
    // alerts read say so (ExecutorGasCritical, ExecutorJobAbandoned, ExecutorSlashed).
    let details: Value = get(&http, &format!("{}/executor-details", ex.api_url), None)
        .await
        .json()
        .await
        .unwrap();
    let gas: Address = details["gas_address"].as_str().unwrap().parse().unwrap();
    let provider = serverless_executor::client::provider(&rpc).unwrap();
    provider
        .request::<_, Value>("anvil_setBalance", (gas, "0x0"))
        .await
        .unwrap();
    let starved = create_job(
        &rpc,
        net.author_key(),
        net.deployment.jobs,
        1,
        codehash,
        br#"{"num":10}"#,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(starved.selected_executors, vec![ex.enclave]);
    let abandoned = "executor_jobs_finished_total{error_code=\"none\",outcome=\"abandoned\"} 1";
    wait_for_metric(&http, &ex.api_url, abandoned, Duration::from_secs(60)).await;
    // Past the window on the chain's clock; the job author settles it.
    net.anvil.increase_time(30).await.unwrap();
    let author = serverless_executor::client::client(&rpc, net.author_key())
        .await
        .unwrap();
    let jobs =
        serverless_executor::effects::chain::bindings::Jobs::new(net.deployment.jobs, author);
    let receipt = jobs
        .slash_on_execution_timeout(starved.job_id)
        .send()
        .await
        .unwrap()
        .await
        .unwrap()
        .expect("the slash is mined");
    assert_eq!(receipt.status, Some(1u64.into()), "the slash lands");
    wait_for_metric(
        &http,
        &ex.api_url,
        "executor_slashed_total 1",
        Duration::from_secs(60),
    )
    .await;
    wait_for_metric(
        &http,
        &ex.api_url,
        "executor_gas_balance_ether 0",
        Duration::from_secs(30),
    )
    .await;
    let page = visible_text(&browser_dom(&format!("{}/", ex.api_url)).await);
    assert!(
        page.contains(&format!("{} abandoned yes 1000", starved.job_id)),
        "{page}"
    );
    assert!(page.contains("gas balance 0.000000 ETH"), "{page}");
    ex.stop().await.unwrap();
}

/// The attack: text an outsider controls reaches the journal (a revert reason is chain data)
/// and the operator opens the status page. It must show as text, never become markup.
#[tokio::test]
async fn markup_in_a_journalled_reason_is_shown_as_text_and_never_runs() {
    use serverless_executor::domain::dal::Store;
    use serverless_executor::domain::model::{JobRecord, JobState};
    use serverless_executor::domain::testing::sample_job;
    use serverless_executor::effects::signer::EnclaveKey;
    use serverless_executor::effects::store::SledStore;

    let Some(_) = on_path("chromium") else {
        return skip("chromium");
    };
    let dir = tempfile::tempdir().unwrap();
    let payload = r#"reverted: <img src=x onerror="document.title='pwned'"><script>document.body.setAttribute('data-pwned','1')</script><b id="injected">bold</b>"#;
    {
        let store = SledStore::open(&dir.path().join("data"), [0; 32]).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let state = JobState::Abandoned {
            reason: payload.into(),
        };
        store
            .put_job(&JobRecord::new(sample_job(3, vec![], now), state))
            .unwrap();
        store.flush().unwrap();
    }
    EnclaveKey::generate(&dir.path().join("enclave.key")).unwrap();
    let raw: std::collections::HashMap<String, String> = [
        ("PORT", "0".to_string()),
        ("ADMIN_PORT", "0".to_string()),
        (
            "ENCLAVE_KEY_FILE",
            dir.path().join("enclave.key").display().to_string(),
        ),
        ("DATA_DIR", dir.path().join("data").display().to_string()),
        (
            "SANDBOX_DIR",
            dir.path().join("sandbox").display().to_string(),
        ),
        ("SANDBOX_MODE", "process".to_string()),
        ("JOB_CAPACITY", "1".to_string()),
        (
            "CGROUP_PARENT",
            format!("serverless-executor-monitoring-{}", std::process::id()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = serverless_executor::config::Config::from_map(&raw).unwrap();
    let running = serverless_executor::bootstrap::start(config)
        .await
        .expect("executor starts");
    let url = format!("http://{}/", running.api_addr);

    let dom = browser_dom(&url).await;
    for markup in ["<script", "<img", "<b id=", "data-pwned=", "<title>pwned"] {
        assert!(!dom.contains(markup), "'{markup}' became markup:\n{dom}");
    }
    let text = visible_text(&dom);
    assert!(text.contains(payload), "the reason shows as text:\n{text}");
    assert!(text.contains("Not ready"), "{text}");
    assert!(text.contains("chain connected no"), "{text}");
    running.shutdown(Duration::from_secs(5)).await.unwrap();
}
