//! Calls to the cloud's APIs (DynamoDB, DynamoDB Streams, the Management API, Lambda) made by
//! this process, counted by service and operation: what a job costs in requests. The AWS
//! clients record every attempt they send here (and as the `AwsCalls` metric); the local
//! server serves the counts at `GET /stats`, and the load generator reports them per job.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

static CALLS: LazyLock<Mutex<BTreeMap<String, u64>>> = LazyLock::new(Mutex::default);

tokio::task_local! {
    /// The periodic work whose calls are being made, if any ([`within`]).
    static PART: &'static str;
}

/// Runs `work` with the calls it makes (in this task) counted as `part`'s:
/// `part/service.operation`. The sweeper's calls are counted so, apart from a job's: they
/// are a cost per minute, whatever the number of jobs.
pub async fn within<F: Future>(part: &'static str, work: F) -> F::Output {
    PART.scope(part, work).await
}

/// Counts one call of `operation` on `service`.
pub fn record(service: &str, operation: &str) {
    let key = match PART.try_with(|part| *part) {
        Ok(part) => format!("{part}/{service}.{operation}"),
        Err(_) => format!("{service}.{operation}"),
    };
    let mut calls = CALLS.lock().expect("calls lock");
    *calls.entry(key).or_default() += 1;
}

/// The calls counted so far, by `service.operation` (`part/service.operation` for those
/// made [`within`] a part).
pub fn snapshot() -> BTreeMap<String, u64> {
    CALLS.lock().expect("calls lock").clone()
}
