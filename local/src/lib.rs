//! Streamer on one machine: a local server that behaves like API Gateway's WebSocket API
//! (Management API included) in front of the same gateway code that runs in Lambda, and the
//! processor fed by the embedded store's change feed.
//!
//! # Layout
//!
//! - [`server`]: [`Server`], the WebSocket + HTTP server (`/graphql`, `/@connections/{id}`, GraphiQL).
//! - `events`: socket happenings → API Gateway WebSocket events.
//! - [`sockets`]: the open sockets and [`LocalSender`].
//! - [`stack`]: [`Stack`], everything wired together on the embedded store.

mod events;
pub mod server;
pub mod sockets;
pub mod stack;

pub use server::Server;
pub use sockets::{LocalSender, Sockets};
pub use stack::{Stack, StackBuilder};
