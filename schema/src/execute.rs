//! Running GraphQL outside a socket loop: telling what a document is, validating a
//! subscription without running it, and resolving a stored subscription document against one
//! state of its request (the processor's fan-out and the gateway's snapshot).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_graphql::parser::types::{ExecutableDocument, OperationType};
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

/// The kind of the operation a document would run, or `None` when the document does not
/// parse or names no operation it holds (execution then reports why).
pub fn operation_kind(query: &str, operation_name: Option<&str>) -> Option<OperationKind> {
    let document = parsed(query)?;
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

/// How many parsed documents [`request`] keeps. Stored subscriptions are resolved on every
/// change, most with the same few documents: parsing each once saves a parse per push.
const PARSED_DOCUMENTS: usize = 1024;
/// Longer documents are parsed every time, so the cache stays small (at most 4 MiB).
const CACHED_DOCUMENT_BYTES: usize = 4 * 1024;

static PARSED: LazyLock<Mutex<HashMap<String, Arc<ExecutableDocument>>>> =
    LazyLock::new(Mutex::default);

/// The parsed form of `query`, from the cache when it was parsed before. `None` when it
/// does not parse (execution then reports why).
pub(crate) fn parsed(query: &str) -> Option<Arc<ExecutableDocument>> {
    if query.len() > CACHED_DOCUMENT_BYTES {
        return async_graphql::parser::parse_query(query).ok().map(Arc::new);
    }
    if let Some(document) = PARSED.lock().expect("parse cache lock").get(query) {
        return Some(Arc::clone(document));
    }
    let document = Arc::new(async_graphql::parser::parse_query(query).ok()?);
    let mut cache = PARSED.lock().expect("parse cache lock");
    if cache.len() >= PARSED_DOCUMENTS {
        // Simple and bounded: a full cache starts over.
        cache.clear();
    }
    cache.insert(query.to_owned(), Arc::clone(&document));
    Some(document)
}

/// A GraphQL request from its parts, its document parsed once per process.
pub fn request(
    query: &str,
    operation_name: Option<&str>,
    variables: Option<&Map<String, Value>>,
) -> Request {
    let mut request = Request::new(query);
    if let Some(document) = parsed(query) {
        request.set_parsed_query(Arc::unwrap_or_clone(document));
    }
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

/// What a document asks for, fragments expanded.
#[derive(Debug, Default)]
struct Measure {
    depth: usize,
    fields: usize,
    aliases: usize,
}

fn measure(
    set: &async_graphql::parser::types::SelectionSet,
    depth: usize,
    fragments: &std::collections::HashMap<
        async_graphql::Name,
        async_graphql::Positioned<async_graphql::parser::types::FragmentDefinition>,
    >,
    visiting: &mut Vec<String>,
    measured: &mut Measure,
    cap: usize,
) {
    use async_graphql::parser::types::Selection;
    for item in &set.items {
        // Fragments can multiply a document; past the cap the answer is known.
        if measured.fields > cap {
            return;
        }
        match &item.node {
            Selection::Field(field) => {
                measured.fields += 1;
                measured.aliases += usize::from(field.node.alias.is_some());
                measured.depth = measured.depth.max(depth + 1);
                let inner = &field.node.selection_set.node;
                measure(inner, depth + 1, fragments, visiting, measured, cap);
            }
            Selection::InlineFragment(fragment) => {
                let inner = &fragment.node.selection_set.node;
                measure(inner, depth, fragments, visiting, measured, cap);
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                // A cycle is a validation error the executor reports.
                if visiting.iter().any(|v| v == name) {
                    continue;
                }
                if let Some(fragment) = fragments.get(name) {
                    visiting.push(name.to_owned());
                    let inner = &fragment.node.selection_set.node;
                    measure(inner, depth, fragments, visiting, measured, cap);
                    visiting.pop();
                }
            }
        }
    }
}

/// Checks a document against the depth, complexity (fields selected) and alias limits,
/// fragments expanded. A document that does not parse passes: execution reports its errors.
pub fn check_document(
    query: &str,
    limits: &streamer_core::Limits,
) -> Result<(), streamer_core::LimitExceeded> {
    use streamer_core::LimitExceeded;
    let Some(document) = parsed(query) else {
        return Ok(());
    };
    let cap = limits.max_complexity.max(limits.max_aliases);
    for (_, operation) in document.operations.iter() {
        let mut measured = Measure::default();
        let set = &operation.node.selection_set.node;
        measure(
            set,
            0,
            &document.fragments,
            &mut Vec::new(),
            &mut measured,
            cap,
        );
        LimitExceeded::check("depth", "the query depth", measured.depth, limits.max_depth)?;
        LimitExceeded::check(
            "complexity",
            "the number of fields selected",
            measured.fields,
            limits.max_complexity,
        )?;
        LimitExceeded::check(
            "aliases",
            "the number of aliases",
            measured.aliases,
            limits.max_aliases,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod limit_tests {
    use streamer_core::Limits;

    use super::*;

    #[test]
    fn depth_fields_and_aliases_are_counted_through_fragments() {
        let limits = Limits {
            max_depth: 3,
            max_complexity: 5,
            max_aliases: 2,
            ..Limits::default()
        };
        assert!(check_document("{ request(id: \"a\") { id status } }", &limits).is_ok());
        let deep = "{ requests { edges { node { error { code } } } } }";
        assert_eq!(check_document(deep, &limits).unwrap_err().limit, "depth");
        let wide = "query { a: actions b: actions c: actions }";
        assert_eq!(check_document(wide, &limits).unwrap_err().limit, "aliases");
        // A fragment spread twice: its fields count each time (1 + 2 + 1 + 2).
        let spread = "fragment F on AsyncRequest { id status } { a: request(id: \"1\") { ...F } b: request(id: \"2\") { ...F } }";
        let error = check_document(spread, &limits).unwrap_err();
        assert_eq!((error.limit, error.actual), ("complexity", 6));
        // Cycles do not hang the count; the executor reports them.
        assert!(check_document("fragment A on Query { ...A } { ...A }", &limits).is_ok());
        assert!(check_document("{ not graphql", &limits).is_ok());
    }
}
