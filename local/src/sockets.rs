//! The open sockets of the local server, and [`LocalSender`], which reaches them by
//! connection id as the Management API does on AWS.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use chrono::{DateTime, Utc};
use futures::SinkExt;
use futures::stream::SplitSink;
use streamer_core::protocol::Close;
use streamer_core::{Error, Result, Sender};
use tokio::sync::{Notify, oneshot};

/// A frame for a socket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    Text(String),
    Close(Close),
}

type Sink = SplitSink<WebSocket, Message>;

/// Where frames for one socket go. A text frame is written into the socket's buffer by the
/// thread that sends it, and flushed by a task spawned on that thread's runtime, which runs
/// once the sender yields: frames sent together go out in one write, and a push from the
/// processor does not wait for a turn on the server's busy threads. When the socket cannot
/// take a frame at once, or frames are already queued, it is queued, in order, for the
/// socket's writer task ([`Outbox::write`]), which waits as long as the client is slow to
/// read: a sender never waits for the client. Close frames always go through the writer.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    /// Signalled when the writer has work: queued frames, a write it must flush, or the end.
    work: Notify,
    /// Signalled when the client fell too far behind: the writer drops the socket.
    stop: Notify,
    /// Bytes that may wait for a slow client, and for how long a socket may stay over that.
    queue_bytes: usize,
    queue_grace: std::time::Duration,
}

/// A socket is closed at once when this many times its queue bound waits.
const QUEUE_HARD_FACTOR: usize = 8;

#[derive(Debug)]
struct OutboxState {
    /// `None` while the writer task holds it.
    sink: Option<Sink>,
    queue: VecDeque<Outgoing>,
    /// Frames written into the sink are not flushed yet.
    unflushed: bool,
    /// A flush is spawned and has not run yet.
    flush_spawned: bool,
    /// Frames are taken; once false (closed, failed or the connection gone), a send is
    /// refused as to a gone connection.
    open: bool,
    /// Bytes queued or in the writer's hands, not yet taken by the socket.
    waiting_bytes: usize,
    /// Since when `waiting_bytes` is over the bound.
    over_since: Option<tokio::time::Instant>,
}

