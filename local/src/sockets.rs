//! The open sockets of the local server, and [`LocalSender`], which reaches them by
//! connection id as the Management API does on AWS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use streamer_core::protocol::Close;
use streamer_core::{Error, Result, Sender};
use tokio::sync::mpsc;

/// A frame for a socket's writer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outgoing {
    Text(String),
    Close(Close),
}

#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) tx: mpsc::UnboundedSender<Outgoing>,
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
        let sockets = self.read();
        let socket = sockets.get(id).ok_or_else(|| Error::Gone(id.to_owned()))?;
        socket
            .tx
            .send(frame)
            .map_err(|_| Error::Gone(id.to_owned()))
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
