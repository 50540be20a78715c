//! Streamer on AWS, and the only crate that talks to AWS SDKs.
//!
//! # Layout
//!
//! - [`tables`]: the three tables, defined once (keys, indexes, stream, TTL).
//! - [`store`]: [`DynamoDbStore`], the store ports on DynamoDB.

pub mod store;
pub mod tables;

pub use store::DynamoDbStore;
pub use tables::Tables;
