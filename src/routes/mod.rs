//! The HTTP API (hyper 1.x): the router, the server loop with its limits, and the mapping of
//! every outcome to a JSON response. Routes call domain APIs only.

mod error;
mod guard;
mod input;
mod jobs;
pub mod limits;
mod operator;
mod public;
mod readers;
mod secrets;
mod status_page;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub use error::ApiError;
pub use input::MAX_BODY_BYTES;
pub use secrets::MAX_INJECT_BODY_BYTES;

use crate::config::PublicConfig;
use crate::domain::Executor;
use limits::{ClientLimits, Refusal};

/// Most connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request must be answered within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Threads that run the job routes' journal reads, all clients together; more reads queue.
const JOURNAL_READERS: usize = 2;

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The Prometheus text exposition format.
fn metrics_response(text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn error_response(e: ApiError) -> Response<Full<Bytes>> {
    respond(e.status, serde_json::json!({"error": e.message}))
}

/// 429 with the `Retry-After` (seconds) a client's limits call for.
fn refusal_response(refusal: Refusal) -> Response<Full<Bytes>> {
    let mut response = error_response(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{}; retry after {} s",
            refusal.reason, refusal.retry_after_secs
        ),
    ));
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(refusal.retry_after_secs),
    );
    response
}

/// Which routes a listener serves: the read-only public API, the operator (admin) API that
/// binds to loopback by default, or the secret store's `POST /inject-secret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Public,
    Admin,
    Secrets,
}

/// What the routes of a listener reach: the domain (the log level goes through `crate::logging`,
/// process plumbing rather than a port), and the public listener's limits.
pub struct Services {
    pub executor: Arc<Executor>,
    pub public: PublicConfig,
    /// Host names besides loopback ones the admin listener answers to.
    pub admin_allowed_hosts: Vec<String>,
    /// Where the job routes read the journal, shared by the listeners of one executor.
    readers: readers::Readers,
}

impl Services {
    pub fn new(
        executor: Arc<Executor>,
        public: PublicConfig,
        admin_allowed_hosts: Vec<String>,
    ) -> Self {
        Self {
            executor,
            public,
            admin_allowed_hosts,
            readers: readers::Readers::new(JOURNAL_READERS),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Details,
    TeeDetails,
    Registration,
    ImmutableConfig,
    MutableConfig,
    Jobs,
    Job,
    Metrics,
    LogLevel,
    InjectSecret,
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_PUT: &[Method] = &[Method::GET, Method::PUT];

/// The route at `path` on `surface` and the methods it takes; Err is the 404 message.
fn route(surface: Surface, path: &str) -> Result<(Route, &'static [Method]), String> {
    let found = match (surface, path) {
        (Surface::Public, "/" | "/health") => (Route::Health, GET),
        (Surface::Public, "/executor-details") => (Route::Details, GET),
        (Surface::Public, "/tee-details") => (Route::TeeDetails, GET),
        (Surface::Public, "/signed-registration-message") => (Route::Registration, GET),
        (Surface::Public, "/jobs") => (Route::Jobs, GET),
        (Surface::Public, "/metrics") => (Route::Metrics, GET),
        (Surface::Public, p) if p.starts_with("/jobs/") => (Route::Job, GET),
        (Surface::Admin, "/immutable-config") => (Route::ImmutableConfig, POST),
        (Surface::Admin, "/mutable-config") => (Route::MutableConfig, POST),
        (Surface::Admin, "/log-level") => (Route::LogLevel, GET_PUT),
        (Surface::Secrets, "/inject-secret") => (Route::InjectSecret, POST),
        (Surface::Public, "/immutable-config" | "/mutable-config") => {
            return Err(format!(
                "no route {path} here: operator routes are served on the admin listener \
                 (EXECUTOR_ADMIN_LISTEN_ADDR, EXECUTOR_ADMIN_PORT)"
            ))
        }
        _ => return Err(format!("no route {path}")),
    };
    Ok(found)
}

/// Routes one request of `surface`.
pub async fn handle(
    services: Arc<Services>,
    surface: Surface,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if surface == Surface::Admin {
        if let Err(e) = guard::check_admin_request(req.headers(), &services.admin_allowed_hosts) {
            return error_response(e);
        }
    }
    let (route, allowed) = match route(surface, &path) {
        Ok(found) => found,
        Err(message) => return error_response(ApiError::new(StatusCode::NOT_FOUND, message)),
    };
    if !allowed.contains(&method) {
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut response = error_response(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}; use {allow}"),
        ));
        if let Ok(value) = header::HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    }
    let executor = &services.executor;
    if route == Route::Health && path == "/" && status_page::wants_html(req.headers()) {
        // The page lists the latest jobs: it reads the journal on a reader thread too.
        return journal_response(&services, status_page::respond).await;
    }
    if surface == Surface::Public
        && !services.public.jobs_api
        && matches!(route, Route::Jobs | Route::Job)
    {
        return error_response(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no route {path} here: the job routes are turned off (EXECUTOR_PUBLIC_JOBS_API)"
            ),
        ));
    }
    let result = match route {
        Route::Metrics => return metrics_response(executor.metrics_text()),
        Route::Health => public::health(executor),
        Route::Details => public::executor_details(executor),
        Route::TeeDetails => public::tee_details(executor),
        Route::Registration => public::signed_registration_message(executor),
        Route::ImmutableConfig => operator::immutable_config(executor, req).await,
        Route::MutableConfig => operator::mutable_config(executor, req).await,
        Route::Jobs => {
            let query = req.uri().query().map(str::to_string);
            return journal_read(&services, move |e| jobs::jobs(e, query.as_deref())).await;
        }
        Route::Job => {
            let id = path["/jobs/".len()..].to_string();
            return journal_read(&services, move |e| jobs::job(e, &id)).await;
        }
        Route::LogLevel if method == Method::PUT => operator::set_log_level(req).await,
        Route::LogLevel => operator::log_level(),
        Route::InjectSecret => secrets::inject_secret(executor, req).await,
    };
    match result {
        Ok(body) => respond(StatusCode::OK, body),
        Err(e) => error_response(e),
    }
}

