//! A tenant's share of the job slots where the dispatcher keeps no queue (the worker
//! function on AWS): the processor and the sweeper hold back the jobs of a tenant that runs
//! its share, and start the tenant's oldest waiting job when one of its runs ends. On both
//! stores: the counts come from the tenant-and-status index.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use streamer::core::store::{Change, ChangeKind};
use streamer::core::{
    AsyncRequest, Clock, Limits, ManualClock, MemorySender, MemoryStore, Principal, RandomIds,
    Store,
};
use streamer::processor::{Dispatcher, FairDispatcher, Processor, SweepOptions, Sweeper};
use streamer::schema::Services;
use support::{On, handlers};

/// Records what was started.
#[derive(Debug, Default)]
struct Started(Mutex<Vec<String>>);

impl Started {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[async_trait]
impl Dispatcher for Started {
    async fn dispatch(&self, request: &AsyncRequest) -> streamer::core::Result<()> {
        self.0.lock().unwrap().push(request.id.clone());
        Ok(())
    }
}

async fn store_on(on: On) -> Arc<dyn Store> {
    match on {
        On::Embedded | On::ManagementApi => Arc::new(MemoryStore::new()),
        On::DynamoDb => {
            let store = streamer::aws::DynamoDbStore::local(
                &support::dynamodb_endpoint(),
                support::unique_tables(),
            );
            store
                .create_tables()
                .await
                .expect("tables on DynamoDB Local");
            Arc::new(store)
        }
    }
}

fn of(tenant: &str, id: &str, at: DateTime<Utc>) -> AsyncRequest {
    AsyncRequest::new(id, "generateReport", json!({}), at).owned_by(&Principal::new(tenant, "u"))
}

fn inserted(request: &AsyncRequest) -> Change {
    Change {
        sequence_number: format!("{}-{}", request.id, request.version),
        kind: ChangeKind::Insert,
        old: None,
        new: Some(Arc::new(request.clone())),
    }
}

fn modified(old: &AsyncRequest, new: &AsyncRequest) -> Change {
    Change {
        sequence_number: format!("{}-{}", new.id, new.version),
        kind: ChangeKind::Modify,
        old: Some(Arc::new(old.clone())),
        new: Some(Arc::new(new.clone())),
    }
}

/// A processor starting jobs through a [`FairDispatcher`] that gives each tenant 2 slots,
/// recording what it starts, on a manual clock.
struct Setup {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    t0: DateTime<Utc>,
    started: Arc<Started>,
    fair: Arc<dyn Dispatcher>,
    processor: Processor,
}

impl Setup {
    async fn on(on: On) -> Self {
        let store = store_on(on).await;
        let clock = Arc::new(ManualClock::default());
        let started = Arc::new(Started::default());
        let fair: Arc<dyn Dispatcher> =
            Arc::new(FairDispatcher::new(started.clone(), Arc::clone(&store), 2));
        let services = Services {
            store: Arc::clone(&store),
            clock: clock.clone(),
            ids: Arc::new(RandomIds),
            limits: Limits::default(),
            access: streamer::core::Access::default(),
        };
        let processor = Processor::for_app(
            handlers::app().handlers(),
            &services,
            Arc::new(MemorySender::new()),
            Arc::clone(&fair),
        )
        .unwrap();
        Self {
            t0: clock.now(),
            store,
            clock,
            started,
            fair,
            processor,
        }
    }
}

/// Claims the QUEUED `request` at `at` in `store`, as a worker does; returns it RUNNING.
async fn claim(store: &dyn Store, request: &AsyncRequest, at: DateTime<Utc>) -> AsyncRequest {
    let mut claimed = request.clone();
    claimed.claim(at, chrono::Duration::minutes(5), 3).unwrap();
    claimed.revision += 1;
    store
        .update_request(&claimed, request.revision)
        .await
        .unwrap();
    claimed
}

async fn a_tenant_at_its_share_waits_while_others_start(on: On) {
    let Setup {
        store,
        clock,
        t0,
        started,
        fair,
        processor,
    } = Setup::on(on).await;

    // Tenant a runs two jobs, its share.
    let mut running = Vec::new();
    for n in 0..2 {
        let request = of("a", &format!("a-run{n}"), t0);
        store.create_request(&request).await.unwrap();
        running.push(claim(&*store, &request, t0).await);
    }
    // Three more of a's and one of b's are enqueued, a's first.
    let mut waiting = Vec::new();
    for (n, (tenant, id)) in [
        ("a", "a-wait0"),
        ("a", "a-wait1"),
        ("a", "a-wait2"),
        ("b", "b-0"),
    ]
    .into_iter()
    .enumerate()
    {
        let request = of(
            tenant,
            id,
            t0 + chrono::Duration::milliseconds(n as i64 + 1),
        );
        store.create_request(&request).await.unwrap();
        processor.handle(&inserted(&request)).await.unwrap();
        waiting.push(request);
    }
    assert_eq!(started.take(), ["b-0"], "a's jobs wait; b's starts");

    // One of a's runs ends: its oldest waiting job takes the slot.
    let before = running[0].clone();
    let mut done = before.clone();
    done.complete(json!({ "rows": 1 }), t0 + chrono::Duration::seconds(1))
        .unwrap();
    done.revision += 1;
    store.update_request(&done, before.revision).await.unwrap();
    processor.handle(&modified(&before, &done)).await.unwrap();
    assert_eq!(started.take(), ["a-wait0"]);

    // The started job claims its slot; the sweeper re-dispatches what stayed QUEUED past its
    // grace through the same rule: b's again (lost dispatches are retried), none of a's.
    claim(&*store, &waiting[0], t0 + chrono::Duration::seconds(1)).await;
    clock.advance(chrono::Duration::minutes(2));
    let sweeper = Sweeper::new(
        Arc::clone(&store),
        Arc::new(MemorySender::new()),
        Arc::clone(&fair),
        clock.clone(),
        SweepOptions {
            queued_grace: Duration::from_secs(60),
            ..SweepOptions::default()
        },
    );
    sweeper.sweep().await.unwrap();
    assert_eq!(started.take(), ["b-0"]);
}

/// A batch's children and the tenant's later jobs take turns: when a child ends, a job
/// enqueued after the batch starts before the batch's next child.
async fn a_batch_takes_turns_with_the_tenants_later_jobs(on: On) {
    let Setup {
        store,
        t0,
        started,
        processor,
        ..
    } = Setup::on(on).await;
    let owner = Principal::new("a", "u");
    let batch = AsyncRequest::new_batch("batch", "generateReport", 5, t0).owned_by(&owner);
    let children: Vec<AsyncRequest> = (0..5).map(|i| batch.child(i, json!({}))).collect();
    store.create_batch(&batch, &children, None).await.unwrap();
    // Its first two children run: the tenant's share.
    let mut running = Vec::new();
    for child in &children[..2] {
        running.push(claim(&*store, child, t0).await);
    }
    // A job of the same tenant, enqueued after the batch, waits.
    let later = of("a", "later", t0 + chrono::Duration::seconds(1));
    store.create_request(&later).await.unwrap();
    for request in children[2..].iter().chain([&later]) {
        processor.handle(&inserted(request)).await.unwrap();
    }
    assert_eq!(
        started.take(),
        Vec::<String>::new(),
        "the tenant runs its share"
    );

    // A child ends: the later job starts, not the batch's third child.
    let before = running[0].clone();
    let mut done = before.clone();
    done.complete(json!({}), t0 + chrono::Duration::seconds(2))
        .unwrap();
    done.revision += 1;
    store.update_request(&done, before.revision).await.unwrap();
    processor.handle(&modified(&before, &done)).await.unwrap();
    assert_eq!(started.take(), ["later"]);

    // The later job claims its slot; the other child ends: the batch's next child starts.
    claim(&*store, &later, t0 + chrono::Duration::seconds(2)).await;
    let before = running[1].clone();
    let mut done = before.clone();
    done.complete(json!({}), t0 + chrono::Duration::seconds(3))
        .unwrap();
    done.revision += 1;
    store.update_request(&done, before.revision).await.unwrap();
    processor.handle(&modified(&before, &done)).await.unwrap();
    assert_eq!(started.take(), [children[2].id.clone()]);
}

on_both_stores!(
    a_tenant_at_its_share_waits_while_others_start,
    a_batch_takes_turns_with_the_tenants_later_jobs,
);
