//! Streamer's processor: consumes the ordered change feed of requests (DynamoDB Streams on
//! AWS, the embedded store's feed locally), starts the job of every newly queued request
//! without waiting for it, and pushes every change a client can see to each subscription of
//! its request, resolved against the subscription's own GraphQL document.
//!
//! # Layout
//!
//! - [`processor`]: [`Processor::handle_batch`], the [`Dispatcher`] port and fan-out.
//! - [`worker`]: [`Worker::run`]: claim, run the handler with a progress sink, record the
//!   outcome (retries with exponential backoff and full jitter).
//! - [`sweeper`]: [`Sweeper`], periodic work: init timeouts, due retries, lost dispatches.
//! - [`local`]: [`TaskDispatcher`], jobs as bounded tokio tasks.
//! - [`fair`]: [`FairDispatcher`], a tenant's share of the job slots for dispatchers that
//!   keep no queue of their own (the worker function on AWS).

pub mod fair;
pub mod local;
pub mod processor;
pub mod sweeper;
pub mod worker;

pub use fair::FairDispatcher;
pub use local::TaskDispatcher;
pub use processor::{BatchOutcome, Dispatcher, Processor};
pub use streamer_schema::JOB_BACKOFF;
pub use sweeper::{SweepOptions, SweepReport, Sweeper};
pub use worker::{
    CancelSignal, DEFAULT_CANCEL_GRACE, DEFAULT_LEASE, DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_TIME_LIMIT, Outcome, RESULT_TOO_LARGE, Worker, WorkerSettings,
};
