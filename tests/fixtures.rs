//! Recorded events, read the way Lambda hands them over: DynamoDB stream batches (recorded
//! from DynamoDB Local, and AWS's TTL shape) and API Gateway WebSocket events (AWS's shapes).
//! Each is parsed, round-tripped through the `aws_lambda_events` types, and handled.

use report_handlers as handlers;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::dynamodb::EventRecord;
use serde_json::{Value, json};
use streamer::aws::items::{request_from_item, request_item};
use streamer::aws::stream::{self, StreamEvent};
use streamer::core::store::Change;
use streamer::core::{
    AsyncRequest, Clock, IdGenerator, Limits, MemorySender, MemoryStore, RandomIds, Store,
    SystemClock,
};
use streamer::gateway::Gateway;
use streamer::processor::{Dispatcher, Processor};
use streamer::schema::Services;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
        .expect("fixture is JSON")
}

fn stream_event(name: &str) -> StreamEvent {
    serde_json::from_value(fixture(name)).expect("a DynamoDB event")
}

/// One line per change: what a reader of the snapshot needs to see.
fn summary(changes: &[Change]) -> Vec<Value> {
    let state = |r: &Option<std::sync::Arc<AsyncRequest>>| {
        r.as_ref()
            .map(|r| json!({ "id": r.id, "status": r.status.to_string(), "version": r.version }))
    };
    changes
        .iter()
        .map(|c| json!({ "sequenceNumber": c.sequence_number, "kind": format!("{:?}", c.kind), "old": state(&c.old), "new": state(&c.new) }))
        .collect()
}

#[test]
fn a_recorded_request_lifecycle_decodes_in_order() {
    let decoded = stream::decode(&stream_event("dynamodb-local-generate-report.json"));
    assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
    assert_eq!(decoded.changes.len(), 7);
    let last = decoded.changes.last().unwrap().new.as_ref().unwrap();
    assert_eq!(last.result.as_ref().unwrap()["rows"], 1000);
    assert_eq!(
        last.payload,
        json!({ "from": "2026-01-01", "to": "2026-01-31", "rows": 1000, "stepDelayMs": 300 })
    );
    insta::assert_json_snapshot!(summary(&decoded.changes));
}

#[test]
fn ttl_removals_are_told_from_deletions() {
    // AWS: REMOVE by dynamodb.amazonaws.com; DynamoDB Local: UNKNOWN_TO_SDK_VERSION without
    // userIdentity; a REMOVE without userIdentity is a writer's delete.
    let decoded = stream::decode(&stream_event("dynamodb-stream-removals.json"));
    assert!(decoded.failures.is_empty());
    insta::assert_json_snapshot!(summary(&decoded.changes));
}

/// The images were recorded before requests had tenants: they still read, as the
/// development tenant's, and are written back as they were plus exactly the tenant's
/// attributes and index keys.
#[test]
fn recorded_images_are_the_items_the_store_writes() {
    for record in stream_event("dynamodb-local-generate-report.json").records {
        for image in ["NewImage", "OldImage"] {
            let Some(recorded) = record["dynamodb"].get(image) else {
                continue;
            };
            let mut expected = recorded.clone();
            let fields = expected.as_object_mut().unwrap();
            let status = fields["status"]["S"].as_str().unwrap().to_owned();
            fields.insert("tenant".into(), json!({ "S": "dev" }));
            fields.insert("owner".into(), json!({ "S": "anonymous" }));
            // Recorded before requests carried a revision: it reads as 0.
            fields.insert("revision".into(), json!({ "N": "0" }));
            fields.insert("listPartition".into(), json!({ "S": "dev" }));
            fields.insert(
                "statusPartition".into(),
                json!({ "S": format!("dev#{status}") }),
            );
            // Recorded before the `active` index was sharded: `{status}#{shard}` now.
            fields.remove("activeStatus");
            let expected: serde_dynamo::Item = serde_json::from_value(expected).unwrap();
            let recorded: serde_dynamo::Item = serde_json::from_value(recorded.clone()).unwrap();
            let request = request_from_item(recorded).expect("a request");
            assert_eq!(request.tenant, streamer::core::DEV_TENANT);
            let mut written = request_item(&request).unwrap();
            let active = written.remove("activeStatus");
            let shard = active
                .as_ref()
                .and_then(|value| value.as_s().ok())
                .and_then(|value| value.strip_prefix(&format!("{status}#")))
                .and_then(|shard| shard.parse::<u32>().ok());
            if matches!(status.as_str(), "QUEUED" | "RUNNING" | "RETRYING") {
                assert!(
                    shard.is_some_and(|shard| shard < streamer::aws::tables::INDEX_SHARDS),
                    "{active:?}"
                );
            } else {
                assert_eq!(active, None, "an ended request leaves the active index");
            }
            let written = serde_dynamo::Item::from(written);
            assert_eq!(written, expected, "{image} of {}", record["eventID"]);
        }
    }
}

