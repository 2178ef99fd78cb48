//! The one HTTP exchange of a run: `POST /` with the input as body over the already-connected
//! socket, reading the response body up to the output limit.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// What the worker answered.
pub(super) enum Answer {
    /// The whole body (whatever the status: workerd's own error page included).
    Body(Vec<u8>),
    /// The body passed the limit; reading stopped there.
    TooLarge,
}

/// Sends the request and reads the answer. An error means the connection failed before a
/// whole answer arrived (typically: workerd died or never served).
pub(super) async fn post(stream: UnixStream, input: Bytes, limit: usize) -> Result<Answer, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = Request::post("/")
        .header(HOST, "localhost")
        .body(Full::new(input))
        .map_err(|e| format!("request: {e}"))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let mut body = response.into_body();
        let mut output = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("answer cut short: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if output.len() + data.len() > limit {
                    return Ok(Answer::TooLarge);
                }
                output.extend_from_slice(&data);
            }
        }
        Ok(Answer::Body(output))
    };
    tokio::pin!(conn);
    tokio::pin!(exchange);
    // The connection task and the exchange progress together; if the connection ends first,
    // whatever it delivered is still read (or the exchange fails for want of it).
    tokio::select! {
        answer = &mut exchange => answer,
        _ = &mut conn => exchange.await,
    }
}
