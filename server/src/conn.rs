//! Connections: every accepted stream gets a deadline that any byte read or written pushes back,
//! so a connection that makes no progress either way (an idle keep-alive connection, a request
//! cut off mid-header, a client that stops reading) is closed after the idle timeout
//! (`converge serve --idle-timeout`) instead of holding a file descriptor, while a slow client
//! that keeps reading or sending is served; a request's head must arrive within the same time however slowly it trickles
//! in; and a graceful shutdown waits for requests in flight at most that long ([`serve`]).

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// How long a connection may go without reading or writing a byte, by default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest idle timeout: above the replication long poll (`replication::WAIT`), during
/// which a puller's connection is quiet.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A stream with one deadline that progress in either direction pushes back: a connection
/// that neither reads nor writes a byte for the idle time fails with `TimedOut` when next
/// polled. (A slow client reading a long answer is making progress; so is a slow upload.)
pub struct Timed<S> {
    inner: S,
    idle: Duration,
    last_progress: Instant,
    deadline: Pin<Box<Sleep>>,
}

/// At most this much of an answer waits unsent in the kernel (`TCP_NOTSENT_LOWAT`, Linux), so
/// a socket becomes writable again, and counts as progress, each time a slow reader takes that
/// much: without it a slow reader drains megabytes of send buffer without one write
/// succeeding, and looks idle.
pub const UNSENT_LIMIT: u32 = 128 << 10;

/// Readies an accepted socket: no Nagle delay (answers go out at once) and the unsent limit.
pub fn prepare(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(UNSENT_LIMIT);
}

/// `stream` with an idle deadline of `idle`.
pub fn timed<S>(stream: S, idle: Duration) -> Timed<S> {
    let now = Instant::now();
    Timed {
        inner: stream,
        idle,
        last_progress: now,
        deadline: Box::pin(tokio::time::sleep_until(now + idle)),
    }
}

impl<S> Timed<S> {
    fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    /// A write's outcome: bytes written are progress; a write that must wait is subject to
    /// the deadline.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.progress();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.pending_or_expired(cx),
        }
    }

    /// Pending, unless the connection has been idle for the whole deadline. The timer is
    /// moved only when it fires, so progress costs a clock read, not a timer update.
    fn pending_or_expired<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_progress + self.idle;
            if due <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle for the idle timeout",
                )));
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.progress();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.pending_or_expired(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending_or_expired(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.pending_or_expired(cx),
            ready => ready,
        }
    }
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
                    prepare(&stream);
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
