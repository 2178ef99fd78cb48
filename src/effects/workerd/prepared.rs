//! A warm slot's next isolate, made before its job comes: after a job, the slot opens a request
//! that carries the same code and no input yet; the host worker loads the code into a new
//! isolate, starts it, and waits for the input. A next job with that code (and no secret)
//! sends only its input on it; any other job drops it. Making the isolate is most of a short
//! job's run (about 6 of 8 ms), so a code that comes again skips that wait.

use std::future::Future;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::capnp::{CODE_BYTES_HEADER, OUTCOME_HEADER, PREPARE_HEADER};
use super::child::Workerd;
use super::exchange::{self, Answer};

type Exchanged = Result<(Answer, Option<String>), String>;

/// An open request whose isolate holds `code` and waits for its job's input. Dropping it
/// drops the request (and so the isolate).
pub(super) struct Prepared {
    code: String,
    nonce: String,
    input: Option<oneshot::Sender<Bytes>>,
    exchange: Option<JoinHandle<Exchanged>>,
    pub(super) opened: tokio::time::Instant,
}

impl Prepared {
    /// Opens the request on the slot's socket; the host worker starts the isolate meanwhile.
    pub(super) async fn open(
        socket: &Path,
        code: &str,
        output_limit: usize,
    ) -> Result<Self, String> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        let nonce = format!("{:016x}", rand::random::<u64>());
        let (input, later) = oneshot::channel::<Bytes>();
        let first = futures::stream::once(std::future::ready(Ok::<_, String>(Frame::data(
            Bytes::copy_from_slice(code.as_bytes()),
        ))));
        // Dropped unsent, the body fails and hyper abandons the request.
        let rest = futures::stream::once(async move {
            later
                .await
                .map(Frame::data)
                .map_err(|_| "the prepared request was dropped".to_string())
        });
        let body = StreamBody::new(first.chain(rest));
        let headers = vec![
            (CODE_BYTES_HEADER, code.len().to_string()),
            (PREPARE_HEADER, nonce.clone()),
        ];
        let exchange = tokio::spawn(async move {
            exchange::post_with(stream, body, &headers, Some(OUTCOME_HEADER), output_limit).await
        });
        Ok(Prepared {
            code: code.to_string(),
            nonce,
            input: Some(input),
            exchange: Some(exchange),
            opened: tokio::time::Instant::now(),
        })
    }

    /// Whether this request can take a job with `code` and no secret: the same code, and the
    /// host worker has not answered it already (it answers early only when the code did not
    /// load this time).
    pub(super) fn fits(&self, code: &str, has_secret: bool) -> bool {
        !has_secret && self.code == code && !self.answered()
    }

    fn answered(&self) -> bool {
        self.exchange.as_ref().is_none_or(JoinHandle::is_finished)
    }

    pub(super) fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Whether the slot's process is free of this request's start-up: its isolate started (the
    /// host worker said so) or the request is over. Until then, the job's top-level code may
    /// still be running on workerd's thread.
    pub(super) fn settled(&self, workerd: &Workerd) -> bool {
        self.answered() || workerd.is_prepared(&self.nonce)
    }

    /// Hands the job's input over; the future is the job's answer (dropped, it drops the
    /// request).
    pub(super) fn send_input(mut self, input: &[u8]) -> impl Future<Output = Exchanged> {
        if let Some(sender) = self.input.take() {
            // The request may be over already: its answer then says why.
            let _ = sender.send(Bytes::copy_from_slice(input));
        }
        let exchange = self.exchange.take().map(AbortOnDrop);
        async move {
            match exchange {
                Some(mut task) => match (&mut task.0).await {
                    Ok(answer) => answer,
                    Err(e) => Err(format!("the prepared request's task ended: {e}")),
                },
                None => Err("the prepared request was used already".into()),
            }
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(task) = self.exchange.take() {
            task.abort();
        }
    }
}

/// A task that is aborted when its handle is dropped (a cancelled run drops its request).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
