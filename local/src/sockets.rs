//! The open sockets of the local server, and [`LocalSender`], which reaches them by
//! connection id as the Management API does on AWS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    pub(crate) last_active_at: DateTime<Utc>,
    pub(crate) source_ip: String,
    pub(crate) user_agent: Option<String>,
}

/// The open sockets, by connection id.
#[derive(Debug, Clone, Default)]
pub struct Sockets {
    // A std Mutex: lookups and inserts only, never held across an await.
    inner: Arc<Mutex<HashMap<String, Socket>>>,
}

impl Sockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Socket>> {
        self.inner.lock().expect("sockets lock")
    }

    pub(crate) fn insert(&self, id: String, socket: Socket) {
        self.lock().insert(id, socket);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub(crate) fn touch(&self, id: &str, at: DateTime<Utc>) {
        if let Some(socket) = self.lock().get_mut(id) {
            socket.last_active_at = at;
        }
    }

    pub(crate) fn send(&self, id: &str, frame: Outgoing) -> Result<()> {
        let sockets = self.lock();
        let socket = sockets.get(id).ok_or_else(|| Error::Gone(id.to_owned()))?;
        socket
            .tx
            .send(frame)
            .map_err(|_| Error::Gone(id.to_owned()))
    }

    /// `GetConnection`'s answer: connectedAt, lastActiveAt, identity.
    pub(crate) fn describe(&self, id: &str) -> Option<serde_json::Value> {
        let sockets = self.lock();
        let socket = sockets.get(id)?;
        Some(serde_json::json!({
            "connectedAt": socket.connected_at.to_rfc3339(),
            "lastActiveAt": socket.last_active_at.to_rfc3339(),
            "identity": { "sourceIp": socket.source_ip, "userAgent": socket.user_agent },
        }))
    }

    /// How many sockets are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no socket is open.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
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
