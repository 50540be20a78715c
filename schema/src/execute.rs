//! Running GraphQL outside a socket loop: telling what a document is, validating a
//! subscription without running it, and resolving a stored subscription document against one
//! state of its request (the processor's fan-out and the gateway's snapshot).

use std::sync::Mutex;

use async_graphql::parser::types::OperationType;
use async_graphql::{Request, Response, ServerError, Variables, dynamic::Schema};
use futures::StreamExt;
use serde_json::{Map, Value};
use streamer_core::AsyncRequest;

/// The state a subscription document is resolved against (request data).
#[derive(Debug)]
pub(crate) struct Event(pub(crate) AsyncRequest);

/// Request data that makes `requestProgress` record its arguments and yield nothing: the
/// subscription is validated (resolvers run only on valid documents) but not run.
#[derive(Debug, Default)]
pub(crate) struct Capture(pub(crate) Mutex<Vec<Target>>);

/// What a valid `requestProgress` subscription follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The request id.
    pub request_id: String,
    /// Push only versions above this one.
    pub after_version: Option<u64>,
}

/// The kind of operation a document runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// A query.
    Query,
    /// A mutation.
    Mutation,
    /// A subscription.
    Subscription,
}

/// The kind of the operation a document would run, or `None` when the document does not
/// parse or names no operation it holds (execution then reports why).
pub fn operation_kind(query: &str, operation_name: Option<&str>) -> Option<OperationKind> {
    let document = async_graphql::parser::parse_query(query).ok()?;
    let mut operations = document.operations.iter();
    let operation = match operation_name {
        Some(name) => {
            operations
                .find(|(n, _)| n.map(|n| n.as_str()) == Some(name))?
                .1
        }
        None => {
            let (_, only) = operations.next()?;
            if operations.next().is_some() {
                return None;
            }
            only
        }
    };
    Some(match operation.node.ty {
        OperationType::Query => OperationKind::Query,
        OperationType::Mutation => OperationKind::Mutation,
        OperationType::Subscription => OperationKind::Subscription,
    })
}

/// A GraphQL request from its parts.
pub fn request(
    query: &str,
    operation_name: Option<&str>,
    variables: Option<&Map<String, Value>>,
) -> Request {
    let mut request = Request::new(query);
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = variables {
        request = request.variables(Variables::from_json(Value::Object(variables.clone())));
    }
    request
}

/// Validates a subscription document and returns what it follows, without running it.
pub async fn validate_subscription(
    schema: &Schema,
    request: Request,
) -> Result<Target, Vec<ServerError>> {
    let capture = std::sync::Arc::new(Capture::default());
    let request = request.data(std::sync::Arc::clone(&capture));
    let first = schema.execute_stream(request).next().await;
    if let Some(response) = first
        && response.is_err()
    {
        return Err(response.errors);
    }
    let mut targets = capture.0.lock().expect("capture lock").clone();
    match targets.len() {
        1 => Ok(targets.remove(0)),
        0 => Err(vec![ServerError::new(
            "the subscription selects no requestProgress field",
            None,
        )]),
        _ => Err(vec![ServerError::new(
            "a subscription follows one request: select requestProgress once",
            None,
        )]),
    }
}

/// Resolves a subscription document against one state of its request. `None` when the
/// document does not follow this request or asked only for later versions.
pub async fn resolve(schema: &Schema, request: Request, state: &AsyncRequest) -> Option<Response> {
    let request = request.data(Event(state.clone()));
    schema.execute_stream(request).next().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_kinds() {
        assert_eq!(
            operation_kind("{ actions }", None),
            Some(OperationKind::Query)
        );
        assert_eq!(
            operation_kind("mutation { a }", None),
            Some(OperationKind::Mutation)
        );
        assert_eq!(
            operation_kind("subscription S { a }", None),
            Some(OperationKind::Subscription)
        );
        assert_eq!(
            operation_kind("subscription S { a }", Some("S")),
            Some(OperationKind::Subscription)
        );
        assert_eq!(operation_kind("subscription S { a }", Some("T")), None);
        assert_eq!(
            operation_kind("query A { a } mutation B { b }", Some("B")),
            Some(OperationKind::Mutation)
        );
        assert_eq!(operation_kind("query A { a } mutation B { b }", None), None);
        assert_eq!(operation_kind("{", None), None);
    }
}
