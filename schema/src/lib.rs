//! Streamer's GraphQL layer: the public schema (ARCHITECTURE.md; its SDL is snapshot-tested
//! in `tests/snapshots/schema__sdl.snap`), the typed handler registry
//! behind its per-action mutations and its `RequestOutput` union, and the execution of a
//! stored subscription document against one state of a request.
//!
//! The schema is dynamic because handlers are registered at run time; their input and output
//! types are ordinary `#[derive(InputObject)]` / `#[derive(SimpleObject)]` types, rebuilt as
//! dynamic types by `bridge`.
//!
//! # Layout
//!
//! - [`handler`]: the [`Handler`] trait, [`JobContext`], [`JobError`], and [`Handlers`], the
//!   type-erased registry.
//! - `bridge`: static async-graphql types → dynamic types.
//! - [`schema`]: [`build`] the schema over [`Services`] (store, clock, ids).
//! - [`delivery`]: pushing one state to one subscription, and pruning gone connections.
//! - [`execute`]: operation kinds, subscription validation without execution, and
//!   [`resolve`](execute::resolve) of a stored document for one state.

mod batches;
mod bridge;
pub mod delivery;
pub mod document;
mod durable;
pub mod execute;
pub mod handler;
mod projection;
pub mod schema;
mod templates;

pub use async_graphql;
pub use async_graphql::dynamic::Schema;
pub use delivery::{Delivery, PUSH_HOLD_MS, Pusher, Resolutions, next_or_error, prune_connection};
pub use execute::{OperationKind, Target};
pub use handler::{Handler, Handlers, JOB_BACKOFF, JobContext, JobError, ProgressSink, Registered};
pub use schema::{ResultBudget, Services, build, build_for_stored_documents};
