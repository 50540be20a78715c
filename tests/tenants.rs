//! Tenants: HS256 JWT authentication on the local stack; two tenants through the real
//! graphql-ws client (tests/js/tenants.mjs) on both stores; a quota exceeded with its code
//! while the tenant's other work and other tenants carry on; a token that expires during a
//! connection; the authorization rule over random principals and requests; and pushes held
//! to the same rule.

mod support;

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use streamer::core::{
    Access, AsyncRequest, Limits, MemorySender, MemoryStore, Principal, Store, Subscription,
    SubscriptionKey, SystemClock,
};
use streamer::gateway::JwtAuthenticator;
use support::{On, TestServer, run_node};

const SECRET: &[u8] = b"a-test-secret";

fn token(tenant: &str, user: &str, expires_in: i64, secret: &[u8]) -> String {
    support::jwt(secret, tenant, user, expires_in)
}

async fn start(on: On, limits: Limits) -> TestServer {
    TestServer::start_tuned(on, move |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_limits(limits)
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
    })
    .await
}

async fn tenant_b_cannot_touch_tenant_a_s_request(on: On) {
    let server = start(on, Limits::default()).await;
    let tokens = json!({
        "a": token("acme", "ann", 600, SECRET),
        "b": token("globex", "bob", 600, SECRET),
        "forged": token("acme", "ann", 600, b"not-the-secret"),
        "expired": token("acme", "ann", -60, SECRET),
    });
    let summary = run_node("tenants.mjs", &server, &[tokens.to_string()]).await;
    assert_eq!(
        summary["refused"],
        json!({ "missing": 4403, "forged": 4403, "expired": 4403 })
    );
    // What B got, for the record: each is also what an unknown id gets (checked there).
    assert_eq!(
        summary["checks"]["read"]["values"][0]["data"]["request"],
        Value::Null
    );
    assert_eq!(
        summary["checks"]["cancel"]["error"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
    assert_eq!(
        summary["checks"]["subscribe"]["error"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
}

on_both_stores!(tenant_b_cannot_touch_tenant_a_s_request);

#[tokio::test]
async fn a_quota_exceeded_names_itself_and_spares_other_work() {
    let limits = Limits {
        max_tenant_active_requests: Some(2),
        ..Limits::default()
    };
    let server = start(On::Embedded, limits).await;
    let mut ann = server.client().await;
    ann.init_as(&token("acme", "ann", 600, SECRET)).await;
    let first = ann.generate_report("m1", 100).await;
    let _second = ann.generate_report("m2", 100).await;
    ann.send(json!({ "id": "m3", "type": "subscribe", "payload": { "query": "mutation { flakyImport(input: {failTimes: 0}) { id } }" } }))
        .await;
    let frames = ann.until_done("m3").await;
    let error = &frames[0]["payload"][0];
    assert_eq!(error["extensions"]["code"], "QUOTA_EXCEEDED", "{frames:?}");
    assert_eq!(error["extensions"]["quota"], "activeRequests");
    assert_eq!(error["extensions"]["max"], 2);
    // Another tenant is not held back.
    let mut bob = server.client().await;
    bob.init_as(&token("globex", "bob", 600, SECRET)).await;
    bob.generate_report("m", 0).await;
    // The tenant's accepted work runs to its end, and then there is room again.
    ann.wait_for_status(&first, "COMPLETED").await;
    ann.flaky_import("m4", 0).await;
}

/// The active-requests quota holds against a burst of concurrent enqueues while the indexes
/// lag: the count is a counter on the base table, moved in the same write as the request.
async fn a_burst_of_enqueues_cannot_pass_the_quota(on: On) {
    let limits = Limits {
        max_tenant_active_requests: Some(3),
        ..Limits::default()
    };
    let server = TestServer::start_tuned(on, move |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_limits(limits)
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
            .with_index_lag(std::time::Duration::from_secs(2))
    })
    .await;
    let enqueues = (0..8).map(|n| {
        let server = &server;
        async move {
            let mut client = server.client().await;
            client.init_as(&token("acme", "ann", 600, SECRET)).await;
            let query = "mutation { generateReport(input: {from: \"2026-01-01\", to: \"2026-01-31\", rows: 1, stepDelayMs: 2000}) { id } }";
            client
                .send(json!({ "id": format!("m{n}"), "type": "subscribe", "payload": { "query": query } }))
                .await;
            client.until_done(&format!("m{n}")).await
        }
    });
    let answers = futures::future::join_all(enqueues).await;
    let accepted = answers
        .iter()
        .filter(|frames| frames[0]["payload"]["data"]["generateReport"]["id"].is_string())
        .count();
    let refused = answers
        .iter()
        .filter(|frames| frames[0]["payload"][0]["extensions"]["code"] == "QUOTA_EXCEEDED")
        .count();
    assert_eq!((accepted, refused), (3, 5), "{answers:?}");
}

on_both_stores!(a_burst_of_enqueues_cannot_pass_the_quota);

/// The connection quota: a tenant's connection over it is closed at `connection_init` with
/// 4403; another tenant connects; a closed connection makes room.
#[tokio::test]
async fn the_connection_quota_holds_per_tenant() {
    let limits = Limits {
        max_tenant_connections: Some(2),
        ..Limits::default()
    };
    let server = start(On::Embedded, limits).await;
    let mut first = server.client().await;
    first.init_as(&token("acme", "ann", 600, SECRET)).await;
    let mut second = server.client().await;
    second.init_as(&token("acme", "ann", 600, SECRET)).await;
    let mut third = server.client().await;
    third
        .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", token("acme", "ann", 600, SECRET)) } }))
        .await;
    let refused = third.recv().await;
    assert_eq!(refused["close"]["code"], 4403, "{refused}");
    assert!(
        refused["close"]["reason"]
            .as_str()
            .unwrap()
            .contains("connection quota"),
        "{refused}"
    );
    let mut other = server.client().await;
    other.init_as(&token("globex", "bob", 600, SECRET)).await;
    // Closing one makes room (the `$disconnect` deletes it).
    drop(first);
    for attempt in 0.. {
        let mut again = server.client().await;
        again
            .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", token("acme", "ann", 600, SECRET)) } }))
            .await;
        if again.recv().await == json!({ "type": "connection_ack" }) {
            break;
        }
        assert!(attempt < 50, "no room after a connection closed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(second);
}

/// The enqueue-rate quota: within one second, the enqueues over it are refused with
/// `QUOTA_EXCEEDED` (`enqueueRate`) and store nothing; another tenant is not held back.
#[tokio::test]
async fn the_enqueue_rate_quota_holds_per_tenant() {
    let limits = Limits {
        max_tenant_enqueues_per_second: Some(5),
        ..Limits::default()
    };
    let server = start(On::Embedded, limits).await;
    let mut ann = server.client().await;
    ann.init_as(&token("acme", "ann", 600, SECRET)).await;
    let enqueue = "mutation { flakyImport(input: {failTimes: 0}) { id } }";
    let started = std::time::Instant::now();
    for n in 0..20 {
        ann.send(
            json!({ "id": format!("m{n}"), "type": "subscribe", "payload": { "query": enqueue } }),
        )
        .await;
    }
    let (mut accepted, mut refused) = (0, 0);
    while accepted + refused < 20 {
        let frame = ann.recv().await;
        match frame["type"].as_str() {
            Some("next") => {
                assert!(frame["payload"]["errors"].is_null(), "{frame}");
                accepted += 1;
            }
            Some("error") => {
                let error = &frame["payload"][0];
                assert_eq!(error["extensions"]["code"], "QUOTA_EXCEEDED", "{frame}");
                assert_eq!(error["extensions"]["quota"], "enqueueRate", "{frame}");
                refused += 1;
            }
            Some("complete") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
    // At most five in each second the twenty were handled in (a slow machine may take
    // more than one), and five at least.
    let seconds = started.elapsed().as_secs() as usize + 2;
    assert!(
        accepted >= 5 && accepted <= 5 * seconds && accepted < 20,
        "{accepted} accepted in {seconds} seconds or less"
    );
    let stored = server
        .store
        .list_requests(&streamer::core::store::RequestFilter {
            tenant: Some("acme".into()),
            owner: None,
            status: None,
            limit: 100,
            after: None,
            parent: None,
            newest_first: false,
        })
        .await
        .unwrap();
    assert_eq!(
        stored.items.len(),
        accepted,
        "a refused enqueue stores nothing"
    );
    let mut bob = server.client().await;
    bob.init_as(&token("globex", "bob", 600, SECRET)).await;
    bob.flaky_import("m", 0).await;

    // A batch's items are enqueues too: six of them pass a quota of five a second.
    let batch = |n: usize| json!({ "type": "subscribe", "payload": { "query": "mutation($p: [JSON!]!) { enqueueBatch(action: \"flakyImport\", payloads: $p) { id } }", "variables": { "p": vec![json!({ "failTimes": 0 }); n] } } });
    let mut six = batch(6);
    six["id"] = json!("b6");
    bob.send(six).await;
    let refused = bob.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["quota"], "enqueueRate");
    let mut two = batch(2);
    two["id"] = json!("b2");
    bob.send(two).await;
    let accepted = bob.recv().await;
    assert_eq!(accepted["type"], "next", "{accepted}");
    assert!(accepted["payload"]["errors"].is_null(), "{accepted}");
}

#[tokio::test]
async fn an_expiring_token_closes_its_connection() {
    let server = start(On::Embedded, Limits::default()).await;
    let mut ann = server.client().await;
    ann.init_as(&token("acme", "ann", 2, SECRET)).await;
    let id = ann.generate_report("m", 1_000).await;
    ann.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": support::PROGRESS, "variables": { "id": id } } }))
        .await;
    // Pushes stop once the token has expired, and the connection is closed with 4403.
    loop {
        let frame = ann.recv().await;
        if let Some(close) = frame.get("close") {
            assert_eq!(close["code"], 4403, "{frame}");
            break;
        }
        assert_eq!(frame["type"], "next", "{frame}");
    }
}

/// The rule, over random principals and requests: a request is visible exactly to its
/// tenant (and, owner-scoped, to its owner), and `request(id)` answers for an invisible
/// request exactly as for an unknown id.
#[tokio::test]
async fn authorization_rule_holds_for_random_principals_and_requests() {
    let store = Arc::new(MemoryStore::new());
    let mut rng = StdRng::seed_from_u64(11);
    let pick = |rng: &mut StdRng| {
        Principal::new(
            format!("t{}", rng.random_range(0..4)),
            format!("u{}", rng.random_range(0..4)),
        )
    };
    let mut requests = Vec::new();
    for n in 0..40 {
        let owner = pick(&mut rng);
        let request = AsyncRequest::new(
            format!("r{n}"),
            "flakyImport",
            json!({ "failTimes": 0 }),
            chrono::Utc::now(),
        )
        .owned_by(&owner);
        store.create_request(&request).await.unwrap();
        requests.push(request);
    }
    for access in [Access::Tenant, Access::Owner] {
        let services = streamer::schema::Services {
            store: store.clone(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(streamer::core::RandomIds),
            limits: Limits::default(),
            access,
        };
        let schema =
            streamer::schema::build(support::handlers::app().handlers(), services).unwrap();
        let ask = |id: &str, caller: &Principal| {
            let request = streamer::async_graphql::Request::new(format!(
                "{{ request(id: \"{id}\") {{ id }} }}"
            ))
            .data(caller.clone());
            let schema = schema.clone();
            async move { serde_json::to_value(schema.execute(request).await).unwrap() }
        };
        for _ in 0..300 {
            let caller = pick(&mut rng);
            let request = &requests[rng.random_range(0..requests.len())];
            let expected = caller.tenant == request.tenant
                && (access == Access::Tenant || caller.user == request.owner);
            assert_eq!(access.allows(&caller, request), expected);
            let answer = ask(&request.id, &caller).await;
            if expected {
                assert_eq!(answer["data"]["request"]["id"], request.id.as_str());
            } else {
                assert_eq!(
                    answer,
                    ask("unknown", &caller).await,
                    "{caller:?} {request:?}"
                );
            }
            // Listing shows exactly the visible ones.
            let listed = schema
                .execute(
                    streamer::async_graphql::Request::new(
                        "{ requests(first: 100) { edges { node { id } } } }",
                    )
                    .data(caller.clone()),
                )
                .await;
            let listed = serde_json::to_value(listed).unwrap();
            let ids: Vec<&str> = listed["data"]["requests"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap())
                .collect();
            let visible: Vec<&str> = requests
                .iter()
                .filter(|r| access.allows(&caller, r))
                .map(|r| r.id.as_str())
                .collect();
            assert_eq!(ids, visible);
        }
    }
}

/// A stored subscription is pushed only what its subscriber may see, whatever was checked
/// when it was stored: owner-scoped, not another owner's request of its own tenant.
#[tokio::test]
async fn a_push_goes_only_where_the_access_rule_lets_it() {
    let store = Arc::new(MemoryStore::new());
    let sender = MemorySender::new();
    let now = chrono::Utc::now();
    let state = Arc::new(
        AsyncRequest::new("r", "flakyImport", json!({ "failTimes": 0 }), now)
            .owned_by(&Principal::new("acme", "bob")),
    );
    let following = |user: &str| Subscription {
        key: SubscriptionKey {
            request_id: "r".into(),
            connection_id: user.into(),
            operation_id: "1".into(),
        },
        query: "subscription { requestProgress(id: \"r\") { status } }".into(),
        operation_name: None,
        variables: None,
        last_version: 0,
        created_at: now,
        expires_at: (now + chrono::Duration::hours(1)).timestamp(),
        pushing_until: None,
        principal: Some(Principal::new("acme", user)),
    };
    for (access, reached) in [
        (Access::Tenant, vec!["ann", "bob"]),
        (Access::Owner, vec!["bob"]),
    ] {
        let services = streamer::schema::Services {
            store: store.clone(),
            clock: Arc::new(SystemClock),
            ids: Arc::new(streamer::core::RandomIds),
            limits: Limits::default(),
            access,
        };
        let schema = streamer::schema::build_for_stored_documents(
            support::handlers::app().handlers(),
            services,
        )
        .unwrap();
        let pusher = streamer::schema::Pusher {
            schema: &schema,
            store: &*store,
            sender: &sender,
            limits: &Limits::default(),
            clock: &SystemClock,
            access,
        };
        for user in ["ann", "bob"] {
            pusher.deliver(&following(user), &state).await.unwrap();
        }
        let sent: Vec<String> = sender
            .take()
            .into_iter()
            .map(|(connection, _)| connection)
            .collect();
        assert_eq!(sent, reached, "{access:?}");
    }
}
