//! The operator's status page: `GET /` for a client that asks for `text/html` gets a small
//! server-rendered page (no scripts, no external assets, every value escaped).

use bytes::Bytes;
use html_escape::encode_safe as esc;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::Response;

use super::error::ApiError;
use crate::domain::api::{JobStatus, StatusReport};
use crate::domain::Executor;

/// Journalled jobs shown: the latest few, whatever the journal holds.
pub const JOBS_SHOWN: usize = 10;

/// The page may style itself and nothing else: no script, image, frame, font or fetch runs.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Whether the client prefers HTML: it lists `text/html` with a q above 0 and at least that
/// of `application/json`. `*/*` alone (curl, health checks) keeps the JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let quality = |wanted: &str| {
        accept.iter().find_map(|item| {
            let mut parts = item.split(';');
            let media = parts.next()?.trim();
            if !media.eq_ignore_ascii_case(wanted) {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(q)
        })
    };
    match quality("text/html") {
        Some(html) if html > 0.0 => html >= quality("application/json").unwrap_or(0.0),
        _ => false,
    }
}

/// The page as a response, or the error the JSON API would give.
pub fn respond(executor: &Executor) -> Result<Response<Full<Bytes>>, ApiError> {
    let report = executor.status(JOBS_SHOWN)?;
    let mut response = Response::new(Full::new(Bytes::from(render(&report))));
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::VARY, "Accept"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

fn yes_no(value: bool) -> &'static str {
    if value {
        r#"<span class="ok">yes</span>"#
    } else {
        r#"<span class="bad">no</span>"#
    }
}

fn or_unknown<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(
        || "unknown".to_string(),
        |v| esc(&v.to_string()).into_owned(),
    )
}

fn ether(wei: ethers::types::U256) -> String {
    let ether: f64 = ethers::utils::format_ether(wei).parse().unwrap_or(f64::NAN);
    format!("{ether:.6} ETH")
}

/// A reason longer than this is cut on the page (revert text comes from the chain); the full
/// text stays in `GET /jobs/{id}`.
const REASON_SHOWN_CHARS: usize = 300;

