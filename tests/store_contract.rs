//! One contract for every `Store`: the embedded store and `DynamoDbStore` on DynamoDB Local
//! (started by the test command, which sets `STREAMER_DYNAMODB_ENDPOINT`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use streamer::aws::stream::{self, StreamEvent};
use streamer::aws::tables::REQUESTS;
use streamer::aws::{DynamoDbStore, PollerOptions, StreamPoller, Tables};
use streamer::core::store::{Change, ChangeKind, Finish, RequestFilter};
use streamer::core::{
    AsyncRequest, Connection, Error, MemoryStore, Principal, RequestError, RequestStatus,
    RequestTemplate, Store, Subscription, SubscriptionKey,
};

/// `seconds` after the start of this hour: recent, since DynamoDB Local deletes items whose
/// TTL (days after these times) has passed.
fn at(seconds: i64) -> DateTime<Utc> {
    let hour = Utc::now().timestamp() / 3600 * 3600;
    DateTime::from_timestamp(hour + seconds, 0).unwrap()
}

/// Ids unique to one run, so runs against a shared DynamoDB Local do not collide.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{prefix}-{nanos}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn key(request_id: &str, connection_id: &str, operation_id: &str) -> SubscriptionKey {
    SubscriptionKey {
        request_id: request_id.into(),
        connection_id: connection_id.into(),
        operation_id: operation_id.into(),
    }
}

/// The sweeper's delete: only a connection that still awaits `connection_init` goes.
async fn conditional_delete(store: &dyn Store) {
    let (silent, polite) = (unique("conn"), unique("conn"));
    for id in [&silent, &polite] {
        store
            .put_connection(&Connection::new(id, at(0)))
            .await
            .unwrap();
    }
    store
        .acknowledge_connection(&polite, None, &Principal::new(unique("tenant"), "ann"))
        .await
        .unwrap();
    assert!(
        store
            .delete_connection_awaiting_init(&silent)
            .await
            .unwrap()
    );
    assert_eq!(store.get_connection(&silent).await.unwrap(), None);
    assert!(
        !store
            .delete_connection_awaiting_init(&polite)
            .await
            .unwrap(),
        "acknowledged since the index was read: it stays"
    );
    assert!(store.get_connection(&polite).await.unwrap().is_some());
    assert!(
        !store
            .delete_connection_awaiting_init(&silent)
            .await
            .unwrap(),
        "gone"
    );
}

