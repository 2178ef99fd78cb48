//! The one HTTP exchange of a run: `POST /` over the already-connected socket (per-job mode: the
//! input as body; warm mode: code and input, framed by a header), reading the response body up
//! to the output limit.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{HeaderName, HeaderValue, HOST};
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
    post_with(stream, Full::new(input), &[], None, limit)
        .await
        .map(|(answer, _)| answer)
}

/// [`post`] with any body (a prepared request streams its input later) and extra request
/// headers, returning also the value of the response header `read_header` (when asked for and
/// present).
pub(super) async fn post_with<B>(
    stream: UnixStream,
    body: B,
    headers: &[(&'static str, String)],
    read_header: Option<&'static str>,
    limit: usize,
) -> Result<(Answer, Option<String>), String>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut request = Request::post("/")
        .header(HOST, "localhost")
        .body(body)
        .map_err(|e| format!("request: {e}"))?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(value).map_err(|e| format!("header: {e}"))?;
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let read = read_header
            .and_then(|name| response.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = response.into_body();
        let mut output = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("answer cut short: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if output.len() + data.len() > limit {
                    return Ok((Answer::TooLarge, read));
                }
                output.extend_from_slice(&data);
            }
        }
        Ok((Answer::Body(output), read))
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
