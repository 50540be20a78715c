//! Streamer runs jobs that take minutes behind a serverless GraphQL API: a mutation enqueues
//! a job and returns at once; a `requestProgress(id)` subscription over graphql-transport-ws
//! streams every progress state and the typed result.
//!
//! This is the crate an application depends on: register typed [`Handler`]s on an [`App`],
//! then run it locally ([`App::local`]) or build the Lambda functions around it.
//!
//! ```no_run
//! use streamer::async_graphql::{InputObject, SimpleObject};
//! use streamer::{App, Handler, JobContext, JobError};
//!
//! #[derive(InputObject)]
//! struct ResizeInput { url: String }
//!
//! #[derive(SimpleObject, serde::Serialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Resized { url: String }
//!
//! struct Resize;
//!
//! impl Handler for Resize {
//!     const ACTION: &'static str = "resize";
//!     type Input = ResizeInput;
//!     type Output = Resized;
//!
//!     async fn process(&self, input: ResizeInput, job: JobContext) -> Result<Resized, JobError> {
//!         job.progress(0.5, "resizing").await?;
//!         Ok(Resized { url: format!("{}?w=200", input.url) })
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let stack = App::new().register(Resize).local().build().expect("valid schema");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
//! stack.run(listener, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! # Layout
//!
//! The workspace splits along the boundaries of the deployment:
//!
//! - [`core`] (`streamer-core`): domain, the sans-IO protocol, the store and sender ports,
//!   the embedded store. No AWS, Lambda or HTTP.
//! - [`schema`] (`streamer-schema`): the GraphQL schema and the typed handler registry.
//! - [`gateway`] (`streamer-gateway`): API Gateway WebSocket events → protocol → store/sender.
//! - [`processor`] (`streamer-processor`): change feed → jobs and fan-out.
//! - [`local`] (`streamer-local`): the local API Gateway emulator and the one-process stack.
//! - [`aws`] (`streamer-aws`): DynamoDB store, stream records and poller, Management API
//!   sender; the only crate that talks to AWS SDKs.
//! - [`DynamoDbBackend`] (here): the local stack on DynamoDB Local.
//! - `testing` (here, feature `testing`): the test kit, to run a handler as a worker would
//!   and read its reports and outcome.

mod dynamodb;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use dynamodb::DynamoDbBackend;
pub use streamer_aws as aws;
pub use streamer_core as core;
pub use streamer_gateway as gateway;
pub use streamer_local as local;
pub use streamer_processor as processor;
pub use streamer_schema as schema;
pub use streamer_schema::async_graphql;
pub use streamer_schema::{Handler, Handlers, JobContext, JobError};

/// An application: its registered handlers.
#[derive(Debug, Default)]
pub struct App {
    handlers: Handlers,
}

impl App {
    /// An application with no handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a handler: adds its typed mutation field and its output type to
    /// `RequestOutput`.
    ///
    /// # Panics
    ///
    /// When its action is already registered.
    pub fn register<H: Handler>(mut self, handler: H) -> Self {
        self.handlers.register(handler);
        self
    }

    /// The registered handlers.
    pub fn handlers(self) -> Arc<Handlers> {
        Arc::new(self.handlers)
    }

    /// The whole stack in one process on the embedded store; configure and `build` it.
    pub fn local(self) -> local::StackBuilder {
        local::Stack::builder(self.handlers())
    }
}