impl Outbox {
    pub(crate) fn new(sink: Sink, queue_bytes: usize, queue_grace: std::time::Duration) -> Self {
        Self {
            state: Mutex::new(OutboxState {
                sink: Some(sink),
                queue: VecDeque::new(),
                unflushed: false,
                flush_spawned: false,
                open: true,
                waiting_bytes: 0,
                over_since: None,
            }),
            work: Notify::new(),
            stop: Notify::new(),
            queue_bytes,
            queue_grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().expect("outbox lock")
    }

    /// Writes or queues `frame`; `false` when the socket takes no more frames.
    pub(crate) fn send(self: &Arc<Self>, frame: Outgoing) -> bool {
        let mut state = self.lock();
        if !state.open {
            return false;
        }
        let nothing_queued = state.queue.is_empty();
        // Written unless something is queued before it or the writer holds the sink.
        let written = match (frame, state.sink.as_mut()) {
            (Outgoing::Text(text), Some(sink)) if nothing_queued => {
                buffer(sink, text).map_err(Outgoing::Text)
            }
            (frame, _) => Err(frame),
        };
        match written {
            Ok(()) => {
                state.unflushed = true;
                let spawn = !std::mem::replace(&mut state.flush_spawned, true);
                // Not under the lock: a runtime shutting down drops the task, and so runs its
                // flush, inside `spawn`.
                drop(state);
                if spawn {
                    self.spawn_flush();
                }
            }
            Err(frame) => {
                if let Outgoing::Text(text) = &frame {
                    state.waiting_bytes += text.len();
                }
                state.queue.push_back(frame);
                if self.over_bound(&mut state) {
                    // The client does not read: what waits for it is dropped with the socket.
                    tracing::warn!(
                        bytes = state.waiting_bytes,
                        "closing a socket whose client does not read"
                    );
                    state.open = false;
                    state.queue.clear();
                    state.waiting_bytes = 0;
                    drop(state);
                    self.stop.notify_one();
                    return false;
                }
                drop(state);
                self.work.notify_one();
            }
        }
        true
    }

    /// Whether the frames waiting for the client have been over the bound too long, or are
    /// far over it.
    fn over_bound(&self, state: &mut OutboxState) -> bool {
        if state.waiting_bytes <= self.queue_bytes {
            state.over_since = None;
            return false;
        }
        let now = tokio::time::Instant::now();
        let since = *state.over_since.get_or_insert(now);
        state.waiting_bytes > self.queue_bytes.saturating_mul(QUEUE_HARD_FACTOR)
            || now.duration_since(since) > self.queue_grace
    }

    /// Flushes on the sender's runtime once the sender yields; outside a runtime, the writer
    /// flushes.
    fn spawn_flush(self: &Arc<Self>) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let flush = Flush(Arc::clone(self));
                drop(runtime.spawn(async move { drop(flush) }));
            }
            Err(_) => self.work.notify_one(),
        }
    }

    /// Flushes what was written into the sink, if the socket takes it at once; otherwise the
    /// writer flushes it, waiting for the socket.
    fn flush(&self) {
        let mut state = self.lock();
        state.flush_spawned = false;
        if !state.unflushed {
            return;
        }
        let Some(sink) = state.sink.as_mut() else {
            // The writer holds the sink and flushes it.
            return;
        };
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        if let Poll::Ready(Ok(())) = sink.poll_flush_unpin(&mut cx) {
            state.unflushed = false;
            return;
        }
        drop(state);
        self.work.notify_one();
    }

    /// No more frames: the writer sends what is queued, answers the client's close and ends.
    pub(crate) fn finish(&self) {
        self.lock().open = false;
        self.work.notify_one();
    }

    /// The socket's writer task: sends what could not be written at once, flushes what could
    /// not be flushed, and sends the close frame. Reports a close it sent through `closed`;
    /// dropping it unsent means the socket failed.
    pub(crate) async fn write(&self, closed: oneshot::Sender<(u16, String)>) {
        loop {
            self.work.notified().await;
            loop {
                let (mut sink, frames, open) = {
                    let mut state = self.lock();
                    let idle = state.queue.is_empty() && !state.unflushed;
                    if idle && state.open {
                        break;
                    }
                    let Some(sink) = state.sink.take() else {
                        return;
                    };
                    state.unflushed = false;
                    (sink, std::mem::take(&mut state.queue), state.open)
                };
                if frames.is_empty() && !open {
                    // Finished: answer the client's close frame and flush, or the client sees
                    // 1006 instead of its own clean close.
                    let _ = sink.close().await;
                    return;
                }
                for frame in frames {
                    match frame {
                        Outgoing::Text(text) => {
                            let bytes = text.len();
                            let fed = tokio::select! {
                                fed = sink.feed(Message::Text(text.into())) => fed.is_ok(),
                                () = self.stop.notified() => {
                                    let _ = closed.send((1008, "Client does not read".to_owned()));
                                    return;
                                }
                            };
                            if !fed {
                                self.fail(sink).await;
                                return;
                            }
                            let mut state = self.lock();
                            state.waiting_bytes = state.waiting_bytes.saturating_sub(bytes);
                            if state.waiting_bytes <= self.queue_bytes {
                                state.over_since = None;
                            }
                        }
                        Outgoing::Close(close) => {
                            self.lock().open = false;
                            let frame = CloseFrame {
                                code: close.code,
                                reason: close.reason.clone().into(),
                            };
                            let _ = sink.send(Message::Close(Some(frame))).await;
                            let _ = closed.send((close.code, close.reason));
                            return;
                        }
                    }
                }
                if sink.flush().await.is_err() {
                    self.fail(sink).await;
                    return;
                }
                self.lock().sink = Some(sink);
            }
        }
    }

    async fn fail(&self, mut sink: Sink) {
        self.lock().open = false;
        let _ = sink.close().await;
    }
}

