//! The sender port: how a server reaches a client socket it does not hold.
//!
//! On AWS it is the Management API (`PostToConnection`, `DeleteConnection`); locally, the
//! local server's sockets. Both the gateway and the processor push through it.

use async_trait::async_trait;

use crate::{Result, protocol::Close};

/// Pushes frames to, and closes, client connections by id.
#[async_trait]
pub trait Sender: Send + Sync + std::fmt::Debug {
    /// Sends one text frame. [`crate::Error::Gone`] when the connection no longer exists.
    async fn post(&self, connection_id: &str, data: &str) -> Result<()>;
    /// Closes the connection. Where the transport cannot choose a close code (API Gateway), it
    /// deletes the connection and records the intended code.
    async fn close(&self, connection_id: &str, close: &Close) -> Result<()>;
}
