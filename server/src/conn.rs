//! Connections: every accepted stream gets a read and a write deadline, so a client that stops
//! sending (an idle keep-alive connection, a request cut off mid-header) or stops reading is
//! closed after the idle timeout (`converge serve --idle-timeout`) instead of holding a file
//! descriptor, and a graceful shutdown never waits on it for longer.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;

/// How long a connection may go without reading or writing a byte, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest idle timeout: above the replication long poll (`replication::WAIT`), during
/// which a puller's connection is quiet.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A stream with deadlines.
pub type Timed<S> = Pin<Box<TimeoutStream<S>>>;

/// `stream` with read and write deadlines of `idle`.
pub fn timed<S>(stream: S, idle: Duration) -> Timed<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let mut t = TimeoutStream::new(stream);
    t.set_read_timeout(Some(idle));
    t.set_write_timeout(Some(idle));
    Box::pin(t)
}

/// A TCP listener whose connections have deadlines (and no Nagle delay: answers go out at once).
pub struct TimedListener {
    tcp: TcpListener,
    idle: Duration,
}

impl TimedListener {
    /// Wraps `tcp`; connections close after `idle` without progress.
    pub fn new(tcp: TcpListener, idle: Duration) -> Self {
        TimedListener { tcp, idle }
    }
}

impl axum::serve::Listener for TimedListener {
    type Io = Timed<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.tcp.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (timed(stream, self.idle), addr);
                }
                // Out of descriptors and the like: wait, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
