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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerEvent {
    /// The request whose job to run.
    pub request_id: String,
}

/// Dispatches jobs to the worker function.
#[derive(Debug, Clone)]
pub struct LambdaDispatcher {
    client: Client,
    function: String,
}

impl LambdaDispatcher {
    /// Invokes `function` (a name or ARN) through `client`.
    pub fn new(client: Client, function: impl Into<String>) -> Self {
        Self {
            client,
            function: function.into(),
        }
    }
}

#[async_trait]
impl Dispatcher for LambdaDispatcher {
    async fn dispatch(&self, request: &AsyncRequest) -> Result<()> {
        let event = WorkerEvent {
            request_id: request.id.clone(),
        };
        let payload = serde_json::to_vec(&event).map_err(|e| Error::backend("encoding", e))?;
        self.client
            .invoke()
            .function_name(&self.function)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| {
                Error::backend(format!("invoking {} for {}", self.function, request.id), e)
            })?;
        Ok(())
    }
}
