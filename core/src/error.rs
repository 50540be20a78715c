use std::error::Error as StdError;

/// The result of every port and domain operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong below the GraphQL layer. Variants are typed where a caller branches on
/// them: a lost conditional write ([`Error::Conflict`]) means "someone else won", a gone
/// connection ([`Error::Gone`]) means "prune it"; everything else keeps its source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A conditional write found the item in another state than expected.
    #[error("conditional write lost: {0}")]
    Conflict(String),
    /// Another push to a subscription of this request is in flight: the change must not
    /// overtake it, and is handled again later.
    #[error("a push is in flight: {0}")]
    Busy(String),
    /// The attempt that asked is no longer the request's current one (another worker took
    /// the request over after its lease passed).
    #[error("attempt superseded: {0}")]
    Superseded(String),
    /// The item that an operation needs does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The connection no longer exists (HTTP 410 from the Management API).
    #[error("connection {0} is gone")]
    Gone(String),
    /// The Management API refused a frame as too large for the connection (HTTP 413).
    #[error("the frame for connection {0} is too large")]
    TooLarge(String),
    /// A write would take the tenant past one of its quotas.
    #[error("quota full: {0}")]
    QuotaFull(String),
    /// A request was asked to make a move its status does not allow.
    #[error("request {id} cannot {action} while {status}")]
    Transition {
        /// The request id.
        id: String,
        /// The move that was refused.
        action: &'static str,
        /// The status it was in.
        status: crate::RequestStatus,
    },
    /// A backend (DynamoDB, the Management API, a socket) failed; the source is kept.
    #[error("{context}")]
    Backend {
        /// What was being done.
        context: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl Error {
    /// Wraps a backend error with what was being done when it happened.
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}