async fn connections(store: &dyn Store) {
    conditional_delete(store).await;
    let id = unique("conn");
    assert_eq!(store.get_connection(&id).await.unwrap(), None);
    let mut connection = Connection::new(&id, at(0));
    connection.query.insert("token".into(), "t".into());
    store.put_connection(&connection).await.unwrap();
    assert_eq!(
        store.get_connection(&id).await.unwrap(),
        Some(connection.clone())
    );
    let waiting = |before| async move {
        store
            .connections_awaiting_init(before, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    assert!(waiting(at(1)).await.contains(&id), "waits for init");
    assert!(
        !waiting(at(0)).await.contains(&id),
        "connected before, strictly"
    );

    let principal = Principal::new(unique("tenant"), "ann");
    assert_eq!(
        store
            .count_connections(&principal.tenant, at(0), 10)
            .await
            .unwrap(),
        0
    );
    store
        .acknowledge_connection(&id, Some(json!({ "auth": "x" })), &principal)
        .await
        .unwrap();
    assert_eq!(
        store
            .count_connections(&principal.tenant, at(0), 10)
            .await
            .unwrap(),
        1,
        "an authenticated connection counts for its tenant"
    );
    // Past its TTL (its `$disconnect` was lost), it no longer counts, though still readable.
    let expired = Connection::new(&id, at(0)).expires_at;
    let after_ttl = DateTime::from_timestamp(expired + 1, 0).unwrap();
    assert_eq!(
        store
            .count_connections(&principal.tenant, after_ttl, 10)
            .await
            .unwrap(),
        0,
        "an expired connection does not count"
    );
    assert!(!waiting(at(1)).await.contains(&id), "initialised");
    assert!(
        matches!(
            store.acknowledge_connection(&id, None, &principal).await,
            Err(Error::Conflict(_))
        ),
        "a second init loses"
    );
    assert!(matches!(
        store
            .acknowledge_connection(&unique("missing"), None, &principal)
            .await,
        Err(Error::NotFound(_))
    ));

    store.add_operation(&id, "op-1", "req-a").await.unwrap();
    assert!(
        matches!(
            store.add_operation(&id, "op-1", "req-b").await,
            Err(Error::Conflict(_))
        ),
        "duplicate operation id"
    );
    assert!(matches!(
        store
            .add_operation(&unique("missing"), "op-1", "req-a")
            .await,
        Err(Error::NotFound(_))
    ));
    store.add_operation(&id, "op-2", "req-b").await.unwrap();
    store.remove_operation(&id, "op-1").await.unwrap();
    store.remove_operation(&id, "never").await.unwrap();

    let stored = store.get_connection(&id).await.unwrap().unwrap();
    assert_eq!(stored.phase, streamer::core::Phase::Acknowledged);
    assert_eq!(
        stored.init_payload.as_deref(),
        Some(&json!({ "auth": "x" }))
    );
    assert_eq!(stored.principal.as_ref(), Some(&principal));
    assert_eq!(
        stored.operations.into_iter().collect::<Vec<_>>(),
        [("op-2".to_owned(), "req-b".to_owned())]
    );

    let deleted = store.delete_connection(&id).await.unwrap().unwrap();
    assert_eq!(deleted.id, id);
    assert_eq!(store.delete_connection(&id).await.unwrap(), None);
}

async fn subscriptions(store: &dyn Store) {
    let request_id = unique("req");
    let other = unique("req");
    let subscription = |connection: &str, operation: &str, request: &str| Subscription {
        key: key(request, connection, operation),
        query: "subscription { requestProgress(id: \"x\") { id } }".into(),
        operation_name: None,
        variables: Some(json!({ "id": request })),
        last_version: 0,
        created_at: at(1),
        expires_at: at(3600).timestamp(),
        pushing_until: None,
        principal: None,
    };
    for (connection, operation) in [("c1", "1"), ("c2", "1"), ("c1", "2")] {
        store
            .put_subscription(&subscription(connection, operation, &request_id))
            .await
            .unwrap();
    }
    store
        .put_subscription(&subscription("c1", "3", &other))
        .await
        .unwrap();
    let mut found = store.subscriptions(&request_id).await.unwrap();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(found.len(), 3, "only this request's subscriptions");
    assert_eq!(*found[0], subscription("c1", "1", &request_id));

    // Holds and releases: a held subscription is not finished until it is released or its
    // hold passes; a release only raises `last_version`.
    let k = key(&request_id, "c1", "1");
    let (now, hold) = (1_000, 11_000);
    let mut held = subscription("c1", "1", &request_id);
    held.pushing_until = Some(hold);
    store.put_subscription(&held).await.unwrap();
    assert_eq!(
        store.finish_subscription(&held, now).await.unwrap(),
        Finish::Busy,
        "not finished under a hold"
    );
    store.release_push(&k, 3).await.unwrap();
    store.release_push(&k, 2).await.unwrap();
    let stored = |found: Vec<Arc<Subscription>>| {
        found
            .into_iter()
            .find(|s| s.key == k)
            .map(|s| (s.last_version, s.pushing_until))
    };
    assert_eq!(
        stored(store.subscriptions(&request_id).await.unwrap()),
        Some((3, None)),
        "released at 3; an older release changes nothing"
    );
    assert_eq!(
        store.subscription(&k).await.unwrap().map(|s| (
            s.key.clone(),
            s.last_version,
            s.pushing_until
        )),
        Some((k.clone(), 3, None)),
        "one subscription read by its key, as stored"
    );
    assert_eq!(
        store.subscription(&key(&other, "c1", "1")).await.unwrap(),
        None,
        "a key of another request's partition finds nothing"
    );
    store.put_subscription(&held).await.unwrap();
    store
        .release_push(&key(&request_id, "nope", "1"), 9)
        .await
        .unwrap();
    assert_eq!(
        store.subscriptions(&request_id).await.unwrap().len(),
        3,
        "a release of a missing subscription stores nothing"
    );
    // A hold whose gateway died passes.
    store.release_push(&k, 5).await.unwrap();
    store
        .put_subscription(&{
            let mut again = held.clone();
            again.last_version = 5;
            again
        })
        .await
        .unwrap();

    // Known at another version than it is stored at: finished all the same.
    match store.finish_subscription(&held, hold + 3).await.unwrap() {
        Finish::Deleted(deleted) => assert_eq!(deleted.last_version, 5),
        other => panic!("expected the subscription, got {other:?}"),
    }
    assert_eq!(
        store.finish_subscription(&held, hold + 3).await.unwrap(),
        Finish::Gone,
        "only one finisher wins"
    );
    let k2 = key(&request_id, "c2", "1");
    assert!(store.delete_subscription(&k2).await.unwrap().is_some());
    assert_eq!(store.delete_subscription(&k2).await.unwrap(), None);
    assert_eq!(store.subscriptions(&request_id).await.unwrap().len(), 1);
    opening(store).await;
}

/// A subscription is opened with its operation on its connection, both or neither.
async fn opening(store: &dyn Store) {
    let request_id = unique("req");
    let connection_id = unique("conn");
    store
        .put_connection(&Connection::new(&connection_id, at(0)))
        .await
        .unwrap();
    let opened = |operation: &str, connection: &str| Subscription {
        key: key(&request_id, connection, operation),
        query: "subscription { requestProgress(id: \"x\") { id } }".into(),
        operation_name: None,
        variables: None,
        last_version: 2,
        created_at: at(1),
        expires_at: at(3600).timestamp(),
        pushing_until: Some(7),
        principal: None,
    };
    store
        .open_subscription(&opened("1", &connection_id))
        .await
        .unwrap();
    let operations = |connection: Option<Connection>| {
        connection
            .unwrap()
            .operations
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        operations(store.get_connection(&connection_id).await.unwrap()),
        [("1".to_owned(), request_id.clone())]
    );
    assert_eq!(
        store.subscriptions(&request_id).await.unwrap(),
        [Arc::new(opened("1", &connection_id))]
    );
    // The id is taken (by an operation or a mark): nothing is stored.
    store
        .add_operation(&connection_id, "2", "a mark")
        .await
        .unwrap();
    for taken in ["1", "2"] {
        let mut again = opened(taken, &connection_id);
        again.last_version = 9;
        assert!(
            matches!(
                store.open_subscription(&again).await,
                Err(Error::Conflict(_))
            ),
            "operation {taken} is taken"
        );
    }
    // The connection is gone: nothing is stored.
    assert!(matches!(
        store.open_subscription(&opened("1", &unique("gone"))).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        store.subscriptions(&request_id).await.unwrap(),
        [Arc::new(opened("1", &connection_id))],
        "a refused open stores no subscription"
    );
    assert_eq!(
        operations(store.get_connection(&connection_id).await.unwrap()),
        [
            ("1".to_owned(), request_id.clone()),
            ("2".to_owned(), "a mark".to_owned())
        ]
    );
    // Finished: its operation goes with it; another id's mark stays.
    let finished = opened("1", &connection_id);
    assert_eq!(
        store.finish_subscription(&finished, 8).await.unwrap(),
        Finish::Deleted(Box::new(finished.clone()))
    );
    assert_eq!(store.subscriptions(&request_id).await.unwrap(), []);
    assert_eq!(
        operations(store.get_connection(&connection_id).await.unwrap()),
        [("2".to_owned(), "a mark".to_owned())]
    );
    assert_eq!(
        store.finish_subscription(&finished, 8).await.unwrap(),
        Finish::Gone
    );
}

async fn requests(store: &dyn Store) {
    let id = unique("req");
    let mut request = AsyncRequest::new(&id, "generateReport", json!({ "rows": 1 }), at(0));
    store.create_request(&request).await.unwrap();
    assert!(
        matches!(
            store.create_request(&request).await,
            Err(Error::Conflict(_))
        ),
        "ids are unique"
    );
    assert_eq!(store.get_request(&id).await.unwrap(), Some(request.clone()));

    let read = request.clone();
    request.start(at(1)).unwrap();
    save(store, &mut request).await.unwrap();
    let mut stale = read.clone();
    stale.report(0.5, Some("late".into()), at(2)).unwrap_err();
    stale.cancel(at(2)).unwrap();
    assert!(
        matches!(save(store, &mut stale).await, Err(Error::Conflict(_))),
        "a stale writer loses"
    );
    // A write that keeps the version (a lease renewal) still moves the revision: a writer
    // that read before it loses too, so that it cannot undo it.
    let before_renewal = request.clone();
    request.renew(at(2), chrono::Duration::seconds(30)).unwrap();
    save(store, &mut request).await.unwrap();
    let mut cancelling = before_renewal;
    cancelling.cancel(at(2)).unwrap();
    assert!(
        matches!(save(store, &mut cancelling).await, Err(Error::Conflict(_))),
        "a writer that read before a renewal loses"
    );
    request.report(0.25, Some("a".into()), at(3)).unwrap();
    save(store, &mut request).await.unwrap();
    let stored = store.get_request(&id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.revision), (3, 3));
    assert!(matches!(
        store
            .update_request(&AsyncRequest::new(unique("x"), "a", json!(null), at(0)), 1)
            .await,
        Err(Error::Conflict(_))
    ));

    // Several read at once: those that exist, in the order asked, more than one batch call
    // of 100 holds.
    let mut others: Vec<String> = (0..101).map(|_| unique("many")).collect();
    for other in &others {
        store
            .create_request(&AsyncRequest::new(other, "a", json!(null), at(0)))
            .await
            .unwrap();
    }
    others.reverse();
    let mut asked = vec![unique("missing"), id.clone()];
    asked.extend(others.iter().cloned());
    let read: Vec<(String, u64)> = store
        .get_requests(&asked)
        .await
        .unwrap()
        .into_iter()
        .map(|request| (request.id, request.version))
        .collect();
    let mut expected = vec![(id.clone(), 3)];
    expected.extend(others.iter().map(|other| (other.clone(), 1)));
    assert_eq!(read, expected, "the ones that exist, in the order asked");

    // What a later state clears (a lease, a wait's children and time) is gone from the
    // stored one too.
    let workflow = unique("workflow");
    let mut waiting = AsyncRequest::new(&workflow, "a", json!(null), at(0));
    store.create_request(&waiting).await.unwrap();
    waiting
        .claim(at(1), chrono::Duration::seconds(30), 3)
        .unwrap();
    save(store, &mut waiting).await.unwrap();
    waiting
        .suspend(streamer::core::Wait::Children(vec!["child".into()]), at(2))
        .unwrap();
    save(store, &mut waiting).await.unwrap();
    waiting.wake(at(3)).unwrap();
    save(store, &mut waiting).await.unwrap();
    let stored = store.get_request(&workflow).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.waiting_for.clone(),
            stored.wake_at,
            stored.lease_until
        ),
        (Vec::new(), None, None),
        "cleared when stored"
    );
    assert_eq!(stored, waiting);
}

