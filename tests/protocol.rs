//! The protocol over a real socket on the local server: transcripts of every exchange the
//! graphql-transport-ws protocol defines, snapshotted.

mod support;

use serde_json::{Value, json};
use support::{Client, On, PROGRESS, TestServer};

async fn init_ack_ping_pong(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client
        .send(json!({ "type": "ping", "payload": { "before": "ack" } }))
        .await;
    client.recv().await;
    client.init().await;
    client.send(json!({ "type": "pong" })).await;
    client
        .send(json!({ "type": "ping", "payload": { "n": 1 } }))
        .await;
    let pong = client.recv().await;
    assert_eq!(
        pong,
        json!({ "type": "pong", "payload": { "n": 1 } }),
        "a pong is not answered; the ping is"
    );
    insta::assert_json_snapshot!("init_ack_ping_pong", client.transcript);
}

async fn mutation_then_subscription_to_completed(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let request_id = client.generate_report("1", 60).await;
    // afterVersion 1 skips QUEUED, which the job may or may not have left when the
    // subscription arrives: the transcript is the same either way.
    let subscribe = json!({ "id": "2", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": request_id, "after": 1 } } });
    client.send(subscribe).await;
    let frames = client.until_done("2").await;

    let states = support::states(&frames);
    let versions: Vec<u64> = states
        .iter()
        .map(|s| s["version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing versions: {versions:?}"
    );
    let running_with_messages = states
        .iter()
        .filter(|s| s["status"] == "RUNNING" && s["message"].is_string())
        .count();
    assert!(
        running_with_messages >= 3,
        "at least three RUNNING states with messages"
    );
    let last = states.last().unwrap();
    assert_eq!(last["status"], "COMPLETED");
    assert_eq!(last["output"]["__typename"], "Report");
    assert_eq!(last["output"]["rows"], 10);
    assert_eq!(
        frames.last().unwrap(),
        &json!({ "id": "2", "type": "complete" })
    );
    insta::assert_json_snapshot!("mutation_then_subscription_to_completed", client.transcript);
}

async fn subscription_after_completion_gets_the_final_state_then_complete(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let request_id = client.generate_report("1", 0).await;
    client.wait_for_status(&request_id, "COMPLETED").await;
    client.clear();
    let subscribe = json!({ "id": "late", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": request_id } } });
    client.send(subscribe).await;
    let frames = client.until_done("late").await;
    assert_eq!(frames.len(), 2, "one next, then complete: {frames:?}");
    assert_eq!(
        frames[0]["payload"]["data"]["requestProgress"]["status"],
        "COMPLETED"
    );
    // How many progress reports were coalesced into one write depends on timing: the version
    // is checked here, not in the transcript.
    let version = frames[0]["payload"]["data"]["requestProgress"]["version"]
        .as_u64()
        .unwrap();
    assert!((5..=7).contains(&version), "{version}");
    insta::assert_json_snapshot!(
        "subscription_after_completion_gets_the_final_state_then_complete",
        client.transcript,
        { "[].server.payload.data.requestProgress.version" => "[version]" }
    );
}

async fn invalid_document_gets_an_error_and_no_complete(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let subscribe = json!({ "id": "bad", "type": "subscribe", "payload": { "query": "subscription { requestProgress(id: \"x\") { nope } }" } });
    client.send(subscribe).await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert!(
        error["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    // The socket stays open and the next frame is the pong, not a `complete`.
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await, json!({ "type": "pong" }));
    // A query with a syntax error is an `error` too.
    client
        .send(json!({ "id": "syntax", "type": "subscribe", "payload": { "query": "{ actions" } }))
        .await;
    assert_eq!(client.recv().await["type"], "error");
    insta::assert_json_snapshot!(
        "invalid_document_gets_an_error_and_no_complete",
        client.transcript
    );
}

async fn subscribing_to_an_unknown_request_is_an_error(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    client.send(json!({ "id": "1", "type": "subscribe", "payload": { "query": PROGRESS, "variables": { "id": "nope" } } })).await;
    let error = client.recv().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["payload"][0]["extensions"]["code"], "NOT_FOUND");
}

async fn closed_by(server: &TestServer, frames: &[&str]) -> Vec<Value> {
    let mut client = server.client().await;
    for frame in frames {
        client.send_raw(frame).await;
    }
    loop {
        let frame = client.recv().await;
        if frame.get("close").is_some() {
            return client.transcript;
        }
    }
}

async fn close_codes(on: On) {
    let init = r#"{"type":"connection_init"}"#;
    let cases = [
        ("4400 not json", vec!["{not json"]),
        ("4400 unknown type", vec![r#"{"type":"hello"}"#]),
        (
            "4400 bad shape",
            vec![
                init,
                r#"{"type":"subscribe","id":"1","payload":{"query":7}}"#,
            ],
        ),
        (
            "4401 subscribe before ack",
            vec![r#"{"type":"subscribe","id":"1","payload":{"query":"{ actions }"}}"#],
        ),
        ("4429 second init", vec![init, init]),
    ];
    let server = TestServer::start_on(on).await;
    let mut transcripts = serde_json::Map::new();
    for (name, frames) in cases {
        let transcript = closed_by(&server, &frames).await;
        let code = name[..4].parse::<u16>().unwrap();
        assert_eq!(
            transcript.last().unwrap()["server"]["close"]["code"],
            code,
            "{name}: {transcript:?}"
        );
        transcripts.insert(name.to_owned(), Value::Array(transcript));
    }
    insta::assert_json_snapshot!("close_codes", transcripts);
}

async fn duplicate_active_subscription_id_closes_4409(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let request_id = client.generate_report("m", 2_000).await;
    client.wait_for_status(&request_id, "RUNNING").await;
    client.clear();
    let subscribe = json!({ "id": "same", "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status } }", "variables": { "id": request_id } } });
    client.send(subscribe.clone()).await;
    assert_eq!(client.recv().await["type"], "next");
    client.send(subscribe).await;
    assert_eq!(client.recv().await["close"]["code"], 4409);
    insta::assert_json_snapshot!(
        "duplicate_active_subscription_id_closes_4409",
        client.transcript
    );
}

async fn a_client_complete_is_not_echoed_and_stops_the_pushes(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let request_id = client.generate_report("m", 100).await;
    let subscribe = json!({ "id": "s", "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { status } }", "variables": { "id": request_id } } });
    client.send(subscribe).await;
    assert_eq!(client.recv().await["type"], "next");
    client.send(json!({ "id": "s", "type": "complete" })).await;
    // A connection's messages are handled in order: once the pong is back, so is the
    // complete. Before it, a push already on its way may still arrive.
    client.send(json!({ "type": "ping" })).await;
    loop {
        let frame = client.recv().await;
        if frame == json!({ "type": "pong" }) {
            break;
        }
        assert_eq!(
            (&frame["id"], &frame["type"]),
            (&json!("s"), &json!("next"))
        );
    }
    client.wait_for_status(&request_id, "COMPLETED").await;
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.recv().await, json!({ "type": "pong" }));
    // The job ran on to its end meanwhile: only poll answers and the pong, nothing for "s".
    let after_complete = client
        .transcript
        .iter()
        .skip_while(|f| f["server"]["type"] != "pong");
    assert!(after_complete.filter(|f| f["server"]["id"] == "s").count() == 0);
}

/// An id completed while its request runs on may be used again at once: the new
/// subscription hears only its own request, though the processor had pushed the old one's
/// states to that id (and knew its subscription) until the complete.
async fn an_id_used_again_after_its_complete_hears_only_its_new_request(on: On) {
    let server = TestServer::start_on(on).await;
    let mut client = server.client().await;
    client.init().await;
    let first = client.generate_report("m1", 150).await;
    let subscribe = |request_id: &str| json!({ "id": "s", "type": "subscribe", "payload": { "query": "subscription($id: ID!) { requestProgress(id: $id) { id status progress } }", "variables": { "id": request_id } } });
    client.send(subscribe(&first)).await;
    // Two progress reports pushed by the processor: it knows the subscription.
    let mut reports = 0;
    while reports < 2 {
        let frame = client.recv().await;
        assert_eq!(frame["type"], "next", "{frame}");
        if frame["payload"]["data"]["requestProgress"]["progress"].as_f64() > Some(0.0) {
            reports += 1;
        }
    }
    client.send(json!({ "id": "s", "type": "complete" })).await;
    client.send(json!({ "type": "ping" })).await;
    while client.recv().await != json!({ "type": "pong" }) {}
    let second = client.generate_report("m2", 150).await;
    client.clear();
    client.send(subscribe(&second)).await;
    let frames = client.until_done("s").await;
    let heard: Vec<&Value> = frames
        .iter()
        .filter(|frame| frame["type"] == "next")
        .map(|frame| &frame["payload"]["data"]["requestProgress"]["id"])
        .collect();
    assert!(heard.len() >= 2, "{frames:?}");
    assert!(
        heard.iter().all(|id| **id == json!(second)),
        "only {second} under \"s\": {heard:?}"
    );
    client.wait_for_status(&first, "COMPLETED").await;
}

async fn the_handshake_is_refused_without_the_subprotocol(on: On) {
    let server = TestServer::start_on(on).await;
    for offered in [None, Some("graphql-ws"), Some("GRAPHQL-TRANSPORT-WS")] {
        let error = Client::connect(&server.ws_url(), offered)
            .await
            .err()
            .expect("refused");
        let text = error.to_string();
        assert!(text.contains("400"), "{offered:?}: {text}");
    }
    // Offered among others, with spaces, it is chosen.
    let mut client = Client::connect(&server.ws_url(), Some("graphql-ws, graphql-transport-ws"))
        .await
        .expect("accepted");
    client.init().await;
}

on_both_stores!(
    init_ack_ping_pong,
    mutation_then_subscription_to_completed,
    subscription_after_completion_gets_the_final_state_then_complete,
    invalid_document_gets_an_error_and_no_complete,
    subscribing_to_an_unknown_request_is_an_error,
    close_codes,
    duplicate_active_subscription_id_closes_4409,
    a_client_complete_is_not_echoed_and_stops_the_pushes,
    an_id_used_again_after_its_complete_hears_only_its_new_request,
    the_handshake_is_refused_without_the_subprotocol,
);
