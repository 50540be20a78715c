//! A load generator for a running graphql-transport-ws server that serves the example app's
//! `generateReport` and `requestProgress` (the local stack, or the reference server in
//! `tests/js/reference-server.mjs`).
//!
//! - `jobs` (default): N connections, each running jobs one after another through the
//!   mutation-then-subscribe flow. Reports jobs/s, delivered states/s, the latency from a
//!   state's write (`updatedAt`) to its arrival (p50, p99, and by version: where in a job
//!   the slow states are), lost and duplicated states.
//! - `fanout`: one job followed by `--subscribers` subscriptions spread over the connections;
//!   reports, per change, the time until the last subscriber had it.
//! - `idle`: opens the connections, initialises them and holds them for `--hold-secs`.
//! - `batch`: one batch of `--batch-items` `generateReport` items, created over
//!   `POST /graphql` (a message of a thousand items is larger than one WebSocket frame) and
//!   followed over the socket from its first version; reports the time to create it, the time
//!   until it completed, its states (lost or duplicated ones), and the AWS calls per child.
//!
//! With `--server-pid` it also reports the server's CPU time (per job) and RSS, read from
//! `/proc`. Against the local stack it also reports the AWS calls the server made per job, by
//! operation (`awsCallsPerJob`, from the server's `GET /stats`: on DynamoDB Local, every
//! DynamoDB, Streams and Management API request; the sweeper's, a fixed cost per second, apart
//! in `periodicCallsPerSec`). Prints a human summary on stderr and one
//! JSON line on stdout.
//!
//! `cargo run --release --example load -- --url ws://127.0.0.1:4000/graphql --connections 100`

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Failure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Jobs,
    Fanout,
    Idle,
    Batch,
}

#[derive(Debug, Parser)]
#[command(about = "Load for a graphql-transport-ws server running the example app")]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:4000/graphql")]
    url: String,
    #[arg(long, value_enum, default_value = "jobs")]
    mode: Mode,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Jobs each connection runs, one after another (jobs mode).
    #[arg(long, default_value_t = 5)]
    jobs: usize,
    /// `stepDelayMs` of each job (four steps).
    #[arg(long, default_value_t = 20)]
    step_delay_ms: u64,
    /// Subscriptions following the one job, over all connections (fanout mode).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Items of the batch (batch mode).
    #[arg(long, default_value_t = 1000)]
    batch_items: usize,
    /// How long to hold the connections (idle mode).
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
    /// The server's process id, for its CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label for the JSON line.
    #[arg(long, default_value = "")]
    label: String,
}

const ENQUEUE: &str =
    "mutation($input: GenerateReportInput!) { generateReport(input: $input) { id } }";
const FOLLOW: &str =
    "subscription($id: ID!) { requestProgress(id: $id) { status version updatedAt } }";

/// Each connection's read buffer (a larger frame still arrives, in several reads).
const READ_BUFFER: usize = 4 * 1024;

async fn connect(url: &str) -> Result<Socket, Failure> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // tungstenite zero-fills its whole read buffer before every read: at the default 128 KiB
    // that memset was a third of this generator's CPU, time the servers under test then
    // wait for. Protocol frames are small.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
    send(&mut socket, json!({ "type": "connection_init" })).await?;
    match recv(&mut socket).await?["type"].as_str() {
        Some("connection_ack") => Ok(socket),
        other => Err(format!("expected connection_ack, got {other:?}").into()),
    }
}

async fn send(socket: &mut Socket, frame: Value) -> Result<(), Failure> {
    socket.send(Message::text(frame.to_string())).await?;
    Ok(())
}

/// The next protocol message; pings are answered on the way.
async fn recv(socket: &mut Socket) -> Result<Value, Failure> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .map_err(|_| "no frame within 60 s")?
            .ok_or("the server closed the connection")??;
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(&text)?;
        if frame["type"] == "ping" {
            send(socket, json!({ "type": "pong" })).await?;
            continue;
        }
        return Ok(frame);
    }
}