#[test]
fn stream_records_round_trip_through_the_lambda_types() {
    for name in [
        "dynamodb-local-generate-report.json",
        "dynamodb-stream-removals.json",
    ] {
        for raw in stream_event(name).records {
            let record: EventRecord = serde_json::from_value(raw.clone()).expect("a record");
            let again: EventRecord =
                serde_json::from_value(serde_json::to_value(&record).unwrap()).unwrap();
            assert_eq!(again, record);
            // Nothing the processor reads is lost on the way.
            let written = serde_json::to_value(&record).unwrap();
            for field in ["Keys", "NewImage", "OldImage", "SequenceNumber"] {
                if let Some(value) = raw["dynamodb"].get(field) {
                    assert_eq!(&written["dynamodb"][field], value, "{name}: {field}");
                }
            }
            assert_eq!(written["eventName"], raw["eventName"]);
        }
    }
}

/// Records what was dispatched.
#[derive(Debug, Default)]
struct Dispatched(Mutex<Vec<String>>);

#[async_trait]
impl Dispatcher for Dispatched {
    async fn dispatch(&self, request: &AsyncRequest) -> streamer::core::Result<()> {
        self.0.lock().unwrap().push(request.id.clone());
        Ok(())
    }
}

fn services() -> Services {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn IdGenerator> = Arc::new(RandomIds);
    Services {
        store,
        clock,
        ids,
        limits: Limits::default(),
        access: streamer::core::Access::default(),
    }
}

#[tokio::test]
async fn malformed_records_are_batch_item_failures() {
    let services = services();
    let schema = streamer::schema::build(handlers::app().handlers(), services.clone()).unwrap();
    let dispatched = Arc::new(Dispatched::default());
    let processor = Processor::new(
        schema,
        services.store,
        Arc::new(MemorySender::new()),
        dispatched.clone(),
    );
    let response =
        stream::handle(&processor, &stream_event("dynamodb-stream-malformed.json")).await;
    // 101 has a bad image and blocks 102 (same item); 104 is an unknown event; 105 is not a
    // record. 100, 103 (req-a) and 106 (req-e) are handled.
    insta::assert_json_snapshot!(response);
    assert_eq!(*dispatched.0.lock().unwrap(), ["req-a"]);
}

#[tokio::test]
async fn a_record_without_a_sequence_number_fails_the_batch() {
    let services = services();
    let schema = streamer::schema::build(handlers::app().handlers(), services.clone()).unwrap();
    let processor = Processor::new(
        schema,
        services.store,
        Arc::new(MemorySender::new()),
        Arc::new(Dispatched::default()),
    );
    let event = StreamEvent {
        records: vec![json!("not a record"), json!({ "eventName": "INSERT" })],
    };
    let response = serde_json::to_value(stream::handle(&processor, &event).await).unwrap();
    // An empty identifier is how Lambda is told to retry the whole batch.
    assert_eq!(
        response,
        json!({ "batchItemFailures": [{ "itemIdentifier": "" }, { "itemIdentifier": "" }] })
    );
}

fn websocket_event(name: &str) -> ApiGatewayWebsocketProxyRequest {
    let raw = fixture(name);
    let event: ApiGatewayWebsocketProxyRequest =
        serde_json::from_value(raw).expect("an API Gateway WebSocket event");
    let again: ApiGatewayWebsocketProxyRequest =
        serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
    assert_eq!(again, event, "{name} round-trips");
    event
}

#[tokio::test]
async fn recorded_websocket_events_drive_the_gateway() {
    let services = services();
    let schema = streamer::schema::build(handlers::app().handlers(), services.clone()).unwrap();
    let sender = Arc::new(MemorySender::new());
    let gateway = Gateway::new(schema, &services, sender.clone());

    let connected = gateway
        .handle(websocket_event("apigw-websocket-connect.json"))
        .await;
    assert_eq!(connected.status_code, 200);
    assert_eq!(
        connected.headers.get("sec-websocket-protocol").unwrap(),
        "graphql-transport-ws"
    );
    assert!(
        services
            .store
            .get_connection("AAAA1234=")
            .await
            .unwrap()
            .is_some()
    );

    let answered = gateway
        .handle(websocket_event("apigw-websocket-message.json"))
        .await;
    assert_eq!(answered.status_code, 200);
    assert_eq!(
        sender.take(),
        [(
            "AAAA1234=".to_owned(),
            r#"{"type":"connection_ack"}"#.to_owned()
        )]
    );

    let disconnected = gateway
        .handle(websocket_event("apigw-websocket-disconnect.json"))
        .await;
    assert_eq!(disconnected.status_code, 200);
    assert!(
        services
            .store
            .get_connection("AAAA1234=")
            .await
            .unwrap()
            .is_none()
    );
}
