//! Connections: every accepted stream gets a read and a write deadline, so a client that stops
//! sending (an idle keep-alive connection, a request cut off mid-header) or stops reading is
//! closed after the idle timeout (`converge serve --idle-timeout`) instead of holding a file
//! descriptor; a request's head must arrive within the same time however slowly it trickles
//! in; and a graceful shutdown waits for requests in flight at most that long ([`serve`]).

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
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

/// Serves `app` on `listener` over HTTP/1.1 until `shutdown` completes; then stops accepting
/// and lets the requests in flight finish, for at most `idle` (then the connections are
/// dropped). A request's head must arrive within `idle` of the connection's turn to send one.
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(idle);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (io, _) = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
                tokio::spawn(async move {
                    // A client that goes away or times out ends its connection; nothing to do.
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(idle, graceful.shutdown()).await;
}
