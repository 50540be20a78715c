//! The example app on the local stack: `generateReport` and `flakyImport` behind a local
//! server that behaves like API Gateway, on the embedded store or on DynamoDB Local.
//!
//! Run with `cargo run --release --example report -- --port 4000`, then open
//! <http://127.0.0.1:4000/> (GraphiQL) or run `cargo run --example client`. With
//! `--dynamodb-endpoint http://127.0.0.1:8000` the state lives in DynamoDB (tables created
//! when missing), changes come from the requests table's stream, and pushes go through the
//! Management API over HTTP. It runs in development mode (one anonymous tenant) unless
//! `--jwt-secret SECRET` asks for HS256 JWTs (claims `sub`, `tenant`, `exp`), presented in
//! the `connection_init` payload as `authorization: "Bearer <token>"`.

use report_handlers as handlers;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Streamer's example app on the local stack")]
struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// At most this many jobs run at once.
    #[arg(long, default_value_t = 64)]
    job_concurrency: usize,
    /// Use the DynamoDB at this endpoint (DynamoDB Local) instead of the embedded store.
    #[arg(long, value_name = "URL")]
    dynamodb_endpoint: Option<String>,
    /// The tables are named `{prefix}-connections`, `{prefix}-subscriptions`, `{prefix}-requests`.
    #[arg(long, default_value = "streamer")]
    table_prefix: String,
    /// Authenticate connections with HS256 JWTs signed with this secret (claims `sub`,
    /// `tenant`, `exp`) instead of development mode.
    #[arg(
        long,
        value_name = "SECRET",
        env = "STREAMER_JWT_SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// Per-tenant quota: connections at once (none unless set).
    #[arg(long)]
    tenant_connections: Option<usize>,
    /// Per-tenant quota: requests queued, running or retrying at once (none unless set).
    #[arg(long)]
    tenant_active_requests: Option<usize>,
    /// Per-tenant quota: enqueues per second (none unless set).
    #[arg(long)]
    tenant_enqueues_per_second: Option<u32>,
    /// On the embedded store, post every frame through the local Management API over HTTP,
    /// as on AWS (`ThroughManagementApi`), instead of straight to the sockets.
    #[arg(long, conflicts_with = "dynamodb_endpoint")]
    through_management_api: bool,
    /// Each Management API post and delete takes this long (simulating API Gateway's
    /// latency; with `--through-management-api` or `--dynamodb-endpoint`).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    management_latency_ms: u64,
    /// With `--dynamodb-endpoint`: read each stream shard at most once in this long, as
    /// Lambda's event source mapping does (about 250 ms); by default at once after a batch.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    stream_pace_ms: u64,
    /// Sweep (abandoned leases, due retries, lost dispatches) this often; the deployment
    /// template's `SweepSchedule` sweeps once a minute.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    sweep_every_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let limits = streamer::Limits {
        max_tenant_connections: args.tenant_connections,
        max_tenant_active_requests: args.tenant_active_requests,
        max_tenant_enqueues_per_second: args.tenant_enqueues_per_second,
        ..streamer::Limits::default()
    };
    let mut builder = handlers::app()
        .local()
        .with_job_concurrency(args.job_concurrency)
        .with_limits(limits)
        .with_sweep_every(std::time::Duration::from_millis(args.sweep_every_ms))
        .with_management_latency(std::time::Duration::from_millis(args.management_latency_ms));
    match &args.jwt_secret {
        Some(secret) => {
            let auth = streamer::JwtAuthenticator::hs256(secret.as_bytes());
            builder = builder.with_authenticator(std::sync::Arc::new(auth));
            tracing::info!("authentication: HS256 JWTs");
        }
        None => tracing::warn!("development mode: every connection is the anonymous tenant `dev`"),
    }
    let stack = match &args.dynamodb_endpoint {
        Some(endpoint) => {
            let tables = streamer::Tables::with_prefix(&args.table_prefix);
            let polling = streamer::aws::PollerOptions {
                pace: std::time::Duration::from_millis(args.stream_pace_ms),
                ..streamer::aws::PollerOptions::default()
            };
            builder.build_on(
                streamer::DynamoDbBackend::connect_with(endpoint, tables, polling).await?,
            )?
        }
        None if args.through_management_api => builder.build_on(
            streamer::ThroughManagementApi::new(streamer::SenderOptions::default()),
        )?,
        None => builder.build()?,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let mut stdout = std::io::stdout();
    let address = listener.local_addr()?;
    writeln!(stdout, "listening on ws://{address}/graphql")?;
    writeln!(
        stdout,
        "dashboard: http://{address}/dashboard · GraphiQL: http://{address}/"
    )?;
    stdout.flush()?;
    stack
        .run(listener, async {
            tokio::signal::ctrl_c().await.unwrap_or_default()
        })
        .await?;
    Ok(())
}
