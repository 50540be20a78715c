//! Calls to the cloud's APIs (DynamoDB, DynamoDB Streams, the Management API, Lambda) made by
//! this process, counted by service and operation: what a job costs in requests. The AWS
//! clients record every attempt they send here (and as the `AwsCalls` metric); the local
//! server serves the counts at `GET /stats`, and the load generator reports them per job.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

static CALLS: LazyLock<Mutex<BTreeMap<String, u64>>> = LazyLock::new(Mutex::default);

/// Counts one call of `operation` on `service`.
pub fn record(service: &str, operation: &str) {
    let mut calls = CALLS.lock().expect("calls lock");
    *calls.entry(format!("{service}.{operation}")).or_default() += 1;
}

/// The calls counted so far, by `service.operation`.
pub fn snapshot() -> BTreeMap<String, u64> {
    CALLS.lock().expect("calls lock").clone()
}
