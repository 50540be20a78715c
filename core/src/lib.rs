//! The heart of Streamer: what a connection, a subscription and an async request are, the
//! graphql-transport-ws protocol as a pure state machine, and the ports through which the rest
//! of the system stores state and reaches clients.
//!
//! Nothing here performs I/O of its own or knows about AWS, Lambda or HTTP: the gateway and
//! the processor run this same code inside a Lambda invocation and inside the local server.
//!
//! # Layout
//!
//! - [`backoff`]: exponential backoff with full jitter for every retry loop.
//! - [`clock`] and [`id`]: time and identifiers are injected, so tests and snapshots are
//!   deterministic.
//! - [`request`]: the async request and its status machine
//!   (QUEUED → RUNNING → COMPLETED | FAILED | CANCELLED, RETRYING between attempts).
//! - [`batch`]: batches, whose children are counted into them exactly once.
//! - [`workflow`]: durable workflows: checkpoints, waits and wakes.
//! - [`connection`] and [`subscription`]: what the gateway persists per socket and per
//!   `requestProgress` operation.
//! - [`protocol`]: graphql-transport-ws messages, parsed strictly, and the session step
//!   function `(state, message) → (state, messages to send, effects)`.
//! - [`store`] and [`sender`]: the ports. [`store::Change`] is the processor's input, shaped
//!   like a DynamoDB stream record.
//! - [`limits`]: [`Limits`] on what one client may ask, with clear errors.
//! - [`memory`]: [`MemoryStore`], the embedded store with its own ordered change feed.
//! - [`lag`]: [`LaggingIndexes`], index queries answered late, as DynamoDB's indexes are.
//! - [`metric`]: the names of the metrics the other crates record.
//! - [`calls`]: the cloud API calls this process made, by service and operation.

pub mod auth;
pub mod backoff;
pub mod batch;
pub mod calls;
pub mod clock;
pub mod connection;
mod error;
pub mod id;
pub mod lag;
pub mod limits;
pub mod memory;
pub mod metric;
pub mod protocol;
pub mod request;
pub mod sender;
pub mod store;
pub mod subscription;
pub mod template;
pub mod workflow;

pub use auth::{Access, AuthError, Authenticator, Credentials, DEV_TENANT, DevMode, Principal};
pub use backoff::Backoff;
pub use batch::{BatchProgress, ChildMove, ChildState, ParentLink};
pub use clock::{Clock, ManualClock, SystemClock};
pub use connection::{
    Connection, MAX_CONNECTION_LIFETIME, Phase, completed_early_at, completed_early_mark,
};
pub use error::{Error, Result};
pub use id::{IdGenerator, RandomIds, SequentialIds};
pub use lag::LaggingIndexes;
pub use limits::{LimitExceeded, Limits, json_len};
pub use memory::{MemorySender, MemoryStore};
pub use request::{AsyncRequest, Claimed, PRIORITIES, RequestError, RequestStatus, WORKER_LOST};
pub use sender::Sender;
pub use store::{Change, ChangeKind, Finish, Page, RequestFilter, Store};
pub use subscription::{Subscription, SubscriptionKey};
pub use template::RequestTemplate;
pub use workflow::{Checkpoint, Wait};
