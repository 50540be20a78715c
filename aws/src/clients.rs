//! [`Aws`]: the SDK configuration, loaded once from the environment (credentials, Region, and
//! endpoint overrides such as `AWS_ENDPOINT_URL_DYNAMODB`), and the parts built on it.

use aws_config::BehaviorVersion;

use crate::{ApiGatewaySender, CountCalls, DynamoDbStore, LambdaDispatcher, SenderOptions, Tables};

/// The SDK configuration of a function.
#[derive(Debug, Clone)]
pub struct Aws {
    config: aws_config::SdkConfig,
}

impl Aws {
    /// Loads the configuration from the environment, as every AWS SDK does.
    pub async fn from_env() -> Self {
        Self {
            config: aws_config::defaults(BehaviorVersion::latest()).load().await,
        }
    }

    /// The store on these tables.
    pub fn store(&self, tables: Tables) -> DynamoDbStore {
        let config = aws_sdk_dynamodb::config::Builder::from(&self.config)
            .interceptor(CountCalls)
            .retry_classifier(crate::RetryTransactionConflicts)
            .build();
        DynamoDbStore::new(aws_sdk_dynamodb::Client::from_conf(config), tables)
    }

    /// The sender on the Management API of the stage at `endpoint`
    /// (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`).
    pub fn sender(&self, endpoint: &str, options: SenderOptions) -> ApiGatewaySender {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(&self.config)
            .endpoint_url(endpoint)
            .interceptor(CountCalls)
            // The sender retries throttling itself, with its own bound on posts in flight.
            .retry_config(aws_sdk_apigatewaymanagement::config::retry::RetryConfig::disabled())
            .build();
        ApiGatewaySender::new(
            aws_sdk_apigatewaymanagement::Client::from_conf(config),
            options,
        )
    }

    /// The dispatcher that invokes the worker `function`, and `priority_function` for
    /// requests of priority above 0 when there is one.
    pub fn dispatcher(&self, function: &str, priority_function: Option<&str>) -> LambdaDispatcher {
        let config = aws_sdk_lambda::config::Builder::from(&self.config)
            .interceptor(CountCalls)
            .build();
        let dispatcher = LambdaDispatcher::new(aws_sdk_lambda::Client::from_conf(config), function);
        match priority_function {
            Some(priority) => dispatcher.with_priority_function(priority),
            None => dispatcher,
        }
    }
}
