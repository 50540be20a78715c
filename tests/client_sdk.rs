//! The TypeScript client packages (`clients/`: `@streamer/client`, `@streamer/react`) under
//! Node 20 against the local stack: `request` on both stores, reconnection after the server
//! drops the socket (through the Management API, as API Gateway does), the generated types
//! under `tsc`, `useRequest` under jsdom with the real React, and the packed package in an
//! empty project. The test command builds the packages first (`scripts/setup`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use streamer::core::store::RequestFilter;
use streamer::core::{DEV_TENANT, Phase};
use support::{On, TestServer};

fn clients() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs `program` with `args` in `clients/test`, and returns its output.
async fn run(program: &str, args: &[&str]) -> Output {
    let dir = clients().join("test");
    assert!(
        clients().join("typescript/dist/index.js").is_file()
            && clients().join("react/dist/index.js").is_file(),
        "the client packages are not built: run scripts/setup (the test command does)"
    );
    tokio::process::Command::new(program)
        .args(args)
        .current_dir(&dir)
        .output()
        .await
        .unwrap_or_else(|error| panic!("{program} runs: {error}"))
}

/// The JSON summary a script printed last, once it has succeeded.
fn summary(script: &str, output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|_| panic!("{script} printed no summary:\n{stdout}\n{stderr}"))
}

async fn request_resolves_retries_fails_is_cancelled_and_refuses_bad_input(on: On) {
    let server = TestServer::start_on(on).await;
    let output = run("node", &["request.mjs", &server.ws_url()]).await;
    let summary = summary("request.mjs", &output);
    assert_eq!(summary["ok"], true);
    let report = summary["report"].as_array().unwrap();
    assert_eq!(report.last().unwrap()[0], "COMPLETED", "{summary}");
    assert_eq!(summary["failed"]["code"], "BAD_INPUT");
    assert_eq!(summary["cancelled"], "CANCELLED");
    assert_eq!(summary["refused"], "BAD_USER_INPUT");
    let flaky = summary["flaky"].as_array().unwrap();
    assert!(
        flaky.iter().filter(|s| *s == "RETRYING").count() >= 2,
        "{summary}"
    );
}

/// Waits until the one request on the server has reached `version`.
async fn request_reaches(server: &TestServer, version: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let page = server
                .store
                .list_requests(&RequestFilter {
                    tenant: Some(DEV_TENANT.to_owned()),
                    owner: None,
                    status: None,
                    limit: 10,
                    after: None,
                    parent: None,
                    newest_first: false,
                })
                .await
                .unwrap();
            if let Some(listed) = page.items.first() {
                let current = server.store.get_request(&listed.id).await.unwrap();
                if current.is_some_and(|r| r.version >= version) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the request reaches version {version}"));
}

/// Waits until connection `id` has been acknowledged.
async fn acknowledged(server: &TestServer, id: &str) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let connection = server.store.get_connection(id).await.unwrap();
            if connection.is_some_and(|c| c.phase == Phase::Acknowledged) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id} is acknowledged"));
}

async fn a_socket_dropped_twice_mid_job_loses_no_state(on: On) {
    let server = TestServer::start_on(on).await;
    let url = server.ws_url();
    let client = tokio::spawn(async move { run("node", &["reconnect.mjs", &url]).await });
    // The server ends the client's connection twice (connection ids are sequential in tests),
    // through the Management API with the AWS SDK's own client, as API Gateway would.
    let management = server.management_client();
    for (connection, version) in [("conn-1", 3), ("conn-2", 5)] {
        acknowledged(&server, connection).await;
        request_reaches(&server, version).await;
        management
            .delete_connection()
            .connection_id(connection)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{connection} deleted: {error:?}"));
    }
    let output = client.await.unwrap();
    let summary = summary("reconnect.mjs", &output);
    assert_eq!(summary["connections"], 3, "{summary}");
    let versions: Vec<u64> = summary["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "{versions:?}"
    );
    assert!(versions.len() >= 6, "{versions:?}");
}

on_both_stores!(
    request_resolves_retries_fails_is_cancelled_and_refuses_bad_input,
    a_socket_dropped_twice_mid_job_loses_no_state,
);

#[tokio::test]
async fn generated_types_accept_correct_calls_and_refuse_wrong_ones() {
    let server = TestServer::start().await;
    let generated = clients().join("test/generated");
    std::fs::create_dir_all(&generated).unwrap();
    let out = generated.join("actions.ts");
    let http = format!("http://{}/graphql", server.addr);
    let codegen = run(
        "node",
        &[
            "../typescript/dist/codegen.js",
            "--url",
            &http,
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        codegen.status.success(),
        "{}",
        String::from_utf8_lossy(&codegen.stderr)
    );
    let module = std::fs::read_to_string(&out).unwrap();
    assert!(
        module.contains("generateReport: { input: GenerateReportInput; output: Report };"),
        "{module}"
    );
    assert!(module.contains("export interface Report {"), "{module}");
    // The same from the SDL (the schema snapshot without its header).
    let snapshot = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/schema__sdl.snap"),
    )
    .unwrap();
    let sdl = snapshot.splitn(3, "---\n").nth(2).unwrap();
    let schema_file = generated.join("schema.graphql");
    std::fs::write(&schema_file, sdl).unwrap();
    let from_sdl = run(
        "node",
        &[
            "../typescript/dist/codegen.js",
            "--schema",
            schema_file.to_str().unwrap(),
        ],
    )
    .await;
    let printed = String::from_utf8_lossy(&from_sdl.stdout);
    assert!(
        from_sdl.status.success(),
        "{}",
        String::from_utf8_lossy(&from_sdl.stderr)
    );
    assert_eq!(
        printed.lines().skip(1).collect::<Vec<_>>(),
        module.lines().skip(1).collect::<Vec<_>>(),
        "introspection and SDL give the same types"
    );
    // tsc fails on a wrong call that compiles (its `@ts-expect-error` is unused) as on a
    // correct one that does not.
    let tsc = run(
        "node",
        &["../node_modules/typescript/bin/tsc", "-p", "tsconfig.json"],
    )
    .await;
    assert!(
        tsc.status.success(),
        "tsc:\n{}{}",
        String::from_utf8_lossy(&tsc.stdout),
        String::from_utf8_lossy(&tsc.stderr)
    );
}

#[tokio::test]
async fn use_request_renders_the_progress_then_the_output() {
    let server = TestServer::start().await;
    let output = run("node", &["react.mjs", &server.ws_url()]).await;
    let summary = summary("react.mjs", &output);
    assert_eq!(summary["ok"], true);
}

#[tokio::test]
async fn the_packed_package_runs_the_readme_snippet_in_an_empty_project() {
    let server = TestServer::start().await;
    let output = run("bash", &["pack.sh", &server.ws_url()]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pack.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("% - "), "progress lines: {stdout}");
    assert!(stdout.contains("Report URL: https://"), "{stdout}");
}
