//! The public GraphQL surface: its SDL, and the typed and generic ways into a handler.

mod support;

use std::sync::Arc;

use serde_json::json;
use streamer::core::{ManualClock, MemoryStore, SequentialIds, Store};
use streamer::schema::{Services, async_graphql::Request};

/// A request from the development tenant's anonymous user, as the gateway would make it.
fn as_dev(query: impl Into<String>) -> Request {
    Request::new(query).data(streamer::core::Principal::new(
        streamer::core::DEV_TENANT,
        "anonymous",
    ))
}

fn schema() -> (streamer::schema::Schema, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let services = Services {
        store: store.clone(),
        clock: Arc::new(ManualClock::default()),
        ids: Arc::new(SequentialIds::new("req")),
        limits: streamer::core::Limits::default(),
        access: streamer::core::Access::default(),
    };
    let schema = streamer::schema::build(support::handlers::app().handlers(), services)
        .expect("schema builds");
    (schema, store)
}

#[test]
fn sdl() {
    insta::assert_snapshot!(schema().0.sdl());
}

#[tokio::test]
async fn typed_and_generic_enqueue_store_the_same_canonical_payload() {
    let (schema, store) = schema();
    let typed = schema
        .execute(as_dev(r#"mutation { generateReport(input: {from: "a", to: "b"}) { id action status version } }"#))
        .await;
    assert!(typed.errors.is_empty(), "{:?}", typed.errors);
    let generic = schema
        .execute(as_dev(r#"mutation { enqueue(action: "generateReport", payload: {from: "a", to: "b"}) { id action } }"#))
        .await;
    assert!(generic.errors.is_empty(), "{:?}", generic.errors);
    let first = store.get_request("req-1").await.unwrap().unwrap();
    let second = store.get_request("req-2").await.unwrap().unwrap();
    assert_eq!(
        first.payload,
        json!({ "from": "a", "to": "b", "rows": 1000, "stepDelayMs": 300 }),
        "defaults filled in"
    );
    assert_eq!(first.payload, second.payload);
    assert_eq!(second.action, "generateReport");
}

#[tokio::test]
async fn a_payload_that_does_not_fit_is_refused_with_a_clear_error_and_nothing_stored() {
    let (schema, store) = schema();
    for (payload, expected) in [
        (r#"{from: "a"}"#, "GenerateReportInput"),
        (
            r#"{from: "a", to: "b", rows: "many"}"#,
            "GenerateReportInput",
        ),
        (r#"[1, 2]"#, "GenerateReportInput"),
    ] {
        let query = format!(
            r#"mutation {{ enqueue(action: "generateReport", payload: {payload}) {{ id }} }}"#
        );
        let response = schema.execute(as_dev(query)).await;
        let error = &response.errors[0];
        assert!(
            error.message.contains(expected),
            "{payload}: {}",
            error.message
        );
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .cloned();
        assert_eq!(code, Some("BAD_USER_INPUT".into()));
    }
    let unknown = schema
        .execute(as_dev(
            r#"mutation { enqueue(action: "nope", payload: {}) { id } }"#,
        ))
        .await;
    assert!(
        unknown.errors[0]
            .message
            .contains("flakyImport, generateReport, monthlyReports"),
        "{}",
        unknown.errors[0].message
    );
    let page = store.list_requests(&Default::default()).await.unwrap();
    assert!(store.get_request("req-1").await.unwrap().is_none() && page.items.is_empty());
}

#[tokio::test]
async fn actions_and_paginated_requests() {
    let (schema, _) = schema();
    let actions = schema.execute(as_dev("{ actions }")).await;
    assert_eq!(
        actions.data.into_json().unwrap(),
        json!({ "actions": ["flakyImport", "generateReport", "monthlyReports"] })
    );
    for n in 0..3 {
        let q = format!("mutation {{ flakyImport(input: {{failTimes: {n}}}) {{ id }} }}");
        assert!(schema.execute(as_dev(q)).await.errors.is_empty());
    }
    let page = "query($after: String) { requests(first: 2, after: $after) { edges { node { id } cursor } pageInfo { hasNextPage endCursor } } }";
    let first = schema.execute(as_dev(page)).await.data.into_json().unwrap();
    assert_eq!(first["requests"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(first["requests"]["pageInfo"]["hasNextPage"], true);
    let after = first["requests"]["pageInfo"]["endCursor"].clone();
    let variables =
        streamer::schema::async_graphql::Variables::from_json(json!({ "after": after }));
    let second = schema
        .execute(as_dev(page).variables(variables))
        .await
        .data
        .into_json()
        .unwrap();
    assert_eq!(second["requests"]["edges"][0]["node"]["id"], "req-3");
    assert_eq!(second["requests"]["pageInfo"]["hasNextPage"], false);
    let queued = schema
        .execute(as_dev(
            "{ requests(status: COMPLETED) { edges { cursor } } }",
        ))
        .await;
    assert_eq!(
        queued.data.into_json().unwrap()["requests"]["edges"],
        json!([])
    );
}

#[tokio::test]
async fn cancel_a_queued_request_and_unknown_ids() {
    let (schema, _) = schema();
    schema
        .execute(as_dev(
            r#"mutation { flakyImport(input: {failTimes: 0}) { id } }"#,
        ))
        .await;
    let cancelled = schema
        .execute(as_dev(
            r#"mutation { cancelRequest(id: "req-1") { status version } }"#,
        ))
        .await;
    assert_eq!(
        cancelled.data.into_json().unwrap(),
        json!({ "cancelRequest": { "status": "CANCELLED", "version": 2 } })
    );
    let retry = schema
        .execute(as_dev(
            r#"mutation { retryRequest(id: "req-1") { status } }"#,
        ))
        .await;
    assert_eq!(
        retry.errors[0].message,
        "a CANCELLED request cannot be retried"
    );
    let missing = schema
        .execute(as_dev(
            r#"mutation { cancelRequest(id: "nope") { status } }"#,
        ))
        .await;
    assert_eq!(missing.errors[0].message, "no request with this id");
    let query = schema
        .execute(as_dev(r#"{ request(id: "nope") { id } }"#))
        .await;
    assert_eq!(query.data.into_json().unwrap(), json!({ "request": null }));
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_enqueue_return_the_same_request() {
    let (schema, store) = schema();
    let typed = r#"mutation { generateReport(input: {from: "a", to: "b"}, idempotencyKey: "order-7") { id } }"#;
    let first = schema.execute(as_dev(typed)).await.into_result().unwrap();
    let again = schema.execute(as_dev(typed)).await.into_result().unwrap();
    let id = first.data.into_json().unwrap()["generateReport"]["id"].clone();
    assert_eq!(again.data.into_json().unwrap()["generateReport"]["id"], id);
    // The generic form with the same key and input names the same request.
    let generic = r#"mutation { enqueue(action: "generateReport", payload: {from: "a", to: "b"}, idempotencyKey: "order-7") { id } }"#;
    let same = schema.execute(as_dev(generic)).await.into_result().unwrap();
    assert_eq!(same.data.into_json().unwrap()["enqueue"]["id"], id);
    let page = store
        .list_requests(&streamer::core::RequestFilter {
            tenant: Some(streamer::core::DEV_TENANT.to_owned()),
            owner: None,
            status: None,
            limit: 10,
            after: None,
            parent: None,
            newest_first: false,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "one job, not three");

    // The same key with another input is refused; another key is another job.
    let other = r#"mutation { generateReport(input: {from: "a", to: "c"}, idempotencyKey: "order-7") { id } }"#;
    let refused = schema.execute(as_dev(other)).await;
    assert_eq!(
        refused.errors[0].extensions.as_ref().unwrap().get("code"),
        Some(&streamer::async_graphql::Value::from(
            "IDEMPOTENCY_KEY_REUSED"
        ))
    );
    let fresh = r#"mutation { generateReport(input: {from: "a", to: "c"}, idempotencyKey: "order-8") { id } }"#;
    let fresh = schema.execute(as_dev(fresh)).await.into_result().unwrap();
    assert_ne!(fresh.data.into_json().unwrap()["generateReport"]["id"], id);
}
