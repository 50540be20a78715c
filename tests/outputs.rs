//! Outputs a request cannot keep: a handler whose output is over the result limit fails
//! its request for good with `RESULT_TOO_LARGE` after one attempt, instead of failing every
//! write of its outcome and running again in full. On both stores.

mod support;

use streamer::async_graphql::{InputObject, SimpleObject};
use streamer::{Handler, JobContext, JobError};
use support::{On, TestServer};

#[derive(Debug, InputObject)]
struct BlobInput {
    kib: i32,
}

#[derive(Debug, SimpleObject, serde::Serialize)]
struct Blob {
    text: String,
}

/// Returns `kib` KiB of text.
#[derive(Debug)]
struct Bloat;

impl Handler for Bloat {
    const ACTION: &'static str = "bloat";
    type Input = BlobInput;
    type Output = Blob;

    async fn process(&self, input: BlobInput, _job: JobContext) -> Result<Blob, JobError> {
        let kib = usize::try_from(input.kib.clamp(0, 1024)).unwrap_or_default();
        Ok(Blob {
            text: "x".repeat(kib * 1024),
        })
    }
}

const FOLLOW: &str = "subscription($id: ID!) { requestProgress(id: $id) { status attempts error { code retryable } output { __typename } } }";

async fn an_output_over_the_limit_fails_result_too_large(on: On) {
    let server =
        TestServer::start_app(streamer::App::new().register(Bloat), on, |stack| stack).await;
    let mut client = server.client().await;
    client.init().await;
    for (kib, status) in [(8, "COMPLETED"), (300, "FAILED")] {
        let answer = client
            .execute(
                &format!("m{kib}"),
                "mutation($kib: Int!) { bloat(input: { kib: $kib }) { id } }",
                serde_json::json!({ "kib": kib }),
            )
            .await;
        let id = answer["bloat"]["id"].as_str().unwrap().to_owned();
        client
            .send(serde_json::json!({ "id": format!("s{kib}"), "type": "subscribe", "payload": { "query": FOLLOW, "variables": { "id": id } } }))
            .await;
        let frames = client.until_done(&format!("s{kib}")).await;
        let states = support::states(&frames);
        let last = states.last().unwrap();
        assert_eq!(last["status"], status, "{kib} KiB: {states:?}");
        assert_eq!(last["attempts"], 1, "one attempt");
        if status == "FAILED" {
            assert_eq!(last["error"]["code"], "RESULT_TOO_LARGE");
            assert_eq!(last["error"]["retryable"], false);
        }
    }
}

on_both_stores!(an_output_over_the_limit_fails_result_too_large);