fn shortened(text: &str) -> String {
    match text.char_indices().nth(REASON_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn job_row(job: &JobStatus) -> String {
    let cell = |v: Option<String>| v.map_or_else(|| "—".to_string(), |v| esc(&v).into_owned());
    format!(
        "<tr><td>{id}</td><td class=\"state-{state}\">{state}</td><td>{selected}</td>\
         <td>{deadline}</td><td>{code}</td><td>{time}</td><td>{outputs}</td><td>{settled}</td>\
         <td class=\"hash\">{tx}</td><td>{reason}</td></tr>\n",
        id = esc(&job.id.to_string()),
        state = esc(job.state),
        selected = if job.selected { "yes" } else { "no" },
        deadline = job.deadline_ms,
        code = cell(job.error_code.map(|c| c.to_string())),
        time = cell(job.total_time_ms.map(|t| format!("{t} ms"))),
        outputs = job.output_count,
        settled = if job.settled { "yes" } else { "no" },
        tx = cell(job.tx_hash.map(|h| format!("{h:?}"))),
        reason = cell(job.reason.as_deref().map(shortened)),
    )
}

/// The whole page. Every value that comes from the journal or the chain is escaped.
pub fn render(r: &StatusReport) -> String {
    let ready = &r.readiness;
    let headline = if ready.ready {
        r#"<p class="headline ok">Ready: serving jobs</p>"#
    } else {
        r#"<p class="headline bad">Not ready</p>"#
    };
    let chain_status = format!("{:?}", r.chain_status).to_lowercase();
    let jobs: String = r.jobs.iter().map(job_row).collect();
    let jobs = if jobs.is_empty() {
        "<tr><td colspan=\"10\">no jobs in the journal</td></tr>\n".to_string()
    } else {
        jobs
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>serverless-executor status</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-top: 1.5em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
.ok {{ color: #176c2f; font-weight: bold; }} .bad {{ color: #b3261e; font-weight: bold; }}
.headline {{ font-size: 1.2em; }}
.hash {{ font-family: monospace; font-size: 0.85em; }}
.state-abandoned {{ color: #b3261e; }} .state-confirmed {{ color: #176c2f; }}
</style>
</head>
<body>
<h1>serverless-executor</h1>
{headline}
<h2>Readiness</h2>
<table>
<tr><th>registered on chain</th><td>{registered}</td></tr>
<tr><th>chain connected</th><td>{connected}</td></tr>
<tr><th>workerd found</th><td>{workerd}</td></tr>
<tr><th>cgroup limits enforced</th><td>{cgroups}</td></tr>
</table>
<h2>Chain</h2>
<table>
<tr><th>status</th><td>{chain_status}</td></tr>
<tr><th>head block</th><td>{head}</td></tr>
<tr><th>next block to handle</th><td>{cursor}</td></tr>
<tr><th>head lag (blocks)</th><td>{lag}</td></tr>
<tr><th>last probe</th><td>{probe}</td></tr>
<tr><th>enclave address</th><td class="hash">{enclave}</td></tr>
<tr><th>gas address</th><td class="hash">{gas_address}</td></tr>
<tr><th>gas balance</th><td>{balance}</td></tr>
</table>
<h2>Slots and queue</h2>
<table>
<tr><th>slots busy</th><td>{busy} of {total}</td></tr>
<tr><th>jobs queued</th><td>{queued}</td></tr>
<tr><th>jobs in flight</th><td>{in_flight}</td></tr>
<tr><th>job capacity (on chain)</th><td>{capacity}</td></tr>
</table>
<h2>Jobs (latest {shown} in the journal, newest first)</h2>
<table>
<tr><th>id</th><th>state</th><th>selected</th><th>deadline</th><th>error code</th><th>time</th><th>outputs</th><th>settled</th><th>transaction</th><th>reason</th></tr>
{jobs}</table>
<p>The same facts as JSON: this URL with any other <code>Accept</code> (curl) · metrics: <code>/metrics</code> · jobs: <code>/jobs?order=desc</code>, <code>/jobs?state=abandoned</code></p>
</body>
</html>
"#,
        registered = yes_no(ready.registered),
        connected = yes_no(ready.chain_connected),
        workerd = yes_no(ready.workerd_found),
        cgroups = yes_no(ready.cgroups_enforced),
        chain_status = esc(&chain_status),
        head = or_unknown(r.chain_head),
        cursor = or_unknown(r.cursor),
        lag = or_unknown(r.head_lag_blocks()),
        probe = or_unknown(r.probe_age_ms.map(|ms| format!("{} s ago", ms / 1000))),
        enclave = esc(&format!("{:?}", r.enclave_address)),
        gas_address = or_unknown(r.gas_address.map(|a| format!("{a:?}"))),
        balance = or_unknown(r.gas_balance_wei.map(ether)),
        busy = r.slots_busy,
        total = r.slots_total,
        queued = r.jobs_queued,
        in_flight = r.jobs_in_flight,
        capacity = r.job_capacity,
        shown = JOBS_SHOWN,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{ChainStatus, Readiness};
    use ethers::types::{Address, U256};

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn html_only_for_clients_that_prefer_it() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&accept(browser)));
        assert!(wants_html(&accept("TEXT/HTML")));
        for json in [
            "*/*",
            "application/json",
            "application/json, text/html;q=0.5",
            "text/html;q=0",
            "",
        ] {
            assert!(!wants_html(&accept(json)), "{json}");
        }
        assert!(!wants_html(&HeaderMap::new()));
    }

    fn report(reason: &str) -> StatusReport {
        StatusReport {
            readiness: Readiness {
                registered: true,
                chain_connected: false,
                cgroups_enforced: false,
                unlimited_slots_allowed: false,
                workerd_found: true,
                enclave_verified: true,
                follower_ok: true,
                head_lag: Some(0),
                follower_problem: None,
                ready: false,
            },
            chain_status: ChainStatus::Serving,
            enclave_address: Address::repeat_byte(0xaa),
            gas_address: None,
            chain_head: Some(120),
            cursor: Some(100),
            gas_balance_wei: Some(U256::exp10(18)),
            probe_age_ms: Some(2_000),
            slots_busy: 1,
            slots_total: 4,
            jobs_queued: 0,
            jobs_in_flight: 1,
            job_capacity: 4,
            jobs: vec![JobStatus {
                id: U256::from(7),
                state: "abandoned",
                selected: true,
                deadline_ms: 1000,
                exec_start_time: 1,
                error_code: None,
                total_time_ms: None,
                tx_hash: None,
                reason: Some(reason.into()),
                output_count: 0,
                settled: true,
                gas_spent: 0,
            }],
        }
    }

    #[test]
    fn journal_text_is_escaped_and_the_page_says_why_not_ready() {
        let page = render(&report("<script>alert(1)</script> & \"quoted\" 'single'"));
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt; &amp; &quot;quoted&quot; &#x27;single&#x27;"), "{page}");
        assert!(page.contains("Not ready"));
        assert!(page.contains("<tr><th>chain connected</th><td><span class=\"bad\">no</span>"));
        assert!(page.contains("<td>21</td>"), "head lag: 120 + 1 - 100");
        assert!(page.contains("1.000000 ETH"));
        assert!(
            page.contains("<h2>Jobs (latest 10 in the journal, newest first)</h2>"),
            "{page}"
        );
    }

    #[test]
    fn long_reasons_are_cut_on_the_page() {
        let long = "é".repeat(REASON_SHOWN_CHARS + 50);
        let page = render(&report(&long));
        assert!(page.contains(&format!("{}…<", "é".repeat(REASON_SHOWN_CHARS))));
        assert!(!page.contains(&"é".repeat(REASON_SHOWN_CHARS + 1)));
        let short = render(&report("window missed"));
        assert!(short.contains("<td>window missed</td>"));
    }
}
