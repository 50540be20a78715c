//! Simple stored subscription documents resolved without the executor. Most subscriptions
//! select a few fields of `requestProgress`; for those, a push reads the fields straight off
//! the state, with the same values the schema's resolvers give (they share
//! [`REQUEST_SCALARS`]). A document that uses anything else (fragments, directives, variable
//! defaults, other fields) has no projection and goes through the executor.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_graphql::Value as GqlValue;
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use streamer_core::AsyncRequest;

use crate::execute;
use crate::schema::{REQUEST_SCALARS, RequestScalar, request_error};

/// Where an argument's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Argument {
    Absent,
    Literal(GqlValue),
    Variable(String),
}

/// A field of `AsyncRequest` a projection selects.
#[derive(Debug)]
enum Column {
    Typename(&'static str),
    Scalar(&'static RequestScalar),
    /// `error { ... }`: fields of `RequestError` (response key, field name).
    Error(Vec<(String, String)>),
}

/// A `requestProgress` subscription that only selects fields of the request.
#[derive(Debug)]
pub(crate) struct Projection {
    /// The response key of `requestProgress`.
    key: String,
    id: Argument,
    after_version: Argument,
    columns: Vec<(String, Column)>,
}

/// The result of a projection: the `next` payload, nothing (the document does not follow
/// this state), or `None` when only the executor can say (unusual argument values).
pub(crate) type Projected = Option<Option<Arc<RawValue>>>;

/// How many documents' projections are kept; a full cache starts over.
const PLANS: usize = 1024;

/// Projections by document, then operation name.
type Plans = HashMap<String, Vec<(Option<String>, Option<Arc<Projection>>)>>;

static CACHE: LazyLock<Mutex<Plans>> = LazyLock::new(Mutex::default);

/// The projection of a stored document, when it has one.
pub(crate) fn projection(query: &str, operation_name: Option<&str>) -> Option<Arc<Projection>> {
    let cached = |plans: &Plans| {
        plans
            .get(query)?
            .iter()
            .find(|(name, _)| name.as_deref() == operation_name)
            .map(|(_, plan)| plan.clone())
    };
    if let Some(plan) = cached(&CACHE.lock().expect("projection cache lock")) {
        return plan;
    }
    let plan = execute::parsed(query)
        .and_then(|document| Projection::of(&document, operation_name))
        .map(Arc::new);
    let mut cache = CACHE.lock().expect("projection cache lock");
    if cache.len() >= PLANS {
        cache.clear();
    }
    cache
        .entry(query.to_owned())
        .or_default()
        .push((operation_name.map(str::to_owned), plan.clone()));
    plan
}

impl Projection {
    /// The projection of the operation `operation_name` runs, if it has one.
    fn of(document: &ExecutableDocument, operation_name: Option<&str>) -> Option<Self> {
        if !document.fragments.is_empty() {
            return None;
        }
        let mut operations = document.operations.iter();
        let operation = match operation_name {
            Some(name) => {
                &operations
                    .find(|(n, _)| n.map(|n| n.as_str()) == Some(name))?
                    .1
                    .node
            }
            None => {
                let (_, only) = operations.next()?;
                if operations.next().is_some() {
                    return None;
                }
                &only.node
            }
        };
        if operation.ty != OperationType::Subscription
            || !operation.directives.is_empty()
            || operation
                .variable_definitions
                .iter()
                .any(|v| v.node.default_value.is_some() || !v.node.directives.is_empty())
        {
            return None;
        }
        let mut roots = plain_fields(&operation.selection_set.node)?;
        let (Some((key, field)), None) = (roots.pop(), roots.pop()) else {
            return None;
        };
        if field.name.node != "requestProgress" {
            return None;
        }
        let mut id = Argument::Absent;
        let mut after_version = Argument::Absent;
        for (name, value) in &field.arguments {
            let mut variable = None;
            let literal = value.node.clone().into_const_with(|name| {
                variable = Some(name.to_string());
                Ok::<_, ()>(GqlValue::Null)
            });
            let argument = match (variable, literal) {
                (Some(name), Ok(GqlValue::Null)) => Argument::Variable(name),
                (None, Ok(literal)) => Argument::Literal(literal),
                _ => return None,
            };
            match name.node.as_str() {
                "id" => id = argument,
                "afterVersion" => after_version = argument,
                _ => return None,
            }
        }
        let mut columns = Vec::new();
        for (key, field) in plain_fields(&field.selection_set.node)? {
            if !field.arguments.is_empty() {
                return None;
            }
            let name = field.name.node.as_str();
            let column = match name {
                "__typename" => Column::Typename("AsyncRequest"),
                "error" => {
                    let mut selected: Vec<(String, String)> = Vec::new();
                    for (key, inner) in plain_fields(&field.selection_set.node)? {
                        if selected.iter().any(|(k, _)| *k == key) {
                            return None;
                        }
                        let name = inner.name.node.as_str();
                        if !inner.arguments.is_empty()
                            || !matches!(name, "code" | "message" | "retryable" | "__typename")
                        {
                            return None;
                        }
                        selected.push((key, name.to_owned()));
                    }
                    Column::Error(selected)
                }
                _ => Column::Scalar(REQUEST_SCALARS.iter().find(|s| s.name == name)?),
            };
            if matches!(column, Column::Scalar(_) | Column::Typename(_))
                && !field.selection_set.node.items.is_empty()
            {
                return None;
            }
            columns.push((key, column));
        }
        let mut keys: Vec<&str> = columns.iter().map(|(key, _)| key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        if columns.is_empty() || keys.len() != columns.len() {
            // The executor merges a field selected twice.
            return None;
        }
        Some(Self {
            key,
            id,
            after_version,
            columns,
        })
    }

    /// The `next` payload of `state` for a subscription with these variables.
    pub(crate) fn resolve(
        &self,
        variables: Option<&Map<String, Value>>,
        state: &AsyncRequest,
    ) -> Projected {
        let argument = |argument: &Argument| -> Option<GqlValue> {
            match argument {
                Argument::Absent => Some(GqlValue::Null),
                Argument::Literal(value) => Some(value.clone()),
                Argument::Variable(name) => match variables.and_then(|v| v.get(name)) {
                    None | Some(Value::Null) => Some(GqlValue::Null),
                    Some(Value::String(s)) => Some(GqlValue::String(s.clone())),
                    Some(Value::Number(n)) => Some(GqlValue::Number(n.clone())),
                    Some(_) => None,
                },
            }
        };
        let GqlValue::String(id) = argument(&self.id)? else {
            return None;
        };
        let after_version = match argument(&self.after_version)? {
            GqlValue::Null => 0,
            GqlValue::Number(n) => n.as_u64()?,
            _ => return None,
        };
        if state.id != id || state.version <= after_version {
            return Some(None);
        }
        let mut text = Vec::with_capacity(256);
        text.extend_from_slice(b"{\"data\":{");
        push_key(&mut text, &self.key);
        text.push(b'{');
        for (i, (key, column)) in self.columns.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            push_key(&mut text, key);
            match column {
                Column::Typename(name) => push_json(&mut text, name),
                Column::Scalar(scalar) => match (scalar.get)(state) {
                    Some(value) => push_json(&mut text, &value),
                    // A null in a non-null field is an error only the executor reports.
                    None if scalar.non_null => return None,
                    None => text.extend_from_slice(b"null"),
                },
                Column::Error(fields) => match request_error(state) {
                    None => text.extend_from_slice(b"null"),
                    Some(error) => {
                        text.push(b'{');
                        for (i, (key, name)) in fields.iter().enumerate() {
                            if i > 0 {
                                text.push(b',');
                            }
                            push_key(&mut text, key);
                            if name == "__typename" {
                                push_json(&mut text, "RequestError");
                            } else {
                                match error.get(name) {
                                    Some(value) if !value.is_null() => push_json(&mut text, value),
                                    _ => return None,
                                }
                            }
                        }
                        text.push(b'}');
                    }
                },
            }
        }
        text.extend_from_slice(b"}}}");
        let text = String::from_utf8(text).ok()?;
        RawValue::from_string(text).ok().map(Arc::from).map(Some)
    }
}

/// The fields of a selection set with their response keys, or `None` when it holds a
/// fragment or a directive.
fn plain_fields(set: &SelectionSet) -> Option<Vec<(String, &async_graphql::parser::types::Field)>> {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) if field.node.directives.is_empty() => {
                let key = field
                    .node
                    .alias
                    .as_ref()
                    .unwrap_or(&field.node.name)
                    .node
                    .to_string();
                Some((key, &field.node))
            }
            _ => None,
        })
        .collect()
}

