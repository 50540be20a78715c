//! The hot paths, one benchmark each: parsing a client frame, one protocol step, resolving
//! a stored subscription document against one state, fanning one change out to N
//! subscribers (in-memory store and sender), and decoding a recorded stream batch.
//!
//! `cargo bench --bench hot_paths`; figures in BENCHMARKS.md.

use report_handlers as handlers;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use streamer::aws::stream::{self, StreamEvent};
use streamer::core::protocol::{self, ClientMessage, Session};
use streamer::core::{
    Access, AsyncRequest, Limits, MemorySender, MemoryStore, RandomIds, Result, Store,
    Subscription, SubscriptionKey, SystemClock,
};
use streamer::processor::{Dispatcher, Processor};
use streamer::schema::{Schema, Services, execute};

const DOCUMENT: &str = "subscription($id: ID!) { requestProgress(id: $id) { id status progress message version attempts output { __typename ... on Report { url rows sizeBytes } } } }";

fn subscribe_frame() -> String {
    json!({ "id": "op-1", "type": "subscribe", "payload": { "query": DOCUMENT, "variables": { "id": "req-1" } } })
        .to_string()
}

/// The processor's schema (stored documents are not validated again).
fn schema(store: Arc<MemoryStore>) -> Schema {
    let services = Services {
        store,
        clock: Arc::new(SystemClock),
        ids: Arc::new(RandomIds),
        limits: Limits::default(),
        access: Access::default(),
    };
    streamer::schema::build_for_stored_documents(handlers::app().handlers(), services)
        .expect("schema")
}

fn running_state() -> AsyncRequest {
    let now = chrono::Utc::now();
    let mut state = AsyncRequest::new("req-1", "generateReport", json!({}), now);
    state.start(now).unwrap();
    state.report(0.5, Some("aggregating".into()), now).unwrap();
    state
}

#[derive(Debug)]
struct NoJobs;

#[async_trait]
impl Dispatcher for NoJobs {
    async fn dispatch(&self, _: &AsyncRequest) -> Result<()> {
        Ok(())
    }
}

fn protocol_paths(c: &mut Criterion) {
    let frame = subscribe_frame();
    c.bench_function("frame_parse", |b| {
        b.iter(|| ClientMessage::parse(std::hint::black_box(&frame)).unwrap());
    });
    let session = Session {
        acknowledged: true,
        operations: BTreeSet::from(["op-0".to_owned()]),
    };
    c.bench_function("protocol_step", |b| {
        b.iter(|| protocol::receive(&session, std::hint::black_box(&frame)));
    });
}

fn resolve_document(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let schema = schema(Arc::new(MemoryStore::new()));
    let state = Arc::new(running_state());
    let variables = json!({ "id": "req-1" });
    c.bench_function("resolve_stored_document", |b| {
        b.to_async(&runtime).iter(|| async {
            let request = execute::request(DOCUMENT, None, variables.as_object());
            execute::resolve(&schema, request, Arc::clone(&state))
                .await
                .unwrap()
        });
    });
}

/// A document of plain fields: resolved by projection, without the executor.
const PLAIN_DOCUMENT: &str = "subscription($id: ID!) { requestProgress(id: $id) { id status progress message version attempts updatedAt } }";

fn fan_out(c: &mut Criterion) {
    fan_out_of(c, "fan_out", DOCUMENT);
    fan_out_of(c, "fan_out_plain", PLAIN_DOCUMENT);
}

/// One change fanned out to 1, 100 and 1,000 subscribers of `document`.
fn fan_out_of(c: &mut Criterion, name: &str, document: &str) {
    // One thread: the time measured is the CPU time the fan-out takes (in-memory store and
    // sender, nothing waits on I/O).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group(name);
    for subscribers in [1usize, 100, 1_000] {
        let store = Arc::new(MemoryStore::new());
        let sender = Arc::new(MemorySender::new());
        runtime.block_on(async {
            for n in 0..subscribers {
                let subscription = Subscription {
                    key: SubscriptionKey {
                        request_id: "req-1".into(),
                        connection_id: format!("conn-{n}"),
                        operation_id: "op-1".into(),
                    },
                    query: document.into(),
                    operation_name: None,
                    variables: Some(json!({ "id": "req-1" })),
                    last_version: 0,
                    created_at: chrono::Utc::now(),
                    expires_at: i64::MAX,
                    pushing_until: None,
                    principal: None,
                };
                store.put_subscription(&subscription).await.unwrap();
            }
        });
        let processor = Processor::new(
            schema(store.clone()),
            store,
            sender.clone(),
            Arc::new(NoJobs),
        );
        let version = AtomicU64::new(10);
        let state = running_state();
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.to_async(&runtime).iter_batched(
                    || {
                        // Every change a newer version, so that every subscriber gets a push.
                        let mut state = state.clone();
                        state.version = version.fetch_add(1, Ordering::Relaxed);
                        let _ = sender.take();
                        Arc::new(state)
                    },
                    |state| {
                        let processor = processor.clone();
                        async move { processor.fan_out(&state).await.unwrap() }
                    },
                    BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

fn stream_batch(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dynamodb-local-generate-report.json"
    );
    let event: StreamEvent = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut group = c.benchmark_group("stream_decode");
    group.throughput(Throughput::Elements(event.records.len() as u64));
    group.bench_function("recorded_batch", |b| {
        b.iter(|| stream::decode(std::hint::black_box(&event)));
    });
    group.finish();
}

criterion_group!(
    benches,
    protocol_paths,
    resolve_document,
    fan_out,
    stream_batch
);
criterion_main!(benches);
