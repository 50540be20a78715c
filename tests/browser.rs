//! GraphiQL and the run dashboard in a real browser (headless Chromium, driven by
//! playwright-core in `tests/js/browser.mjs`), on both stores: GraphiQL runs `{ actions }` and
//! a subscription to COMPLETED; the dashboard lists a run, shows its progress rising live, its
//! timeline and its output, cancels another, re-drives a failed one from the dead letters,
//! enqueues one from a form built from the input type, and shows another tenant's runs to no
//! one. Every request beyond the server is blocked and fails the test. Screenshots go to
//! `target/browser-screenshots/{store}/`.
//!
//! And every page and asset, fetched as `curl` would: nothing in them is loaded from
//! anywhere but the server.

mod support;

use std::sync::Arc;

use streamer::core::SystemClock;
use streamer::gateway::JwtAuthenticator;
use support::{On, TestServer};

const SECRET: &[u8] = b"a-browser-secret";

fn token(tenant: &str) -> String {
    support::jwt(SECRET, tenant, "viewer", 600)
}

async fn graphiql_and_the_dashboard_in_chromium(on: On) {
    let server = TestServer::start_tuned(on, |stack| {
        stack
            .with_clock(Arc::new(SystemClock))
            .with_authenticator(Arc::new(JwtAuthenticator::hs256(SECRET)))
    })
    .await;
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser-screenshots")
        .join(format!("{on:?}").to_lowercase());
    let summary = support::run_node(
        "browser.mjs",
        &server,
        &[token("acme"), token("globex"), shots.display().to_string()],
    )
    .await;
    assert_eq!(summary["graphiql"], "ok", "{summary}");
    assert_eq!(summary["actions"], "ok", "{summary}");
    assert_eq!(summary["isolation"], "ok", "{summary}");
    for shot in [
        "graphiql-query",
        "graphiql-subscription",
        "dashboard-runs",
        "dashboard-run",
        "dashboard-dead-letters",
        "dashboard-new",
        "dashboard-other-tenant",
    ] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot}");
    }
}

on_both_stores!(graphiql_and_the_dashboard_in_chromium);

/// The URLs a page or asset loads: `src` and `href` attributes, CSS `url(…)`, and script
/// imports.
fn loaded_urls(text: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for marker in ["src=\"", "href=\"", "url(", "import(\"", "from \""] {
        let mut rest = text;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let end = rest.find(['"', ')', '\'']).unwrap_or(rest.len()).min(200);
            urls.push(rest[..end].trim_matches(['\'', ' ']).to_owned());
        }
    }
    urls
}

#[tokio::test]
async fn every_page_and_asset_loads_from_the_server_alone() {
    let server = TestServer::start().await;
    let mut checked = 0;
    for path in streamer::gateway::pages::paths() {
        let (status, body) = server.http("GET", path, "").await;
        assert_eq!(status, 200, "{path}");
        for url in loaded_urls(&body) {
            let elsewhere = url.starts_with("http:")
                || url.starts_with("https:")
                || url.starts_with("//")
                || url.starts_with("ws:")
                || url.starts_with("wss:");
            assert!(!elsewhere, "{path} loads {url}");
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "the pages' own references were found: {checked}"
    );
    // The pages name the server's own assets.
    let (_, html) = server.http("GET", "/", "").await;
    assert!(html.contains("/assets/graphiql/graphiql.min.js"), "{html}");
    let (status, _) = server.http("GET", "/assets/nothing.js", "").await;
    assert_eq!(status, 404);
}