async fn enqueue(socket: &mut Socket, op: &str, step_delay_ms: u64) -> Result<String, Failure> {
    let input = json!({ "from": "2026-01-01", "to": "2026-01-31", "rows": 10, "stepDelayMs": step_delay_ms });
    send(socket, json!({ "id": op, "type": "subscribe", "payload": { "query": ENQUEUE, "variables": { "input": input } } })).await?;
    let mut id = None;
    loop {
        let frame = recv(socket).await?;
        match (frame["id"].as_str(), frame["type"].as_str()) {
            (Some(o), Some("next")) if o == op => {
                id = frame["payload"]["data"]["generateReport"]["id"]
                    .as_str()
                    .map(str::to_owned);
            }
            (Some(o), Some("complete")) if o == op => break,
            (Some(o), Some("error")) if o == op => {
                return Err(format!("enqueue failed: {frame}").into());
            }
            _ => {}
        }
    }
    id.ok_or_else(|| "no request id".into())
}

/// What one subscriber saw of one request.
#[derive(Debug, Default)]
struct Followed {
    /// Per state: version and milliseconds from its write to its arrival.
    states: Vec<(u64, f64)>,
    terminal: usize,
}

fn latency_ms(state: &Value) -> f64 {
    let written = state["updatedAt"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    written.map_or(f64::NAN, |written| {
        (Utc::now() - written)
            .num_microseconds()
            .unwrap_or_default() as f64
            / 1000.0
    })
}

/// Subscribes `ops` (operation id → request id) and reads until each completes.
async fn follow(
    socket: &mut Socket,
    ops: &HashMap<String, String>,
) -> Result<HashMap<String, Followed>, Failure> {
    for (op, id) in ops {
        send(socket, json!({ "id": op, "type": "subscribe", "payload": { "query": FOLLOW, "variables": { "id": id } } })).await?;
    }
    let mut followed: HashMap<String, Followed> = HashMap::new();
    let mut open = ops.len();
    while open > 0 {
        let frame = recv(socket).await?;
        let Some(op) = frame["id"].as_str().filter(|op| ops.contains_key(*op)) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("next") => {
                let state = &frame["payload"]["data"]["requestProgress"];
                let entry = followed.entry(op.to_owned()).or_default();
                entry.states.push((
                    state["version"].as_u64().unwrap_or_default(),
                    latency_ms(state),
                ));
                if matches!(
                    state["status"].as_str(),
                    Some("COMPLETED" | "FAILED" | "CANCELLED")
                ) {
                    entry.terminal += 1;
                }
            }
            Some("complete") => open -= 1,
            _ => return Err(format!("unexpected frame {frame}").into()),
        }
    }
    Ok(followed)
}

