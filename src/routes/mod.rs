//! The HTTP API (hyper 1.x): the router, the server loop with its limits, and the mapping of
//! every outcome to a JSON response. Routes call domain APIs only.

mod error;
mod input;
mod operator;
mod public;

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

use crate::domain::Executor;

/// Most connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request must be answered within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn respond(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(e: ApiError) -> Response<Full<Bytes>> {
    respond(e.status, serde_json::json!({"error": e.message}))
}

/// Routes one request.
pub async fn handle(executor: Arc<Executor>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let allowed: &[Method] = match path.as_str() {
        "/" | "/health" | "/executor-details" | "/signed-registration-message" => &[Method::GET],
        "/immutable-config" | "/mutable-config" => &[Method::POST],
        _ => {
            return error_response(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route {path}"),
            ))
        }
    };
    if !allowed.contains(&method) {
        let mut response = error_response(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}; use {}", allowed[0]),
        ));
        response.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static(allowed[0].as_str()),
        );
        return response;
    }
    let result = match path.as_str() {
        "/" | "/health" => public::health(&executor),
        "/executor-details" => public::executor_details(&executor),
        "/signed-registration-message" => public::signed_registration_message(&executor),
        "/immutable-config" => operator::immutable_config(&executor, req).await,
        _ => operator::mutable_config(&executor, req).await,
    };
    match result {
        Ok(body) => respond(StatusCode::OK, body),
        Err(e) => error_response(e),
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves the API on `listener` until `shutdown` turns true; then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    executor: Arc<Executor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let executor = executor.clone();
        let service = service_fn(move |req| {
            let executor = executor.clone();
            async move {
                let response =
                    match tokio::time::timeout(REQUEST_TIMEOUT, handle(executor, req)).await {
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
