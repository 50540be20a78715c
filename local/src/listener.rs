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
                head_end: 0,
            };
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection whose handshake is timed: until the client's request head has arrived (or
/// the server answers first), reading fails once the time is up, which ends the connection.
/// A request whose answer takes longer (a large batch on a slow store) is not cut off.
#[derive(Debug)]
pub(crate) struct GuardedStream {
    inner: TcpStream,
    /// The deadline and the handshake slot, until the head has arrived or the server answers.
    handshake: Option<(Pin<Box<Sleep>>, OwnedSemaphorePermit)>,
    /// How much of the blank line that ends a request head (`\r\n\r\n`) was read last.
    head_end: usize,
}

/// The end of an HTTP request head.
const HEAD_END: &[u8] = b"\r\n\r\n";

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
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.handshake.is_some() && matches!(read, Poll::Ready(Ok(()))) {
            let mut matched = self.head_end;
            for &byte in &buf.filled()[before..] {
                matched = if byte == HEAD_END[matched] {
                    matched + 1
                } else {
                    usize::from(byte == HEAD_END[0])
                };
                if matched == HEAD_END.len() {
                    self.handshake = None;
                    break;
                }
            }
            self.head_end = matched;
        }
        read
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server on a listener that gives a handshake `timeout`, answering `/slow` after
    /// `work`.
    async fn serve(timeout: Duration, work: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/slow",
            axum::routing::post(move || async move {
                tokio::time::sleep(work).await;
                "done"
            }),
        );
        let listener = GuardedListener::new(listener, 4, timeout);
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn exchange(addr: SocketAddr, chunks: &[&[u8]], pause: Duration) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for chunk in chunks {
            if stream.write_all(chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn the_deadline_bounds_the_request_head_not_the_answer() {
        let addr = serve(Duration::from_millis(200), Duration::from_millis(600)).await;
        let request: &[u8] =
            b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        // Sent at once, answered after longer than the deadline.
        let answer = exchange(addr, &[request], Duration::ZERO).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.ends_with("done"));
        // A head trickled in past the deadline is dropped unanswered.
        let trickled: Vec<&[u8]> = request.chunks(8).collect();
        let answer = exchange(addr, &trickled, Duration::from_millis(40)).await;
        assert_eq!(answer, "");
    }
}