/// Versions missing between the first and the last state seen, and versions seen twice or
/// out of order.
fn gaps_and_duplicates(states: &[(u64, f64)]) -> (u64, u64) {
    let (mut lost, mut duplicated) = (0, 0);
    for pair in states.windows(2) {
        let (before, after) = (pair[0].0, pair[1].0);
        if after <= before {
            duplicated += 1;
        } else {
            lost += after - before - 1;
        }
    }
    (lost, duplicated)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// CPU time (user + system) of a process, from `/proc/PID/stat`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident and peak resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

async fn run_jobs(args: &Args) -> Result<Value, Failure> {
    let mut tasks = tokio::task::JoinSet::new();
    // Jobs start once every connection is open and acknowledged.
    let opened = Arc::new(tokio::sync::Barrier::new(args.connections));
    for c in 0..args.connections {
        let (url, jobs, delay) = (args.url.clone(), args.jobs, args.step_delay_ms);
        let opened = Arc::clone(&opened);
        tasks.spawn(async move {
            let socket = connect(&url).await;
            opened.wait().await;
            let mut socket = socket?;
            let mut all = Vec::new();
            for j in 0..jobs {
                let id = enqueue(&mut socket, &format!("m{c}-{j}"), delay).await?;
                let ops = HashMap::from([(format!("s{c}-{j}"), id)]);
                all.extend(follow(&mut socket, &ops).await?.into_values());
            }
            let _ = socket.close(None).await;
            Ok::<_, Failure>(all)
        });
    }
    let mut followed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        followed.extend(done??);
    }
    let jobs = followed.len();
    let states: usize = followed.iter().map(|f| f.states.len()).sum();
    let (mut lost, mut duplicated, mut unfinished) = (0, 0, 0);
    let mut latencies: Vec<f64> = Vec::new();
    // By version: where in a job the slow states are.
    let mut by_version: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for f in &followed {
        let (l, d) = gaps_and_duplicates(&f.states);
        lost += l;
        duplicated += d;
        unfinished += usize::from(f.terminal != 1);
        // The first state is the snapshot on subscribe: written before the subscription.
        for (version, ms) in f.states.iter().skip(1) {
            latencies.push(*ms);
            by_version.entry(*version).or_default().push(*ms);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let by_version: serde_json::Map<String, Value> = by_version
        .into_iter()
        .map(|(version, mut ms)| {
            ms.sort_by(f64::total_cmp);
            let summary = json!({ "count": ms.len(), "p50": percentile(&ms, 50.0), "p99": percentile(&ms, 99.0) });
            (version.to_string(), summary)
        })
        .collect();
    Ok(json!({
        "jobs": jobs,
        "states": states,
        "lost": lost,
        "duplicated": duplicated,
        "withoutOneTerminalState": unfinished,
        "latencyMs": { "p50": percentile(&latencies, 50.0), "p99": percentile(&latencies, 99.0), "max": latencies.last() },
        "latencyMsByVersion": by_version,
    }))
}

async fn run_fanout(args: &Args) -> Result<Value, Failure> {
    let mut owner = connect(&args.url).await?;
    // Every subscriber in before the job starts: its first step waits a second.
    let id = enqueue(&mut owner, "m", 1_000.max(args.step_delay_ms)).await?;
    let per_connection = args.subscribers.div_ceil(args.connections.max(1));
    let mut sockets = Vec::new();
    for _ in 0..args.connections {
        sockets.push(connect(&args.url).await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut remaining = args.subscribers;
    for (c, mut socket) in sockets.into_iter().enumerate() {
        let n = per_connection.min(remaining);
        remaining -= n;
        let ops: HashMap<String, String> =
            (0..n).map(|s| (format!("s{c}-{s}"), id.clone())).collect();
        tasks.spawn(async move { follow(&mut socket, &ops).await });
    }
    let mut by_version: HashMap<u64, Vec<f64>> = HashMap::new();
    let (mut lost, mut duplicated, mut subscribers) = (0, 0, 0);
    while let Some(done) = tasks.join_next().await {
        for f in done??.into_values() {
            subscribers += 1;
            let (l, d) = gaps_and_duplicates(&f.states);
            lost += l;
            duplicated += d;
            for (version, ms) in f.states.iter().skip(1) {
                by_version.entry(*version).or_default().push(*ms);
            }
        }
    }
    let mut versions: Vec<_> = by_version.into_iter().collect();
    versions.sort_by_key(|(v, _)| *v);
    let last_arrivals: Vec<Value> = versions
        .iter()
        .map(|(v, ms)| {
            let worst = ms.iter().copied().fold(0.0, f64::max);
            json!({ "version": v, "subscribers": ms.len(), "lastArrivalMs": worst })
        })
        .collect();
    Ok(
        json!({ "subscribers": subscribers, "lost": lost, "duplicated": duplicated, "changes": last_arrivals }),
    )
}

async fn run_batch(args: &Args) -> Result<Value, Failure> {
    let input = json!({ "from": "2026-01-01", "to": "2026-01-31", "rows": 5, "stepDelayMs": args.step_delay_ms });
    let body = json!({
        "query": "mutation($inputs: [GenerateReportInput!]!) { generateReportBatch(inputs: $inputs) { id } }",
        "variables": { "inputs": vec![input; args.batch_items] },
    });
    let mut socket = connect(&args.url).await?;
    let started = Instant::now();
    let answer = post_graphql(&args.url, &body.to_string()).await?;
    let create_ms = started.elapsed().as_secs_f64() * 1000.0;
    let id = answer["data"]["generateReportBatch"]["id"]
        .as_str()
        .ok_or_else(|| format!("no batch: {answer}"))?
        .to_owned();
    const FOLLOW_BATCH: &str = "subscription($id: ID!) { requestProgress(id: $id, afterVersion: 0) { status version updatedAt batch { completed } } }";
    send(&mut socket, json!({ "id": "b", "type": "subscribe", "payload": { "query": FOLLOW_BATCH, "variables": { "id": id } } })).await?;
    let mut states = Vec::new();
    let mut last = Value::Null;
    loop {
        let frame = recv(&mut socket).await?;
        match frame["type"].as_str() {
            Some("next") => {
                last = frame["payload"]["data"]["requestProgress"].clone();
                states.push((last["version"].as_u64().unwrap_or_default(), 0.0));
            }
            Some("complete") => break,
            _ => return Err(format!("unexpected frame {frame}").into()),
        }
    }
    let complete_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (lost, duplicated) = gaps_and_duplicates(&states);
    Ok(json!({
        "jobs": args.batch_items,
        "batchStatus": last["status"],
        "completedChildren": last["batch"]["completed"],
        "createMs": create_ms,
        "completeMs": complete_ms,
        "batchStates": states.len(),
        "lost": lost,
        "duplicated": duplicated,
    }))
}

/// Posts a GraphQL request to the server's `/graphql` and returns its answer.
async fn post_graphql(url: &str, body: &str) -> Result<Value, Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .ok_or("no host in the URL")?;
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8(response)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP body")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("POST /graphql: {head}").into());
    }
    Ok(serde_json::from_str(body)?)
}

async fn run_idle(args: &Args) -> Result<Value, Failure> {
    let mut sockets = Vec::with_capacity(args.connections);
    let opened = Instant::now();
    for _ in 0..args.connections {
        sockets.push(connect(&args.url).await?);
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    Ok(json!({ "connections": sockets.len(), "openSecs": open_secs }))
}

/// The AWS calls the server has made so far, by `service.operation` (the local server's
/// `GET /stats`); `None` for a server that does not serve it (the reference server), or
/// does not answer within two seconds.
async fn aws_calls(url: &str) -> Option<BTreeMap<String, u64>> {
    tokio::time::timeout(Duration::from_secs(2), read_aws_calls(url))
        .await
        .ok()
        .flatten()
}

async fn read_aws_calls(url: &str) -> Option<BTreeMap<String, u64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url
        .trim_start_matches("ws://")
        .trim_start_matches("wss://")
        .split('/')
        .next()?;
    let mut stream = TcpStream::connect(authority).await.ok()?;
    let request = format!("GET /stats HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let stats: Value = serde_json::from_str(body).ok()?;
    serde_json::from_value(stats["awsCalls"].clone()).ok()
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let cpu_before = args.server_pid.and_then(cpu_seconds);
    let calls_before = aws_calls(&args.url).await;
    let started = Instant::now();
    let mut report = match args.mode {
        Mode::Jobs => run_jobs(&args).await?,
        Mode::Fanout => run_fanout(&args).await?,
        Mode::Idle => run_idle(&args).await?,
        Mode::Batch => run_batch(&args).await?,
    };
    let wall = started.elapsed().as_secs_f64();
    report["label"] = json!(args.label);
    report["mode"] = json!(format!("{:?}", args.mode).to_lowercase());
    report["connections"] = json!(args.connections);
    report["wallSecs"] = json!(wall);
    if let Some(jobs) = report["jobs"].as_u64() {
        report["jobsPerSec"] = json!(jobs as f64 / wall);
        report["statesPerSec"] = json!(report["states"].as_u64().unwrap_or_default() as f64 / wall);
    }
    let jobs = report["jobs"].as_u64().unwrap_or(1).max(1);
    if let (Some(before), Some(after)) = (calls_before, aws_calls(&args.url).await) {
        let made = |call: &String, n: &u64| n - before.get(call).copied().unwrap_or(0);
        // The jobs' calls, per job; periodic work's (`part/service.operation`: the
        // sweeper's), per second of the run, whatever the number of jobs.
        let (periodic, own): (Vec<_>, Vec<_>) = after
            .iter()
            .map(|(call, n)| (call, made(call, n)))
            .filter(|(_, n)| *n > 0)
            .partition(|(call, _)| call.contains('/'));
        let per_job: BTreeMap<&String, f64> = own
            .into_iter()
            .map(|(call, n)| (call, n as f64 / jobs as f64))
            .collect();
        let per_second: BTreeMap<&String, f64> = periodic
            .into_iter()
            .map(|(call, n)| (call, n as f64 / wall))
            .collect();
        report["awsCallsPerJobTotal"] = json!(per_job.values().sum::<f64>());
        report["awsCallsPerJob"] = json!(per_job);
        report["periodicCallsPerSec"] = json!(per_second);
    }
    if let Some(pid) = args.server_pid {
        if let (Some(before), Some(after)) = (cpu_before, cpu_seconds(pid)) {
            report["serverCpuSecs"] = json!(after - before);
            if let Some(jobs) = report["jobs"].as_u64().filter(|j| *j > 0) {
                report["serverCpuMsPerJob"] = json!((after - before) * 1000.0 / jobs as f64);
            }
        }
        if let Some((rss, peak)) = rss_mib(pid) {
            report["serverRssMiB"] = json!(rss);
            report["serverPeakRssMiB"] = json!(peak);
        }
    }
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    println!("{report}");
    Ok(())
}
