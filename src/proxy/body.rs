//! Bodies through the proxy: a small request body is held so it can be sent again after a 401, a
//! large one streamed through a bounded channel; the answer is streamed back, counted and timed.

use std::{
    io,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Request bodies up to this size are kept, so a request whose token was refused can be resent.
pub const REPLAYABLE: usize = 1 << 20;

/// A request body as the proxy sends it on.
pub enum RequestBody {
    /// The whole body (at most [`REPLAYABLE`] bytes): resent as it is after a 401.
    Held(Bytes),
    /// A larger body, arriving through a bounded channel (so memory stays flat); it can be sent
    /// once. `length` is the caller's `Content-Length`, if it gave one; `overflowed` is set by
    /// whoever fills the channel when it cut the body at `PROXY_MAX_BODY`.
    Streamed { chunks: mpsc::Receiver<io::Result<Bytes>>, length: Option<u64>, overflowed: Arc<AtomicBool> },
}

impl RequestBody {
    /// A streamed body as reqwest sends it: each chunk must arrive within `idle`, or the upload
    /// (and with it the request) fails. After an error the stream ends.
    pub(super) fn into_stream(
        chunks: mpsc::Receiver<io::Result<Bytes>>,
        idle: Duration,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(Some(chunks), move |state| async move {
            let mut chunks = state?;
            match tokio::time::timeout(idle, chunks.recv()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(chunks))),
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => None,
                Err(_) => Some((Err(io::Error::new(io::ErrorKind::TimedOut, "the request body stalled")), None)),
            }
        })
    }
}

/// Count the bytes of an answer's body as they pass, and hand the total to `done` when the stream
/// ends or is dropped (the caller went away, or the upstream stalled).
pub(super) fn counted<S>(
    body: S,
    done: impl FnOnce(u64) + Send + 'static,
) -> impl Stream<Item = io::Result<Bytes>> + Send
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    let mut tally = Tally { bytes: 0, done: Some(Box::new(done)) };
    body.map(move |chunk| {
        let chunk = chunk.map_err(|e| {
            let kind = if e.is_timeout() { io::ErrorKind::TimedOut } else { io::ErrorKind::Other };
            io::Error::new(kind, crate::outbound::client::describe_transport(&e))
        })?;
        tally.add(chunk.len());
        Ok(chunk)
    })
}

struct Tally {
    bytes: u64,
    done: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl Tally {
    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.bytes);
        }
    }
}
