//! Streaming a snapshot: the store writes it from a blocking task into a channel
//! ([`ChannelWriter`]), the response body reads the channel ([`ChannelBody`]); and reading one
//! from a peer to join ([`join`]).

use bytes::Bytes;
use converge_core::{Error, SnapshotSummary, Store};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

type Chunk = Result<Bytes, Error>;

/// Bytes written are sent in chunks of this size.
const CHUNK: usize = 256 << 10;

/// An `io::Write` into a channel, in chunks; a closed channel (the client went away) is a
/// broken pipe, which stops the snapshot.
pub struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// A writer sending into `tx`.
    pub fn new(tx: mpsc::Sender<Chunk>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the joining region went away",
            )
        })
    }

    /// Sends what is buffered.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.send()
            .map_err(|e| Error::Storage(format!("snapshot stream: {e}")))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A response body over the channel's chunks; an error after the start cuts the stream off
/// (the joining region sees a truncated snapshot and says so).
pub struct ChannelBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Chunk>,
}

impl ChannelBody {
    /// The body: `first`, then what the channel brings.
    pub fn new(first: Bytes, rx: mpsc::Receiver<Chunk>) -> Self {
        ChannelBody {
            first: Some(first),
            rx,
        }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Joins the (empty) `store` from a snapshot of the region at `url` (`GET
/// /_replication/snapshot`), calling `progress` with the items applied and the count announced.
pub fn join(
    store: &Store,
    url: &str,
    key: Option<&str>,
    tls: ureq::tls::TlsConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SnapshotSummary, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let base = url.trim_end_matches('/');
    let mut req = agent.get(format!(
        "{base}/_replication/snapshot?region={}&store={}",
        store.region(),
        store.store_id()
    ));
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut resp = req
        .call()
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    if resp.status() != 200 {
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let why = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(format!("{base} answered {status}: {why}"));
    }
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    store
        .join_from(&mut reader, progress)
        .map_err(|e| format!("joining from {base}: {e}"))
}
