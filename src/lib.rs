//! Streamer runs jobs that take minutes behind a serverless GraphQL API: a mutation enqueues
//! a job and returns at once; a `requestProgress(id)` subscription over graphql-transport-ws
//! streams every progress state and the typed result.
//!
//! This is the crate an application depends on, and the only one: register typed
//! [`Handler`]s on an [`App`], then run it locally ([`App::local`]) or build the Lambda
//! functions around it ([`lambda`], feature `lambda`).
//!
//! ```no_run
//! use streamer::async_graphql::{InputObject, SimpleObject};
//! use streamer::{App, Handler, JobContext, JobError};
//!
//! #[derive(InputObject)]
//! #[graphql(crate = "streamer::async_graphql")]
//! struct ResizeInput { url: String }
//!
//! #[derive(SimpleObject, serde::Serialize)]
//! #[graphql(crate = "streamer::async_graphql")]
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
//! # The supported API
//!
//! - The app: [`App`], [`Handler`], [`JobContext`], [`JobError`], [`Backoff`], [`Handlers`],
//!   and how workers run jobs, [`WorkerSettings`].
//! - Who may do what, and how much: [`Limits`], [`Access`], [`Authenticator`], [`DevMode`],
//!   [`JwtAuthenticator`], [`Principal`], [`Credentials`], [`AuthError`].
//! - Requests: [`RequestStatus`], [`RequestError`].
//! - Time: [`Clock`], [`SystemClock`].
//! - Feature `local` (on by default): the whole stack in one process, [`App::local`],
//!   [`StackBuilder`], [`Stack`], its [`Backend`]s ([`Embedded`]), the local server's
//!   [`Timeouts`] and [`SocketLimits`], and the local Management API's
//!   [`ManagementCredentials`].
//! - Feature `dynamodb`: [`Tables`], [`SenderOptions`]; with `local`, [`DynamoDbBackend`]
//!   (the local stack on DynamoDB or DynamoDB Local) and [`ThroughManagementApi`] (the
//!   embedded store posting through the local Management API).
//! - Feature `lambda`: [`lambda`], the four Lambda functions around an app.
//! - Feature `testing`: [`testing`], the test kit.
//! - [`async_graphql`]: the GraphQL crate, for the input and output derives.
//!
//! Everything else the crate exports is hidden from these docs: the implementation's own
//! crates reach it, and it may change without notice.
//!
//! # Derives without an `async-graphql` dependency
//!
//! The derives of [`async_graphql`] name their crate in the code they generate. An app that
//! depends on `streamer` alone tells them where it is with `#[graphql(crate = ...)]`:
//!
//! ```
//! use streamer::async_graphql::{InputObject, SimpleObject};
//!
//! #[derive(InputObject)]
//! #[graphql(crate = "streamer::async_graphql")]
//! struct ResizeInput { url: String, width: Option<i32> }
//!
//! #[derive(SimpleObject, serde::Serialize)]
//! #[graphql(crate = "streamer::async_graphql")]
//! struct Resized { url: String }
//! ```
//!
//! An app that depends on `async-graphql` 7 itself may leave the attribute out.

#[cfg(all(feature = "dynamodb", feature = "local"))]
mod dynamodb;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use streamer_core::{
    Access, AuthError, Authenticator, Backoff, Clock, Credentials, DevMode, Limits, Principal,
    RequestError, RequestStatus, SystemClock,
};
pub use streamer_gateway::JwtAuthenticator;
pub use streamer_processor::WorkerSettings;
pub use streamer_schema::async_graphql;
pub use streamer_schema::{Handler, Handlers, JobContext, JobError};

#[cfg(all(feature = "dynamodb", feature = "local"))]
pub use dynamodb::{DynamoDbBackend, ThroughManagementApi};
#[cfg(feature = "dynamodb")]
pub use streamer_aws::{SenderOptions, Tables};
#[cfg(feature = "local")]
pub use streamer_local::{
    Backend, Embedded, ManagementCredentials, SocketLimits, Stack, StackBuilder, Timeouts,
};

/// The four Lambda functions around an app's handlers, each a thin `main`:
///
/// ```no_run
/// # fn app() -> streamer::App { streamer::App::new() }
/// #[tokio::main]
/// async fn main() -> Result<(), streamer::lambda::Error> {
///     streamer::lambda::run_gateway(app().handlers()).await
/// }
/// ```
///
/// Each reads its settings from `STREAMER_*` environment variables once, at start
/// ([`Config`](lambda::Config)); a malformed value stops it with an error naming the
/// variable. `deploy/README.md` lists them.
#[cfg(feature = "lambda")]
pub mod lambda {
    pub use streamer_lambda::{
        Config, ConfigError, Error, run_gateway, run_processor, run_sweeper, run_worker,
    };
}

// The implementation's crates, for the workspace's own crates, tests and tools.
#[cfg(feature = "dynamodb")]
#[doc(hidden)]
pub use streamer_aws as aws;
#[doc(hidden)]
pub use streamer_core as core;
#[doc(hidden)]
pub use streamer_gateway as gateway;
#[cfg(feature = "local")]
#[doc(hidden)]
pub use streamer_local as local;
#[doc(hidden)]
pub use streamer_processor as processor;
#[doc(hidden)]
pub use streamer_schema as schema;

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
    #[cfg(feature = "local")]
    pub fn local(self) -> local::StackBuilder {
        local::Stack::builder(self.handlers())
    }
}
