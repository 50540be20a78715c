//! [`ApiGatewaySender`]: the sender port on the API Gateway Management API.
//!
//! `PostToConnection` pushes a frame; `DeleteConnection` closes (API Gateway cannot send a
//! close code, so the intended one is logged). A `GoneException` is [`Error::Gone`], on which
//! the caller deletes the connection and its subscriptions. Throttling is retried with
//! exponential backoff and full jitter, with a bounded number of posts in flight; every other
//! failure is typed by [`PushFailure`] and keeps the SDK error.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use streamer_core::protocol::Close;
use streamer_core::{Backoff, Error, Result, Sender, metric};
use tokio::sync::Semaphore;

/// What kind of failure a push met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFailure {
    /// The connection no longer exists (410).
    Gone,
    /// Too many requests, or the client's buffer is full (429, `LimitExceededException`).
    Throttled,
    /// The frame exceeds API Gateway's limit (413).
    TooLarge,
    /// The caller may not manage this API's connections, or the endpoint is wrong (403).
    Forbidden,
    /// Anything else: a network error, a timeout, a 5xx.
    Other,
}

impl PushFailure {
    /// Classifies an SDK error of either Management API call.
    pub fn of<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Self {
        let status = error.raw_response().map(|r| r.status().as_u16());
        match (error.code(), status) {
            (Some("GoneException"), _) | (_, Some(410)) => Self::Gone,
            (
                Some("LimitExceededException" | "ThrottlingException" | "TooManyRequestsException"),
                _,
            )
            | (_, Some(429)) => Self::Throttled,
            (Some("PayloadTooLargeException"), _) | (_, Some(413)) => Self::TooLarge,
            (Some("ForbiddenException"), _) | (_, Some(403)) => Self::Forbidden,
            _ => Self::Other,
        }
    }

    /// The kind as logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Throttled => "throttled",
            Self::TooLarge => "too_large",
            Self::Forbidden => "forbidden",
            Self::Other => "other",
        }
    }
}

/// How a sender retries throttled and transiently failing posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderOptions {
    /// At most this many posts are in flight at once.
    pub max_in_flight: usize,
    /// A throttled or transiently failing post is tried at most this many times in all.
    pub max_attempts: u32,
    /// Delays between those tries.
    pub backoff: Backoff,
    /// A call that has not answered within this is abandoned and counts as a transient
    /// failure (a push is usually answered in tens of milliseconds).
    pub attempt_timeout: Duration,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 128,
            max_attempts: 6,
            backoff: Backoff::new(Duration::from_millis(25), Duration::from_secs(2)),
            attempt_timeout: Duration::from_secs(3),
        }
    }
}

/// The sender on the API Gateway Management API of one stage.
#[derive(Debug, Clone)]
pub struct ApiGatewaySender {
    client: Client,
    in_flight: Arc<Semaphore>,
    options: SenderOptions,
}

impl ApiGatewaySender {
    /// A sender through `client`, whose endpoint is the stage's
    /// (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`). Give the client's
    /// configuration `RetryConfig::disabled()`: this sender retries throttling itself.
    pub fn new(client: Client, options: SenderOptions) -> Self {
        Self {
            client,
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            options,
        }
    }

    /// A sender on a local server's Management API at `endpoint` (`http://127.0.0.1:4000`),
    /// signing (SigV4) with the credentials the server accepts (the local stack's own, which
    /// it makes when it starts; see `StackBuilder::with_management_credentials`).
    pub fn local(
        endpoint: &str,
        access_key_id: &str,
        secret_access_key: &str,
        options: SenderOptions,
    ) -> Self {
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version(aws_sdk_apigatewaymanagement::config::BehaviorVersion::latest())
            .region(aws_sdk_apigatewaymanagement::config::Region::new(
                "us-east-1",
            ))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "streamer-local",
            ))
            .interceptor(crate::CountCalls)
            .retry_config(aws_sdk_apigatewaymanagement::config::retry::RetryConfig::disabled())
            .build();
        Self::new(Client::from_conf(config), options)
    }
}

/// How one call failed: an answer that is an error, or no answer in time.
enum AttemptError<E> {
    Sdk(Box<SdkError<E, HttpResponse>>),
    TimedOut(tokio::time::error::Elapsed),
}

#[async_trait]
impl Sender for ApiGatewaySender {
    async fn post(&self, connection_id: &str, data: &str) -> Result<()> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| Error::backend("waiting to post", e))?;
        let mut attempt = 1;
        loop {
            let call = self
                .client
                .post_to_connection()
                .connection_id(connection_id)
                .data(Blob::new(data.as_bytes()))
                .send();
            let error = match tokio::time::timeout(self.options.attempt_timeout, call).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(error)) => AttemptError::Sdk(Box::new(error)),
                Err(elapsed) => AttemptError::TimedOut(elapsed),
            };
            let failure = match &error {
                AttemptError::Sdk(error) => PushFailure::of(error),
                AttemptError::TimedOut(_) => PushFailure::Other,
            };
            // Throttling and transient failures (5xx, timeouts, the network) are tried again.
            let transient = matches!(failure, PushFailure::Throttled | PushFailure::Other);
            if !(transient && attempt < self.options.max_attempts) {
                metrics::counter!(metric::PUSHES_FAILED, "kind" => failure.as_str()).increment(1);
            }
            match failure {
                PushFailure::Gone => return Err(Error::Gone(connection_id.to_owned())),
                PushFailure::TooLarge => return Err(Error::TooLarge(connection_id.to_owned())),
                _ if transient && attempt < self.options.max_attempts => {
                    let delay = self.options.backoff.delay(attempt, &mut rand::rng());
                    tracing::debug!(%connection_id, attempt, ?delay, failure = failure.as_str(), "post failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                _ => {
                    let context = format!(
                        "posting to connection {connection_id} ({})",
                        failure.as_str()
                    );
                    return Err(match error {
                        AttemptError::Sdk(error) => {
                            tracing::warn!(
                                %connection_id,
                                failure = failure.as_str(),
                                attempts = attempt,
                                error = %aws_sdk_apigatewaymanagement::error::DisplayErrorContext(&error),
                                "post failed"
                            );
                            Error::backend(context, *error)
                        }
                        AttemptError::TimedOut(elapsed) => {
                            tracing::warn!(%connection_id, attempts = attempt, "post timed out");
                            Error::backend(context, elapsed)
                        }
                    });
                }
            }
        }
    }

    async fn close(&self, connection_id: &str, close: &Close) -> Result<()> {
        // API Gateway closes a deleted connection with 1000; the protocol's code is logged.
        tracing::info!(%connection_id, intended_code = close.code, reason = ?close.reason, "closing by DeleteConnection");
        if close.code != 1000 {
            metrics::counter!(metric::INTENDED_CLOSES, "code" => close.code.to_string())
                .increment(1);
        }
        match self
            .client
            .delete_connection()
            .connection_id(connection_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => match PushFailure::of(&error) {
                PushFailure::Gone => Err(Error::Gone(connection_id.to_owned())),
                failure => Err(Error::backend(
                    format!("deleting connection {connection_id} ({})", failure.as_str()),
                    error,
                )),
            },
        }
    }
}
