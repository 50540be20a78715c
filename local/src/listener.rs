//! Accepting connections as API Gateway would let them in: a client has a few seconds to
//! send its handshake (a client trickling its headers one byte a second is dropped), and
//! only so many connections may be in their handshake at once, so that slow ones cannot take
//! every file descriptor from the clients behind them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// A listener whose connections must finish their handshake in time, at most so many at once.
#[derive(Debug)]
pub(crate) struct GuardedListener {
    listener: TcpListener,
    handshakes: Arc<Semaphore>,
    timeout: Duration,
}

impl GuardedListener {
    pub(crate) fn new(listener: TcpListener, pending: usize, timeout: Duration) -> Self {
        Self {
            listener,
            handshakes: Arc::new(Semaphore::new(pending.max(1))),
            timeout,
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, typically: wait rather than spin.
                    tracing::warn!(error = ?error.to_string(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.handshakes).try_acquire_owned() else {
                tracing::warn!(peer = %addr, "refused: too many connections in their handshake");
                drop(stream);
                continue;
            };
            // Frames go out as soon as they are flushed, as API Gateway's do: no Nagle delay
            // behind an unacknowledged frame.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(error = ?error.to_string(), "TCP_NODELAY not set");
            }
            let stream = GuardedStream {
                inner: stream,
                handshake: Some((Box::pin(tokio::time::sleep(self.timeout)), permit)),
            };
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection whose handshake is timed: until the server first answers (the end of the
/// client's request head), reading fails once the time is up, which ends the connection.
#[derive(Debug)]
pub(crate) struct GuardedStream {
    inner: TcpStream,
    /// The deadline and the handshake slot, until the server answers.
    handshake: Option<(Pin<Box<Sleep>>, OwnedSemaphorePermit)>,
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some((deadline, _)) = self.handshake.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.handshake = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request in time",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // The server answers: the handshake is over.
        self.handshake = None;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.handshake = None;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The address of a client, as handlers read it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuardedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, GuardedListener>) -> Self {
        Self(*stream.remote_addr())
    }
}
