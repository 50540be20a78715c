//! [`RetryTransactionConflicts`]: the DynamoDB clients retry a single-item write that a
//! transaction in flight on the same item refused.
//!
//! DynamoDB refuses a `PutItem`, `UpdateItem` or `DeleteItem` of an item that an ongoing
//! `TransactWriteItems` includes, with `TransactionConflictException`, and the SDK's standard
//! retries do not count that code as retryable. Streamer's transactions share items with
//! plain writes (a subscription's start and finish with its connection's other operations,
//! a request's creation and end with its tenant's counter), so such a write is tried again
//! after the SDK's backoff, as a transient error: refused, it wrote nothing. (A transaction
//! cancelled by another is retried by `DynamoDbStore` itself.) DynamoDB Local never raises
//! the code; a test serves it from a fake endpoint.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};

/// See the [module](self).
#[derive(Debug, Default, Clone, Copy)]
pub struct RetryTransactionConflicts;

/// The code of the refusal.
const TRANSACTION_CONFLICT: &str = "TransactionConflictException";

impl ClassifyRetry for RetryTransactionConflicts {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let Some(error) = error.as_operation_error() else {
            return RetryAction::NoActionIndicated;
        };
        let code = error
            .downcast_ref::<UpdateItemError>()
            .and_then(ProvideErrorMetadata::code)
            .or_else(|| {
                error
                    .downcast_ref::<PutItemError>()
                    .and_then(ProvideErrorMetadata::code)
            })
            .or_else(|| {
                error
                    .downcast_ref::<DeleteItemError>()
                    .and_then(ProvideErrorMetadata::code)
            });
        if code == Some(TRANSACTION_CONFLICT) {
            RetryAction::transient_error()
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "RetryTransactionConflicts"
    }
}
