//! Streamer on AWS, and the only crate that talks to AWS SDKs.
//!
//! # Layout
//!
//! - [`tables`]: the tables (connections, subscriptions, requests, history), defined once
//!   (keys, indexes, stream, TTL).
//! - [`items`]: connections, subscriptions and requests as items.
//! - [`store`]: [`DynamoDbStore`], the store ports on DynamoDB.
//! - [`conflicts`]: [`RetryTransactionConflicts`], single writes refused by a transaction in
//!   flight tried again.
//! - [`stream`]: DynamoDB stream records → changes; one batch handled with partial batch
//!   failures.
//! - [`poller`]: [`StreamPoller`], the event source mapping's job outside Lambda.
//! - [`sender`]: [`ApiGatewaySender`], the sender port on the Management API.
//! - [`dispatch`]: [`LambdaDispatcher`], jobs started by invoking the worker function.
//! - [`clients`]: [`Aws`], the SDK configuration from the environment.

pub mod calls;
pub mod clients;
pub mod conflicts;
pub mod dispatch;
pub mod items;
pub mod poller;
pub mod sender;
pub mod store;
pub mod stream;
pub mod tables;

pub use calls::CountCalls;
pub use clients::Aws;
pub use conflicts::RetryTransactionConflicts;
pub use dispatch::{LambdaDispatcher, WorkerEvent};
pub use poller::{PollerOptions, StartingPosition, StreamPoller};
pub use sender::{ApiGatewaySender, PushFailure, SenderOptions};
pub use store::DynamoDbStore;
pub use stream::StreamEvent;
pub use tables::Tables;

/// The Region local clients name (DynamoDB Local and the local server ignore it).
const LOCAL_REGION: &str = "us-east-1";
