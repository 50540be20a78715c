//! Request templates, on both stores: save, list, update (version 2), enqueue with overrides
//! (the merged input reaches the handler), a template and a merged input that do not fit the
//! action's input type are refused, and another tenant's templates do not exist for a caller.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use streamer::core::SystemClock;
use streamer::gateway::JwtAuthenticator;
use support::{On, TestServer};

const SECRET: &[u8] = b"a-templates-secret";

fn token(tenant: &str) -> String {
    support::jwt(SECRET, tenant, "ann", 600)
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .or_else(|| answer[0]["extensions"]["code"].as_str())
        .unwrap_or_default()
}

const SAVE: &str = "mutation($name: String!, $payload: JSON!) { saveTemplate(name: $name, action: \"generateReport\", payload: $payload, description: \"monthly\") { name action payload description version updatedAt } }";

async fn templates_are_saved_enqueued_and_kept_per_tenant(on: On) {
    let server = TestServer::start_tuned(on, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
    })
    .await;
    let mut ann = server.client().await;
    ann.init_as(&token("acme")).await;

    // Saved without the required `to`: left to the overrides.
    let first = ann
        .first_payload(
            "s1",
            SAVE,
            json!({ "name": "monthly", "payload": { "from": "2026-01-01", "rows": 5 } }),
        )
        .await;
    let saved = &first["data"]["saveTemplate"];
    assert_eq!(saved["version"], 1, "{first}");
    assert_eq!(saved["action"], "generateReport");
    assert_eq!(saved["payload"], json!({ "from": "2026-01-01", "rows": 5 }));
    let second = ann.first_payload(
        "s2",
        SAVE,
        json!({ "name": "monthly", "payload": { "from": "2026-02-01", "rows": 7, "stepDelayMs": 0 } }),
    )
    .await;
    assert_eq!(second["data"]["saveTemplate"]["version"], 2, "{second}");
    ann.first_payload(
        "s3",
        SAVE,
        json!({ "name": "another", "payload": { "from": "2026-03-01" } }),
    )
    .await;
    let listed = ann
        .first_payload("l", "{ templates { name version } }", json!({}))
        .await;
    assert_eq!(
        listed["data"]["templates"],
        json!([{ "name": "another", "version": 1 }, { "name": "monthly", "version": 2 }])
    );

    // Unknown and mistyped fields are refused; so is an unknown action.
    for (n, payload) in [
        json!({ "from": "2026-01-01", "colour": "red" }),
        json!({ "from": 20260101 }),
        json!("not an object"),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = ann
            .first_payload(
                &format!("bad{n}"),
                SAVE,
                json!({ "name": "bad", "payload": payload }),
            )
            .await;
        assert_eq!(code(&refused), "BAD_USER_INPUT", "{payload}: {refused}");
    }
    let unknown = ann
        .first_payload(
            "u",
            "mutation { saveTemplate(name: \"x\", action: \"nope\", payload: {}) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&unknown), "UNKNOWN_ACTION", "{unknown}");
    let missing = ann
        .first_payload("m", "{ template(name: \"bad\") { name } }", json!({}))
        .await;
    assert_eq!(
        missing["data"]["template"],
        Value::Null,
        "nothing was stored"
    );

    // Enqueued with the missing field, and a value replaced: the merged input runs.
    let enqueue = "mutation($overrides: JSON) { enqueueTemplate(name: \"monthly\", overrides: $overrides) { id template } }";
    let started = ann
        .first_payload(
            "e1",
            enqueue,
            json!({ "overrides": { "to": "2026-02-28", "rows": 9 } }),
        )
        .await;
    let request = &started["data"]["enqueueTemplate"];
    assert_eq!(request["template"], "monthly@2", "{started}");
    let id = request["id"].as_str().unwrap().to_owned();
    ann.wait_for_status(&id, "COMPLETED").await;
    let done = ann
        .execute(
            "r",
            "query($id: ID!) { request(id: $id) { template output { ... on Report { url rows } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(done["request"]["template"], "monthly@2");
    assert_eq!(
        done["request"]["output"]["rows"], 9,
        "the override reached the handler"
    );
    assert!(
        done["request"]["output"]["url"]
            .as_str()
            .unwrap()
            .ends_with("2026-02-01-2026-02-28.csv"),
        "{done}"
    );
    // A merged input that does not fit (the required `to` still missing) is refused.
    let unfit = ann
        .first_payload("e2", enqueue, json!({ "overrides": { "rows": 3 } }))
        .await;
    assert_eq!(code(&unfit), "BAD_USER_INPUT", "{unfit}");
    let wrong = ann
        .first_payload(
            "e3",
            enqueue,
            json!({ "overrides": { "to": "2026-02-28", "rows": "many" } }),
        )
        .await;
    assert_eq!(code(&wrong), "BAD_USER_INPUT", "{wrong}");

    // Another tenant sees none of them, and cannot start or delete them.
    let mut bob = server.client().await;
    bob.init_as(&token("globex")).await;
    let theirs = bob
        .first_payload(
            "l",
            "{ templates { name } template(name: \"monthly\") { name } }",
            json!({}),
        )
        .await;
    assert_eq!(theirs["data"]["templates"], json!([]), "{theirs}");
    assert_eq!(theirs["data"]["template"], Value::Null);
    let foreign = bob
        .first_payload("e", enqueue, json!({ "overrides": { "to": "2026-02-28" } }))
        .await;
    assert_eq!(code(&foreign), "NOT_FOUND", "{foreign}");
    let not_theirs = bob
        .first_payload(
            "d",
            "mutation { deleteTemplate(name: \"monthly\") }",
            json!({}),
        )
        .await;
    assert_eq!(not_theirs["data"]["deleteTemplate"], false);

    let deleted = ann
        .first_payload(
            "d",
            "mutation { deleteTemplate(name: \"monthly\") }",
            json!({}),
        )
        .await;
    assert_eq!(deleted["data"]["deleteTemplate"], true);
    let gone = ann
        .first_payload(
            "e4",
            enqueue,
            json!({ "overrides": { "to": "2026-02-28" } }),
        )
        .await;
    assert_eq!(code(&gone), "NOT_FOUND", "{gone}");
}

on_both_stores!(templates_are_saved_enqueued_and_kept_per_tenant);