fn push_key(text: &mut Vec<u8>, key: &str) {
    push_json(text, key);
    text.push(b':');
}

fn push_json(text: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(text, value).expect("values always serialize");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_graphql::{InputObject, SimpleObject};
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use streamer_core::{
        Access, AsyncRequest, Limits, MemoryStore, RandomIds, RequestError, SystemClock,
    };

    use super::*;
    use crate::{Handler, Handlers, JobContext, JobError, Services};

    #[derive(InputObject)]
    struct EchoInput {
        text: String,
    }

    #[derive(SimpleObject, serde::Serialize)]
    struct EchoOutput {
        text: String,
    }

    struct Echo;

    impl Handler for Echo {
        const ACTION: &'static str = "echo";
        type Input = EchoInput;
        type Output = EchoOutput;

        async fn process(&self, input: EchoInput, _: JobContext) -> Result<EchoOutput, JobError> {
            Ok(EchoOutput { text: input.text })
        }
    }

    fn schemas() -> [async_graphql::dynamic::Schema; 2] {
        let mut handlers = Handlers::default();
        handlers.register(Echo);
        let handlers = Arc::new(handlers);
        let services = Services {
            store: Arc::new(MemoryStore::new()),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            limits: Limits::default(),
            access: Access::default(),
        };
        [
            crate::build(Arc::clone(&handlers), services.clone()).unwrap(),
            crate::build_for_stored_documents(handlers, services).unwrap(),
        ]
    }

    /// A request in each state a subscriber sees, with every optional field set somewhere.
    fn states() -> Vec<AsyncRequest> {
        let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 123_000_000).unwrap();
        let queued = AsyncRequest::new("r-1", "echo", json!({ "text": "hi" }), at(0));
        let mut running = queued.clone();
        running.start(at(1)).unwrap();
        running
            .report(0.25, Some("a \"quoted\" step".into()), at(2))
            .unwrap();
        let mut retrying = running.clone();
        let error = RequestError {
            code: "UPSTREAM".into(),
            message: "down".into(),
            retryable: true,
        };
        retrying.retry_at(error.clone(), at(60), at(3)).unwrap();
        let mut failed = running.clone();
        failed.fail(error, at(4)).unwrap();
        let mut completed = running.clone();
        completed
            .complete(
                json!({ "text": "hi", "n": [1, 2.5, null], "nested": { "é": true } }),
                at(5),
            )
            .unwrap();
        vec![queued, running, retrying, failed, completed]
    }

    const PROJECTED: &[(&str, &str)] = &[
        (
            "subscription($id: ID!) { requestProgress(id: $id) { status version updatedAt } }",
            r#"{"id":"r-1"}"#,
        ),
        (
            "subscription S($id: ID!, $after: Int) { p: requestProgress(id: $id, afterVersion: $after) { __typename id action status progress message version attempts priority createdAt updatedAt nextAttemptAt result error { code message retryable __typename } } }",
            r#"{"id":"r-1","after":2}"#,
        ),
        (
            "subscription { requestProgress(id: \"r-1\", afterVersion: 1) { a: status b: progress e: error { c: code } } }",
            "{}",
        ),
        (
            "subscription { requestProgress(id: \"other\") { status } }",
            "{}",
        ),
        (
            "subscription($id: ID!) { requestProgress(id: $id) { id } }",
            r#"{"id":"r-2"}"#,
        ),
        (
            "subscription($id: ID!, $a: Int) { requestProgress(id: $id, afterVersion: $a) { id } }",
            r#"{"id":"r-1","a":null}"#,
        ),
    ];

    const NOT_PROJECTED: &[&str] = &[
        "subscription { requestProgress(id: \"r-1\") { ...F } } fragment F on AsyncRequest { status }",
        "subscription { requestProgress(id: \"r-1\") { ... on AsyncRequest { status } } }",
        "subscription($s: Boolean!) { requestProgress(id: \"r-1\") { status @include(if: $s) } }",
        "subscription($id: ID! = \"r-1\") { requestProgress(id: $id) { status } }",
        "subscription { requestProgress(id: \"r-1\") { output { __typename } } }",
        "subscription { requestProgress(id: \"r-1\") { status status } }",
        "query { request(id: \"r-1\") { status } }",
    ];

    async fn executed(
        schema: &async_graphql::dynamic::Schema,
        query: &str,
        variables: &Map<String, Value>,
        state: &AsyncRequest,
    ) -> Option<Value> {
        let request = execute::request(query, None, Some(variables));
        let response = execute::resolve(schema, request, Arc::new(state.clone())).await?;
        Some(serde_json::to_value(&response).unwrap())
    }

    #[tokio::test]
    async fn a_projection_gives_what_the_executor_gives() {
        let schemas = schemas();
        for (query, variables) in PROJECTED {
            let plan = projection(query, None).unwrap_or_else(|| panic!("no projection: {query}"));
            let variables: Map<String, Value> = serde_json::from_str(variables).unwrap();
            for state in states() {
                let projected = plan
                    .resolve(Some(&variables), &state)
                    .expect("the projection answers")
                    .map(|payload| serde_json::from_str::<Value>(payload.get()).unwrap());
                for schema in &schemas {
                    let executed = executed(schema, query, &variables, &state).await;
                    assert_eq!(projected, executed, "{query} on {:?}", state.status);
                }
            }
        }
    }

    #[tokio::test]
    async fn argument_values_only_the_executor_handles_are_left_to_it() {
        let query =
            "subscription($id: ID!, $a: Int) { requestProgress(id: $id, afterVersion: $a) { id } }";
        let plan = projection(query, None).unwrap();
        let state = &states()[1];
        for variables in [json!({ "id": "r-1", "a": -1 }), json!({ "id": 7 })] {
            let projected = plan.resolve(variables.as_object(), state);
            assert!(projected.is_none(), "{variables}");
        }
    }

    #[test]
    fn documents_beyond_plain_fields_have_no_projection() {
        for query in NOT_PROJECTED {
            assert!(projection(query, None).is_none(), "{query}");
        }
        let two = "subscription A { requestProgress(id: \"r-1\") { id } } subscription B { requestProgress(id: \"r-1\") { status } }";
        assert!(projection(two, None).is_none(), "no operation chosen");
        assert!(projection(two, Some("B")).is_some());
    }
}
