//! Streamer on one machine: a local server that behaves like API Gateway's WebSocket API
//! (Management API included) in front of the same gateway code that runs in Lambda, and the
//! processor fed by the store's changes.
//!
//! # Layout
//!
//! - [`server`]: [`Server`], the WebSocket + HTTP server (`/graphql`, `/@connections/{id}`, GraphiQL).
//! - `events`: socket happenings → API Gateway WebSocket events.
//! - `sigv4`: checking the SigV4 signature of a Management API call.
//! - `listener`: accepting connections with a handshake timeout and a bound on pending ones.
//! - [`sockets`]: the open sockets and [`LocalSender`].
//! - [`stack`]: [`Stack`], everything wired together on a [`Backend`]: the embedded store
//!   ([`Embedded`]) by default.

mod events;
mod listener;
pub mod server;
mod sigv4;
pub mod sockets;
pub mod stack;

pub use server::{Server, SocketLimits, Timeouts};
pub use sigv4::ManagementCredentials;
pub use sockets::{LocalSender, Sockets};
pub use stack::{Backend, Embedded, InProcess, Stack, StackBuilder};