/// Runs a journal read, and renders its answer, on a reader thread: never on the async workers
/// that run jobs, and at a lower CPU priority than they.
async fn journal_read(
    services: &Services,
    read: impl FnOnce(&Executor) -> Result<serde_json::Value, ApiError> + Send + 'static,
) -> Response<Full<Bytes>> {
    journal_response(services, move |e| {
        read(e).map(|body| respond(StatusCode::OK, body))
    })
    .await
}

/// Like `journal_read`, for a read that renders its own response (the status page).
async fn journal_response(
    services: &Services,
    read: impl FnOnce(&Executor) -> Result<Response<Full<Bytes>>, ApiError> + Send + 'static,
) -> Response<Full<Bytes>> {
    let executor = services.executor.clone();
    let rendered = services
        .readers
        .run(move || read(&executor).unwrap_or_else(error_response))
        .await;
    rendered.unwrap_or_else(|| {
        tracing::error!("no journal reader answered");
        error_response(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the journal cannot be read now",
        ))
    })
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves `surface`'s routes on `listener` until `shutdown` turns true; then lets open
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    surface: Surface,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // The operator's own listener is not limited per client; the public and secret ones are.
    let limits = (surface != Surface::Admin).then(|| Arc::new(ClientLimits::new(&services.public)));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let services = services.clone();
        let limits = limits.clone();
        let service = service_fn(move |req| {
            let services = services.clone();
            let admitted = limits.as_ref().map(|limits| limits.admit(peer.ip()));
            async move {
                let _in_progress = match admitted {
                    Some(Err(refusal)) => return Ok(refusal_response(refusal)),
                    Some(Ok(in_progress)) => Some(in_progress),
                    None => None,
                };
                let handled = handle(services, surface, req);
                let response = match tokio::time::timeout(REQUEST_TIMEOUT, handled).await {
                    Ok(response) => response,
                    Err(_) => error_response(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request took too long",
                    )),
                };
                Ok::<_, Infallible>(response)
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // Requests in progress get a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}