/// Flushes its outbox when dropped: when its task runs, or when the task's runtime shuts down
/// before it could run.
struct Flush(Arc<Outbox>);

impl Drop for Flush {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Puts `text` into `sink`'s buffer without waiting; hands it back when the sink cannot take
/// it now (a failed socket too: the writer finds the failure and ends the socket).
fn buffer(sink: &mut Sink, text: String) -> std::result::Result<(), String> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match sink.poll_ready_unpin(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(_)) | Poll::Pending => return Err(text),
    }
    // An error here is the socket's failure, which the writer's flush meets.
    let _ = sink.start_send_unpin(Message::Text(text.into()));
    Ok(())
}

#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) connected_at: DateTime<Utc>,
    /// Epoch nanoseconds: updated on every frame in, under the shared lock.
    pub(crate) last_active_at: AtomicI64,
    pub(crate) source_ip: String,
    pub(crate) user_agent: Option<String>,
}

/// A time as [`Socket::last_active_at`] keeps it.
pub(crate) fn epoch_nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The open sockets, by connection id.
#[derive(Debug, Clone, Default)]
pub struct Sockets {
    // Written only when a socket opens or closes; every frame reads it, from any thread at
    // once. Never held across an await.
    inner: Arc<RwLock<HashMap<String, Socket>>>,
}

impl Sockets {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Socket>> {
        self.inner.read().expect("sockets lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Socket>> {
        self.inner.write().expect("sockets lock")
    }

    pub(crate) fn insert(&self, id: String, socket: Socket) {
        self.write().insert(id, socket);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    pub(crate) fn touch(&self, id: &str, at: DateTime<Utc>) {
        if let Some(socket) = self.read().get(id) {
            socket
                .last_active_at
                .store(epoch_nanos(at), Ordering::Relaxed);
        }
    }

    pub(crate) fn send(&self, id: &str, frame: Outgoing) -> Result<()> {
        let outbox = self.read().get(id).map(|socket| Arc::clone(&socket.outbox));
        match outbox {
            Some(outbox) if outbox.send(frame) => Ok(()),
            _ => Err(Error::Gone(id.to_owned())),
        }
    }

    /// `GetConnection`'s answer: connectedAt, lastActiveAt, identity.
    pub(crate) fn describe(&self, id: &str) -> Option<serde_json::Value> {
        let sockets = self.read();
        let socket = sockets.get(id)?;
        let last_active_at =
            DateTime::from_timestamp_nanos(socket.last_active_at.load(Ordering::Relaxed));
        Some(serde_json::json!({
            "connectedAt": socket.connected_at.to_rfc3339(),
            "lastActiveAt": last_active_at.to_rfc3339(),
            "identity": { "sourceIp": socket.source_ip, "userAgent": socket.user_agent },
        }))
    }

    /// How many sockets are open.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no socket is open.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

/// Posts to the local server's sockets in process. Unlike API Gateway, it can close with the
/// protocol's own close codes.
#[derive(Debug, Clone)]
pub struct LocalSender {
    sockets: Sockets,
}

impl LocalSender {
    /// A sender over these sockets.
    pub fn new(sockets: Sockets) -> Self {
        Self { sockets }
    }
}

#[async_trait]
impl Sender for LocalSender {
    async fn post(&self, connection_id: &str, data: &str) -> Result<()> {
        self.sockets
            .send(connection_id, Outgoing::Text(data.to_owned()))
    }

    async fn close(&self, connection_id: &str, close: &Close) -> Result<()> {
        self.sockets
            .send(connection_id, Outgoing::Close(close.clone()))
    }
}