async fn listing(store: &dyn Store) {
    // Listing sees every request of the store; count only this run's.
    let action = unique("list");
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut request = AsyncRequest::new(unique("req"), &action, json!(n), at(n));
        store.create_request(&request).await.unwrap();
        if n % 2 == 0 {
            request.cancel(at(10 + n)).unwrap();
            save(store, &mut request).await.unwrap();
        }
        ids.push(request.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_requests(&RequestFilter {
                tenant: Some(streamer::core::DEV_TENANT.to_owned()),
                owner: None,
                status: None,
                limit: 2,
                after: after.clone(),
                parent: None,
                newest_first: false,
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(
            page.items
                .iter()
                .filter(|r| r.action == action)
                .map(|r| r.id.clone()),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every request once, oldest first");
    let cancelled = store
        .list_requests(&RequestFilter {
            tenant: Some(streamer::core::DEV_TENANT.to_owned()),
            owner: None,
            status: Some(RequestStatus::Cancelled),
            limit: 100,
            after: None,
            parent: None,
            newest_first: false,
        })
        .await
        .unwrap();
    let cancelled: Vec<String> = cancelled
        .items
        .into_iter()
        .filter(|r| r.action == action)
        .map(|r| r.id)
        .collect();
    assert_eq!(cancelled, [ids[0].clone(), ids[2].clone(), ids[4].clone()]);
}

/// Listing is per tenant (and per owner when asked); quotas count per tenant.
async fn tenants(store: &dyn Store) {
    let (acme, globex) = (unique("acme"), unique("globex"));
    let ann = Principal::new(&acme, "ann");
    let bob = Principal::new(&acme, "bob");
    let eve = Principal::new(&globex, "eve");
    let mut ids = Vec::new();
    for (n, owner) in [&ann, &bob, &eve, &ann].into_iter().enumerate() {
        let request = AsyncRequest::new(unique("req"), "a", json!(n), at(n as i64)).owned_by(owner);
        store.create_request(&request).await.unwrap();
        ids.push(request.id);
    }
    let list = |tenant: &str, owner: Option<&str>| {
        let filter = RequestFilter {
            tenant: Some(tenant.to_owned()),
            owner: owner.map(str::to_owned),
            status: None,
            limit: 10,
            after: None,
            parent: None,
            newest_first: false,
        };
        async move {
            let page = store.list_requests(&filter).await.unwrap();
            page.items.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(&acme, None).await,
        [ids[0].clone(), ids[1].clone(), ids[3].clone()]
    );
    assert_eq!(
        list(&acme, Some("ann")).await,
        [ids[0].clone(), ids[3].clone()]
    );
    assert_eq!(list(&globex, None).await, [ids[2].clone()]);
    assert_eq!(store.count_active_requests(&acme, 10).await.unwrap(), 3);
    assert_eq!(
        store.count_active_requests(&acme, 2).await.unwrap(),
        2,
        "counts up to the cap"
    );
    let mut done = store.get_request(&ids[0]).await.unwrap().unwrap();
    done.cancel(at(9)).unwrap();
    save(store, &mut done).await.unwrap();
    assert_eq!(
        store.count_active_requests(&acme, 10).await.unwrap(),
        2,
        "ended ones do not count"
    );
    active_count(store, &acme, &ann, &ids[1]).await;
    // Every tenant's unfinished requests, by status: the sweeper's listing.
    let queued = store
        .list_requests(&RequestFilter {
            tenant: None,
            owner: None,
            status: Some(RequestStatus::Queued),
            limit: 1000,
            after: None,
            parent: None,
            newest_first: false,
        })
        .await
        .unwrap();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(queued.items.iter().any(|r| r.id == *id), n != 0, "{n}");
    }

    let window = at(0).timestamp();
    // Several at once, all or none: two of three, then two more do not fit.
    assert!(
        store
            .take_enqueue_tokens(&globex, window - 1, 3, 2)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_enqueue_tokens(&globex, window - 1, 3, 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .take_enqueue_tokens(&globex, window - 1, 3, 1)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_enqueue_tokens(&globex, window - 1, 3, 4)
            .await
            .unwrap()
    );
    for _ in 0..3 {
        assert!(
            store
                .take_enqueue_tokens(&acme, window, 3, 1)
                .await
                .unwrap()
        );
    }
    assert!(
        !store
            .take_enqueue_tokens(&acme, window, 3, 1)
            .await
            .unwrap(),
        "the window is used up"
    );
    assert!(
        store
            .take_enqueue_tokens(&globex, window, 3, 1)
            .await
            .unwrap(),
        "per tenant"
    );
    assert!(
        store
            .take_enqueue_tokens(&acme, window + 1, 3, 1)
            .await
            .unwrap(),
        "the next second"
    );
}

async fn history(store: &dyn Store) {
    let id = unique("req");
    let mut request = AsyncRequest::new(&id, "a", json!({ "n": 1 }), at(0));
    let mut states = vec![request.clone()];
    request.start(at(1)).unwrap();
    states.push(request.clone());
    request.complete(json!({}), at(2)).unwrap();
    states.push(request.clone());
    // One call for many states of several requests, one of them given twice, more than a
    // DynamoDB batch holds (25).
    let other = unique("req");
    let many: Vec<AsyncRequest> = (1..=30)
        .map(|version| {
            let mut state = AsyncRequest::new(&other, "a", json!({ "n": 2 }), at(0));
            state.version = version;
            state
        })
        .collect();
    let given: Vec<Arc<AsyncRequest>> = states
        .iter()
        .chain([&states[1]])
        .chain(&many)
        .map(|state| Arc::new(state.clone()))
        .collect();
    store.record_history(&given).await.unwrap();
    assert_eq!(
        store.request_history(&id, 1, 100).await.unwrap(),
        states[1..]
    );
    assert_eq!(store.request_history(&other, 0, 100).await.unwrap(), many);
    assert_eq!(store.request_history(&id, 0, 1).await.unwrap(), states[..1]);
    assert_eq!(store.request_history(&id, 3, 100).await.unwrap(), []);
    assert_eq!(
        store
            .request_history(&unique("none"), 0, 100)
            .await
            .unwrap(),
        []
    );
}

async fn contract(store: &dyn Store) {
    history(store).await;
    connections(store).await;
    subscriptions(store).await;
    requests(store).await;
    listing(store).await;
    tenants(store).await;
    item_size(store).await;
    templates(store).await;
    batches(store).await;
}

/// Batches: stored with their children only when the quota has room for all of them, once;
/// the children listed in their order, by pages and by status; the batch read back with its
/// marks.
async fn batches(store: &dyn Store) {
    let tenant = unique("batcher");
    let owner = Principal::new(&tenant, "ann");
    let batch = AsyncRequest::new_batch(unique("batch"), "a", 5, at(0)).owned_by(&owner);
    let children: Vec<AsyncRequest> = (0..5).map(|i| batch.child(i, json!({ "n": i }))).collect();
    assert!(matches!(
        store.create_batch(&batch, &children, Some(5)).await,
        Err(Error::QuotaFull(_))
    ));
    assert_eq!(store.get_request(&batch.id).await.unwrap(), None);
    assert_eq!(store.get_request(&children[0].id).await.unwrap(), None);
    assert_eq!(store.count_active_requests(&tenant, 100).await.unwrap(), 0);
    store
        .create_batch(&batch, &children, Some(6))
        .await
        .unwrap();
    assert_eq!(store.count_active_requests(&tenant, 100).await.unwrap(), 6);
    assert!(matches!(
        store.create_batch(&batch, &children, None).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.get_request(&batch.id).await.unwrap().as_ref(),
        Some(&batch)
    );
    assert_eq!(
        store.get_request(&children[4].id).await.unwrap().as_ref(),
        Some(&children[4])
    );

    let mut third = children[3].clone();
    third.start(at(1)).unwrap();
    save(store, &mut third).await.unwrap();
    let filter = |status, after: Option<String>| RequestFilter {
        tenant: Some(tenant.clone()),
        owner: None,
        status,
        parent: Some(batch.id.clone()),
        newest_first: false,
        limit: 2,
        after,
    };
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_requests(&filter(None, after)).await.unwrap();
        listed.extend(page.items.into_iter().map(|r| r.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
    assert_eq!(listed, ids, "in their order in the batch");
    // Newest first, by pages, the children and the tenant's requests alike.
    for parent in [Some(batch.id.clone()), None] {
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_requests(&RequestFilter {
                    parent: parent.clone(),
                    newest_first: true,
                    ..filter(None, after)
                })
                .await
                .unwrap();
            listed.extend(page.items.into_iter().map(|r| r.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut expected: Vec<String> = ids.iter().rev().cloned().collect();
        if parent.is_none() {
            expected.push(batch.id.clone());
        }
        assert_eq!(listed, expected, "newest first under {parent:?}");
    }
    let running = store
        .list_requests(&filter(Some(RequestStatus::Running), None))
        .await
        .unwrap();
    assert_eq!(
        running
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [third.id.as_str()]
    );
}

/// Templates: per tenant, by name, a version that rises with each save; counted and listed
/// up to a bound.
async fn templates(store: &dyn Store) {
    let (acme, globex) = (unique("acme"), unique("globex"));
    let template = |tenant: &str, name: &str| RequestTemplate {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        action: "a".to_owned(),
        payload: json!({ "n": name }),
        description: None,
        version: 0,
        updated_at: at(0),
    };
    for name in ["b", "a", "c"] {
        assert_eq!(
            store
                .save_template(&template(&acme, name))
                .await
                .unwrap()
                .version,
            1
        );
    }
    let again = store.save_template(&template(&acme, "b")).await.unwrap();
    assert_eq!(
        (again.version, again.payload.clone()),
        (2, json!({ "n": "b" }))
    );
    let names = |list: Vec<RequestTemplate>| list.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.templates(&acme, 10).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(names(store.templates(&acme, 2).await.unwrap()), ["a", "b"]);
    assert_eq!(store.count_templates(&acme, 10).await.unwrap(), 3);
    assert_eq!(
        store.count_templates(&acme, 2).await.unwrap(),
        2,
        "counts up to the cap"
    );
    assert_eq!(store.count_templates(&globex, 10).await.unwrap(), 0);
    assert_eq!(store.get_template(&globex, "a").await.unwrap(), None);
    assert_eq!(store.get_template(&acme, "b").await.unwrap(), Some(again));
    assert!(store.delete_template(&acme, "b").await.unwrap());
    assert!(!store.delete_template(&acme, "b").await.unwrap());
    assert_eq!(store.count_templates(&acme, 10).await.unwrap(), 2);
}

/// A request item over DynamoDB's 400 KB is refused, and nothing is written.
async fn item_size(store: &dyn Store) {
    let mut request = AsyncRequest::new(unique("big"), "a", json!({}), at(0));
    store.create_request(&request).await.unwrap();
    request.start(at(1)).unwrap();
    request
        .complete(json!({ "text": "x".repeat(420 * 1024) }), at(2))
        .unwrap();
    assert!(
        matches!(save(store, &mut request).await, Err(Error::Backend { .. })),
        "refused"
    );
    let stored = store.get_request(&request.id).await.unwrap().unwrap();
    assert_eq!(stored.status.as_str(), "QUEUED", "nothing written");
    let big = AsyncRequest::new(unique("big"), "a", json!("x".repeat(420 * 1024)), at(0));
    assert!(store.create_request(&big).await.is_err());
    assert_eq!(store.get_request(&big.id).await.unwrap(), None);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

/// The count of a tenant's requests not yet ended (2 on entry, `running` among them) follows
/// every move in and out of it exactly once, lost writes move nothing, and the quota holds
/// against concurrent creates.
async fn active_count(store: &dyn Store, tenant: &str, owner: &Principal, running: &str) {
    let count = || async { store.count_active_requests(tenant, 100).await.unwrap() };
    let mut request = store.get_request(running).await.unwrap().unwrap();
    request.start(at(10)).unwrap();
    save(store, &mut request).await.unwrap();
    assert_eq!(count().await, 2, "a move between active statuses");
    request
        .fail(
            RequestError {
                code: "E".into(),
                message: "no".into(),
                retryable: false,
            },
            at(11),
        )
        .unwrap();
    let mut stale = request.clone();
    save(store, &mut request).await.unwrap();
    assert_eq!(count().await, 1, "an end counts once");
    assert!(matches!(
        save(store, &mut stale).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(count().await, 1, "a lost write moves nothing");
    // A write of an ended request that keeps it ended.
    store
        .update_request(&request, request.revision)
        .await
        .unwrap();
    assert_eq!(count().await, 1);
    request.redrive(at(12)).unwrap();
    save(store, &mut request).await.unwrap();
    assert_eq!(count().await, 2, "a re-drive counts again");

    // The quota: of 6 concurrent creates with room for 2, exactly 2 are stored.
    let creates = (0..6).map(|n| async move {
        let request = AsyncRequest::new(unique("q"), "a", json!(n), at(20)).owned_by(owner);
        store.create_request_within(&request, Some(4)).await
    });
    let outcomes = futures::future::join_all(creates).await;
    let stored = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    assert_eq!(stored, 2, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().err())
            .all(|error| matches!(error, Error::QuotaFull(_))),
        "{outcomes:?}"
    );
    assert_eq!(count().await, 4);
    // An existing id is a conflict before it is over the quota (an idempotent repeat).
    let again = store.get_request(running).await.unwrap().unwrap();
    assert!(matches!(
        store.create_request_within(&again, Some(4)).await,
        Err(Error::Conflict(_))
    ));
}

/// Takes one request through its life, with a write that changes nothing on the way.
async fn write_history(store: &dyn Store, id: &str) {
    let mut request = AsyncRequest::new(id, "a", json!({}), at(0));
    store.create_request(&request).await.unwrap();
    request.start(at(1)).unwrap();
    save(store, &mut request).await.unwrap();
    // A write that changes nothing yields no record.
    store
        .update_request(&request, request.revision)
        .await
        .unwrap();
    request.complete(json!(1), at(2)).unwrap();
    save(store, &mut request).await.unwrap();
}

/// Writes `request` over the revision it was read at, as `modify_request` does.
async fn save(store: &dyn Store, request: &mut AsyncRequest) -> streamer::core::Result<()> {
    let read = request.revision;
    request.revision += 1;
    store.update_request(request, read).await
}

/// Asserts the changes of request `id`: one per visible write, in order, with both images.
fn assert_history(changes: &[Change], id: &str) {
    let changes: Vec<&Change> = changes
        .iter()
        .filter(|c| c.request_id() == Some(id))
        .collect();
    let seen: Vec<(ChangeKind, Option<u64>, Option<u64>)> = changes
        .iter()
        .map(|c| {
            (
                c.kind,
                c.old.as_ref().map(|r| r.version),
                c.new.as_ref().map(|r| r.version),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ChangeKind::Insert, None, Some(1)),
            (ChangeKind::Modify, Some(1), Some(2)),
            (ChangeKind::Modify, Some(2), Some(3))
        ]
    );
    assert!(changes.windows(2).all(|w| {
        let (a, b) = (&w[0].sequence_number, &w[1].sequence_number);
        (a.len(), a) < (b.len(), b)
    }));
    assert_eq!(
        changes[2].new.as_ref().unwrap().status,
        RequestStatus::Completed
    );
}

#[tokio::test]
async fn memory_store_feed_is_ordered_per_item_with_both_images() {
    let store = MemoryStore::new();
    let mut feed = store.changes();
    write_history(&store, "r").await;
    let mut changes = Vec::new();
    while let Ok(change) = feed.try_recv() {
        changes.push(change);
    }
    assert_history(&changes, "r");
    assert_eq!(
        store.expire(at(0) + chrono::Duration::days(30)),
        1,
        "TTL removes the expired request"
    );
    assert_eq!(feed.try_recv().unwrap().kind, ChangeKind::Expire);
}

fn dynamodb_endpoint() -> String {
    std::env::var("STREAMER_DYNAMODB_ENDPOINT")
        .expect("STREAMER_DYNAMODB_ENDPOINT: scripts/test starts DynamoDB Local and sets it")
}

async fn dynamodb_store() -> (DynamoDbStore, StreamPoller) {
    let endpoint = dynamodb_endpoint();
    let tables = Tables::with_prefix(&unique("contract"));
    let store = DynamoDbStore::local(&endpoint, tables.clone());
    store.create_tables().await.expect("tables created");
    let poller = StreamPoller::local(&endpoint, tables.name(&REQUESTS), PollerOptions::default());
    (store, poller)
}

async fn stream_changes(poller: &StreamPoller) -> Vec<Change> {
    let records = poller.read_retained().await.expect("stream read");
    let decoded = stream::decode(&StreamEvent { records });
    assert!(decoded.failures.is_empty(), "{:?}", decoded.failures);
    decoded.changes
}

#[tokio::test]
async fn dynamodb_stream_is_ordered_per_item_with_both_images() {
    let (store, poller) = dynamodb_store().await;
    let (first, second) = (unique("r"), unique("r"));
    // Two items written turn about: order holds per item.
    let (a, b) = tokio::join!(
        write_history(&store, &first),
        write_history(&store, &second)
    );
    let ((), ()) = (a, b);
    let changes = stream_changes(&poller).await;
    assert_history(&changes, &first);
    assert_history(&changes, &second);
}

#[tokio::test]
async fn dynamodb_store_keeps_the_contract() {
    let (store, _) = dynamodb_store().await;
    assert_eq!(
        store.table_drift().await.unwrap(),
        Vec::<String>::new(),
        "the created tables are the definitions"
    );
    contract(&store).await;
}

/// A single write that DynamoDB refuses because a transaction in flight includes its item
/// (`TransactionConflictException`, which DynamoDB Local never raises: served here by a fake
/// endpoint) is tried again, and succeeds.
#[tokio::test]
async fn a_write_refused_by_a_transaction_in_flight_is_tried_again() {
    use axum::http::{HeaderMap, StatusCode};
    let calls = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&calls);
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let seen = Arc::clone(&seen);
        async move {
            let target = headers["x-amz-target"].to_str().unwrap().to_owned();
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push(target);
                seen.len() == 1
            };
            let content = [("content-type", "application/x-amz-json-1.0")];
            if first {
                let refusal = json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                    "message": "Transaction is ongoing for the item"
                });
                (StatusCode::BAD_REQUEST, content, refusal.to_string())
            } else {
                (StatusCode::OK, content, "{}".to_owned())
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let store = DynamoDbStore::local(&endpoint, Tables::with_prefix("conflicts"));
    store.remove_operation("c", "1").await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "DynamoDB_20120810.UpdateItem",
            "DynamoDB_20120810.UpdateItem"
        ],
        "refused once, then written"
    );
}
