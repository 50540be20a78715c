//! Running GraphQL outside a socket loop: telling what a document is, validating a
//! subscription without running it, and resolving a stored subscription document against one
//! state of its request (the processor's fan-out and the gateway's snapshot).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, Variables, dynamic::Schema};
use futures::StreamExt;
use serde_json::{Map, Value};
use streamer_core::AsyncRequest;

/// The state a subscription document is resolved against (request data).
#[derive(Debug)]
pub(crate) struct Event(pub(crate) Arc<AsyncRequest>);

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

/// How many parsed documents [`request`] keeps. Stored subscriptions are resolved on every
/// change, most with the same few documents: parsing each once saves a parse per push.
const PARSED_DOCUMENTS: usize = 1024;
/// Longer documents are parsed every time, so the cache stays small (at most 4 MiB).
const CACHED_DOCUMENT_BYTES: usize = 4 * 1024;

static PARSED: LazyLock<Mutex<HashMap<String, Arc<ExecutableDocument>>>> =
    LazyLock::new(Mutex::default);

/// The parsed form of `query`, from the cache when it was parsed before.
pub(crate) fn parse(query: &str) -> Result<Arc<ExecutableDocument>, ServerError> {
    if query.len() > CACHED_DOCUMENT_BYTES {
        return Ok(Arc::new(async_graphql::parser::parse_query(query)?));
    }
    if let Some(document) = PARSED.lock().expect("parse cache lock").get(query) {
        return Ok(Arc::clone(document));
    }
    let document = Arc::new(async_graphql::parser::parse_query(query)?);
    let mut cache = PARSED.lock().expect("parse cache lock");
    if cache.len() >= PARSED_DOCUMENTS {
        // Simple and bounded: a full cache starts over.
        cache.clear();
    }
    cache.insert(query.to_owned(), Arc::clone(&document));
    Ok(document)
}

/// The parsed form of `query`, or `None` when it does not parse (execution then says why).
pub(crate) fn parsed(query: &str) -> Option<Arc<ExecutableDocument>> {
    parse(query).ok()
}

/// A GraphQL request from its parts, its document parsed once per process (a stored
/// subscription's document, checked when it was subscribed).
pub fn request(
    query: &str,
    operation_name: Option<&str>,
    variables: Option<&Map<String, Value>>,
) -> Request {
    match parsed(query) {
        Some(document) => request_parsed(query, &document, operation_name, variables),
        None => with_parts(Request::new(query), operation_name, variables),
    }
}

/// A GraphQL request for a document parsed already.
pub(crate) fn request_parsed(
    query: &str,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: Option<&Map<String, Value>>,
) -> Request {
    let mut request = Request::new(query);
    request.set_parsed_query(document.clone());
    with_parts(request, operation_name, variables)
}

fn with_parts(
    mut request: Request,
    operation_name: Option<&str>,
    variables: Option<&Map<String, Value>>,
) -> Request {
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
    let capture = Arc::new(Capture::default());
    let request = request.data(Arc::clone(&capture));
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
pub async fn resolve(
    schema: &Schema,
    request: Request,
    state: Arc<AsyncRequest>,
) -> Option<Response> {
    let request = request.data(Event(state));
    schema.execute_stream(request).next().await
}
