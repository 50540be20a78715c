//! Streamer's four Lambda functions around an application's handlers, each a thin `main`:
//!
//! ```no_run
//! # fn handlers() -> std::sync::Arc<streamer_schema::Handlers> {
//! #     std::sync::Arc::new(streamer_schema::Handlers::default())
//! # }
//! #[tokio::main]
//! async fn main() -> Result<(), streamer_lambda::Error> {
//!     streamer_lambda::run_gateway(handlers()).await
//! }
//! ```
//!
//! - gateway: the WebSocket routes (`$connect`, `$disconnect`, `$default`) and GraphQL over
//!   HTTP (an HTTP API route or a function URL, payload format 2.0);
//! - processor: DynamoDB stream batches of the requests table → jobs dispatched to the worker
//!   and pushes; answers with `batchItemFailures` (`ReportBatchItemFailures`);
//! - worker: runs one job, invoked asynchronously by the processor (`{"requestId": …}`);
//! - sweeper: on a schedule, closes connections that never initialised, dispatches due
//!   retries and lost dispatches.
//!
//! Settings come from the environment once ([`Config`]), SDK clients are built once, logs are
//! JSON ([`logging`]) and metrics are flushed as CloudWatch EMF after every invocation
//! ([`emf`]).
//!
//! # Layout
//!
//! - [`config`]: [`Config`], the settings.
//! - [`functions`]: the four `run_*` entry points.
//! - [`logging`] and [`emf`]: observability.

pub mod config;
pub mod emf;
pub mod functions;
pub mod logging;

pub use config::{Config, ConfigError};
pub use functions::{run_gateway, run_processor, run_sweeper, run_worker};

/// The error a function's `main` returns.
pub type Error = lambda_runtime::Error;
