//! [`LambdaDispatcher`]: starts a job by invoking the worker function asynchronously
//! (`InvocationType: Event`), so that no job blocks a stream shard.

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde::{Deserialize, Serialize};
use streamer_core::{AsyncRequest, Error, Result};
use streamer_processor::Dispatcher;

/// What the worker function is invoked with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerEvent {
    /// The request whose job to run.
    pub request_id: String,
    /// The request as the change that made it runnable left it, when it is small
    /// ([`KNOWN_STATE_BYTES`]): the worker claims it from this state without reading it
    /// first (a conditional write, which reads it only if it has moved since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<AsyncRequest>>,
}

/// The largest request a worker invocation carries whole (JSON bytes); a larger one is read
/// by the worker. Well within the 256 KB of an asynchronous invocation.
pub const KNOWN_STATE_BYTES: usize = 32 * 1024;

/// Dispatches jobs to the worker function.
///
/// Lambda starts an asynchronous invocation as soon as it has concurrency for it; there is
/// no queue of waiting jobs to reorder. Priority maps to capacity instead: with
/// [`LambdaDispatcher::with_priority_function`], requests of priority above 0 go to a second
/// worker function (the same code) whose reserved concurrency the others cannot use up.
#[derive(Debug, Clone)]
pub struct LambdaDispatcher {
    client: Client,
    function: String,
    priority_function: Option<String>,
}

impl LambdaDispatcher {
    /// Invokes `function` (a name or ARN) through `client`.
    pub fn new(client: Client, function: impl Into<String>) -> Self {
        Self {
            client,
            function: function.into(),
            priority_function: None,
        }
    }

    /// Requests of priority above 0 are run by `function` instead.
    #[must_use]
    pub fn with_priority_function(mut self, function: impl Into<String>) -> Self {
        self.priority_function = Some(function.into());
        self
    }

    /// The function that runs `request`.
    pub fn function_for(&self, request: &AsyncRequest) -> &str {
        match &self.priority_function {
            Some(function) if request.priority > 0 => function,
            _ => &self.function,
        }
    }
}

#[async_trait]
impl Dispatcher for LambdaDispatcher {
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
        let mut event = WorkerEvent {
            request_id: request.id.clone(),
            state: Some(Box::new(request.clone())),
        };
        let mut payload = serde_json::to_vec(&event).map_err(|e| Error::backend("encoding", e))?;
        if payload.len() > KNOWN_STATE_BYTES {
            event.state = None;
            payload = serde_json::to_vec(&event).map_err(|e| Error::backend("encoding", e))?;
        }
        let function = self.function_for(request);
        self.client
            .invoke()
            .function_name(function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| Error::backend(format!("invoking {function} for {}", request.id), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn client() -> Client {
        let config = aws_sdk_lambda::Config::builder()
            .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
            .build();
        Client::from_conf(config)
    }

    #[test]
    fn priority_above_zero_goes_to_the_priority_function_when_there_is_one() {
        let request = |priority| {
            AsyncRequest::new("r", "generateReport", json!({}), Utc::now()).with_priority(priority)
        };
        let plain = LambdaDispatcher::new(client(), "worker");
        assert_eq!(plain.function_for(&request(50)), "worker");
        let split = plain.with_priority_function("priority-worker");
        assert_eq!(split.function_for(&request(1)), "priority-worker");
        assert_eq!(split.function_for(&request(0)), "worker");
        assert_eq!(split.function_for(&request(-3)), "worker");
    }
}
