//! A terminal client: enqueues `generateReport` and shows its progress as a bar with each
//! step's message until the Report arrives; with `--batch N`, a batch of N reports as one bar
//! with its children's counts.
//!
//! Run the app first (`cargo run --release --example report`), then
//! `cargo run --example client -- --url ws://127.0.0.1:4000/graphql` (or `-- --batch 50`).
//! For a deployed stack, pass its `wss://` URL.

use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Debug, Parser)]
#[command(about = "Runs generateReport and follows its progress")]
struct Args {
    /// The graphql-transport-ws endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:4000/graphql")]
    url: String,
    /// First day of the report.
    #[arg(long, default_value = "2026-01-01")]
    from: String,
    /// Last day of the report.
    #[arg(long, default_value = "2026-01-31")]
    to: String,
    /// Rows to aggregate.
    #[arg(long, default_value_t = 1000)]
    rows: i32,
    /// Milliseconds per step.
    #[arg(long, default_value_t = 300)]
    step_delay_ms: i32,
    /// Enqueue a batch of this many reports instead of one.
    #[arg(long)]
    batch: Option<usize>,
}

const ENQUEUE: &str =
    "mutation($input: GenerateReportInput!) { generateReport(input: $input) { id } }";
const ENQUEUE_BATCH: &str =
    "mutation($inputs: [GenerateReportInput!]!) { generateReportBatch(inputs: $inputs) { id } }";
const FOLLOW: &str = "subscription($id: ID!) { requestProgress(id: $id) { status progress message version error { code message } output { ... on Report { url rows sizeBytes } } batch { total queued running completed failed cancelled } } }";

/// A batch's counts, as the bar shows them.
fn counts(batch: &Value) -> String {
    format!(
        "queued {} · running {} · completed {} · failed {} · cancelled {}",
        batch["queued"], batch["running"], batch["completed"], batch["failed"], batch["cancelled"]
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut request = args.url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let send = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, frame: Value| {
        ws.send(Message::Text(frame.to_string().into())).await
    };
    send(&mut ws, json!({ "type": "connection_init" })).await?;
    let input = json!({ "from": args.from, "to": args.to, "rows": args.rows, "stepDelayMs": args.step_delay_ms });
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {percent:>3}% {msg}")?
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));

    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame? else {
            continue;
        };
        let message: Value = serde_json::from_str(&text)?;
        match (message["type"].as_str(), message["id"].as_str()) {
            (Some("connection_ack"), _) => {
                let payload = match args.batch {
                    Some(items) => {
                        json!({ "query": ENQUEUE_BATCH, "variables": { "inputs": vec![input.clone(); items] } })
                    }
                    None => json!({ "query": ENQUEUE, "variables": { "input": input } }),
                };
                send(
                    &mut ws,
                    json!({ "id": "enqueue", "type": "subscribe", "payload": payload }),
                )
                .await?;
            }
            (Some("next"), Some("enqueue")) => {
                let data = &message["payload"]["data"];
                let id = if args.batch.is_some() {
                    &data["generateReportBatch"]["id"]
                } else {
                    &data["generateReport"]["id"]
                };
                if id.is_null() {
                    return Err(format!("enqueue failed: {}", message["payload"]).into());
                }
                bar.set_message(format!("queued as {id}"));
                send(&mut ws, json!({ "id": "follow", "type": "subscribe", "payload": { "query": FOLLOW, "variables": { "id": id } } })).await?;
            }
            (Some("next"), Some("follow")) => {
                let state = &message["payload"]["data"]["requestProgress"];
                bar.set_position((state["progress"].as_f64().unwrap_or(0.0) * 1000.0) as u64);
                let text = state["message"].as_str().unwrap_or_default();
                let batch = &state["batch"];
                let detail = if batch.is_null() {
                    String::new()
                } else {
                    format!(" · {}", counts(batch))
                };
                bar.set_message(format!(
                    "{} {text}{detail}",
                    state["status"].as_str().unwrap_or_default()
                ));
                match state["status"].as_str() {
                    Some("COMPLETED") if !batch.is_null() => {
                        let done = format!("done: {} reports · {}", batch["total"], counts(batch));
                        if bar.is_hidden() {
                            println!("{done}");
                        }
                        bar.finish_with_message(done);
                    }
                    Some("COMPLETED") => {
                        let report = &state["output"];
                        let done = format!(
                            "done: {} ({} rows, {} bytes)",
                            report["url"], report["rows"], report["sizeBytes"]
                        );
                        if bar.is_hidden() {
                            println!("{done}");
                        }
                        bar.finish_with_message(done);
                    }
                    Some("FAILED" | "CANCELLED") => {
                        bar.abandon_with_message(format!("{}: {}", state["status"], state["error"]))
                    }
                    _ => {}
                }
            }
            (Some("complete"), Some("follow")) => break,
            (Some("error"), id) => {
                return Err(format!("operation {id:?} failed: {}", message["payload"]).into());
            }
            (Some("ping"), _) => send(&mut ws, json!({ "type": "pong" })).await?,
            _ => {}
        }
    }
    ws.close(None).await.ok();
    Ok(())
}
