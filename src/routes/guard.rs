//! The admin listener's request guard: only loopback host names (or the configured ones) in
//! `Host`, and no browser-made cross-origin request, so a web page cannot drive the operator
//! routes through DNS rebinding or a form post from the operator's own browser.

use hyper::header::{HeaderMap, HOST, ORIGIN};
use hyper::StatusCode;

use super::error::ApiError;

/// Whether `host` (the `Host` header: a name or address, an optional port) names this machine
/// through loopback only, or is one of `allowed` (names or addresses, without port).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = strip_port(host.trim()).to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return false;
    }
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
        return true;
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 address stays whole.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Refuses what a browser page could send: a `Host` that is not a loopback name (a rebound DNS
/// name), a request carrying `Origin` (browsers add it to cross-origin and form requests;
/// operator tools never send it), or a `Sec-Fetch-Site` other than `none` (typed by the user).
pub fn check_admin_request(headers: &HeaderMap, allowed_hosts: &[String]) -> Result<(), ApiError> {
    let forbidden = |message: String| Err(ApiError::new(StatusCode::FORBIDDEN, message));
    let Some(host) = headers.get(HOST) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the admin API needs a Host header",
        ));
    };
    let host = host.to_str().unwrap_or_default();
    if !host_allowed(host, allowed_hosts) {
        return forbidden(format!(
            "Host '{}' is not a loopback name: the admin API answers only to localhost, \
             loopback addresses and EXECUTOR_ADMIN_ALLOWED_HOSTS",
            host.chars().take(100).collect::<String>()
        ));
    }
    if headers.contains_key(ORIGIN) {
        return forbidden(
            "requests with an Origin header (made by a web page) are refused on the admin API"
                .into(),
        );
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"none" {
            return forbidden(
                "browser requests from a web page (Sec-Fetch-Site) are refused on the admin API"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_names_pass_and_others_do_not() {
        for ok in [
            "127.0.0.1:6002",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:6002",
            "LOCALHOST",
            "localhost.",
            "x.localhost:1",
            "[::1]:6002",
            "[::1]",
            "::1",
        ] {
            assert!(host_allowed(ok, &[]), "{ok}");
        }
        for bad in [
            "",
            "attacker.example:6002",
            "localhost.attacker.example",
            "10.0.0.1:6002",
            "[::ffff:7f00:1]:6002",
            "0.0.0.0:6002",
            "127.0.0.1.nip.io",
        ] {
            assert!(!host_allowed(bad, &[]), "{bad}");
        }
        let allowed = vec!["admin.internal".to_string(), "10.0.0.5".to_string()];
        assert!(host_allowed("admin.internal:6002", &allowed));
        assert!(host_allowed("10.0.0.5", &allowed));
        assert!(!host_allowed("other.internal", &allowed));
    }

    #[test]
    fn browser_requests_are_refused() {
        let ok = headers(&[("host", "127.0.0.1:6002")]);
        assert!(check_admin_request(&ok, &[]).is_ok());
        let typed = headers(&[("host", "localhost:6002"), ("sec-fetch-site", "none")]);
        assert!(check_admin_request(&typed, &[]).is_ok());
        for refused in [
            headers(&[("host", "rebound.example:6002")]),
            headers(&[
                ("host", "127.0.0.1:6002"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[("host", "127.0.0.1:6002"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:6002"), ("sec-fetch-site", "cross-site")]),
            headers(&[
                ("host", "127.0.0.1:6002"),
                ("sec-fetch-site", "same-origin"),
            ]),
        ] {
            let e = check_admin_request(&refused, &[]).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{refused:?}");
        }
        assert_eq!(
            check_admin_request(&HeaderMap::new(), &[])
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }
}
