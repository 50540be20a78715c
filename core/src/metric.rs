//! The names of the metrics every part records through the `metrics` facade; on Lambda they
//! are flushed as CloudWatch Embedded Metric Format after each invocation, elsewhere they
//! cost nothing unless a recorder is installed.

/// Counter: connections accepted on `$connect`.
pub const CONNECTIONS_OPENED: &str = "ConnectionsOpened";
/// Counter: connections ended (`$disconnect`).
pub const CONNECTIONS_CLOSED: &str = "ConnectionsClosed";
/// Counter: `requestProgress` subscriptions stored.
pub const SUBSCRIPTIONS_STARTED: &str = "SubscriptionsStarted";
/// Counter, label `status`: requests entering each status (one per visible change).
pub const REQUESTS: &str = "Requests";
/// Histogram (milliseconds): from a state's write to its push by the processor.
pub const PUSH_LATENCY: &str = "PushLatency";
/// Counter, label `kind` (`gone`, `throttled`, `too_large`, `forbidden`, `other`): failed
/// pushes.
pub const PUSHES_FAILED: &str = "PushesFailed";
/// Histogram (milliseconds): one run of a handler.
pub const JOB_DURATION: &str = "JobDuration";
/// Counter: attempts that ended in a retry.
pub const RETRIES: &str = "Retries";
/// Counter: requests that failed for good (dead letters).
pub const DEAD_LETTERS: &str = "DeadLetters";
/// Counter, label `code`: close codes the protocol asked for that API Gateway could not send.
pub const INTENDED_CLOSES: &str = "IntendedCloses";
/// Counter: connections closed for not sending `connection_init` in time.
pub const INIT_TIMEOUTS: &str = "InitTimeouts";
/// Counter: jobs held back because their tenant was running its share of the job slots.
pub const DISPATCH_DEFERRED: &str = "DispatchDeferred";

/// Counter, labels `service` and `operation`: calls sent to an AWS API (each attempt).
pub const AWS_CALLS: &str = "AwsCalls";

/// The unit of a metric, for exporters.
pub fn unit(name: &str) -> &'static str {
    match name {
        PUSH_LATENCY | JOB_DURATION => "Milliseconds",
        _ => "Count",
    }
}
