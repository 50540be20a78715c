//! The whole system in one process: a [`Backend`] (the embedded store and its change feed by
//! default), the gateway behind the local server, and the processor with jobs as local tasks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use streamer_core::store::Change;
use streamer_core::{
    Access, Authenticator, Backoff, Clock, DevMode, IdGenerator, Limits, MemoryStore, RandomIds,
    Sender, Store, SystemClock,
};
use streamer_gateway::Gateway;
use streamer_processor::{
    Processor, SweepOptions, Sweeper, TaskDispatcher, Worker, WorkerSettings,
};
use streamer_schema::{Handlers, Services};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::{LocalSender, ManagementCredentials, Server, SocketLimits, Sockets, Timeouts};

/// How long the embedded store keeps a request after it ended: a day. Items past their TTL
/// attribute (a week after their last change, as on DynamoDB) go too.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a failed change is handled again before it is given up (and logged): six hours,
/// as the deployment template's event source mapping retries a stream record by its age. A
/// change waiting out a push hold is not lost after a few tries.
const CHANGE_MAX_AGE: Duration = Duration::from_secs(6 * 60 * 60);

/// Where a local stack keeps its state, how changes reach its processor, and how its parts
/// reach the sockets: straight to them, or through the local Management API, as on AWS.
#[async_trait]
pub trait Backend: Send + std::fmt::Debug + 'static {
    /// The store every part uses.
    fn store(&self) -> Arc<dyn Store>;
    /// The sender the processor pushes through: `endpoint` is the local server's Management
    /// API (`http://127.0.0.1:4000`), which takes only calls signed (SigV4) with
    /// `credentials`; `sockets` are its open sockets.
    fn sender(
        &self,
        endpoint: &str,
        credentials: &ManagementCredentials,
        sockets: &Sockets,
    ) -> Arc<dyn Sender>;
    /// The sender the gateway replies and the sweeper closes through (arguments as for
    /// [`Backend::sender`]). By default straight to the sockets, which keeps the protocol's
    /// close codes: API Gateway cannot send them (a connection deleted through the
    /// Management API closes 1000).
    fn replies(
        &self,
        _endpoint: &str,
        _credentials: &ManagementCredentials,
        sockets: &Sockets,
    ) -> Arc<dyn Sender> {
        Arc::new(LocalSender::new(sockets.clone()))
    }
    /// Feeds `processor` with the store's changes until the stack stops.
    async fn feed(self: Box<Self>, processor: Processor);
    /// The store whose TTL the stack runs itself, as DynamoDB runs it for its tables: the
    /// embedded store. `None` for a store that expires its own items.
    fn ttl(&self) -> Option<Arc<MemoryStore>> {
        None
    }
}

/// The embedded store: changes reach the processor through its in-process feed, pushes go
/// straight to the sockets.
#[derive(Debug)]
pub struct Embedded {
    store: Arc<MemoryStore>,
    feed: mpsc::UnboundedReceiver<Change>,
}

impl Embedded {
    /// A new, empty embedded store.
    pub fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let feed = store.changes();
        Self { store, feed }
    }
}

impl Default for Embedded {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Backend for Embedded {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn sender(
        &self,
        _endpoint: &str,
        _credentials: &ManagementCredentials,
        sockets: &Sockets,
    ) -> Arc<dyn Sender> {
        Arc::new(LocalSender::new(sockets.clone()))
    }

    fn ttl(&self) -> Option<Arc<MemoryStore>> {
        Some(Arc::clone(&self.store))
    }

    /// Hands the change feed to the processor: each request's changes go, in order, to one
    /// of `FEED_LANES` (16) lanes (as a stream's shards split items), and each lane hands the
    /// processor batches of whatever has arrived, as the Lambda event source does. A batch
    /// holds up only its own lane; failed changes are handled again with a backoff.
    async fn feed(self: Box<Self>, processor: Processor) {
        let lanes: Vec<mpsc::UnboundedSender<Change>> = (0..FEED_LANES)
            .map(|_| {
                let (lane, changes) = mpsc::unbounded_channel();
                tokio::spawn(feed_lane(processor.clone(), changes));
                lane
            })
            .collect();
        let mut feed = self.feed;
        while let Some(change) = feed.recv().await {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&change.request_id(), &mut hasher);
            let lane = std::hash::Hasher::finish(&hasher) as usize % FEED_LANES;
            if lanes[lane].send(change).is_err() {
                return;
            }
        }
    }
}

/// How many lanes the embedded feed spreads requests over.
const FEED_LANES: usize = 16;

/// One lane of the embedded feed: batches of its changes, in order, until the feed stops.
async fn feed_lane(processor: Processor, mut changes: mpsc::UnboundedReceiver<Change>) {
    while let Some(first) = changes.recv().await {
        let mut batch = vec![first];
        while let Ok(change) = changes.try_recv() {
            batch.push(change);
        }
        let mut attempt = 1;
        let first_tried = tokio::time::Instant::now();
        loop {
            let outcome = processor.handle_batch(batch.clone()).await;
            if outcome.failures.is_empty() {
                break;
            }
            if first_tried.elapsed() >= CHANGE_MAX_AGE {
                tracing::error!(failures = ?outcome.failures, attempts = attempt, "changes given up after {CHANGE_MAX_AGE:?}");
                break;
            }
            batch.retain(|change| outcome.failures.contains(&change.sequence_number));
            let delay = Backoff::CHANGES.delay(attempt, &mut rand::rng());
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Builds a [`Stack`].
#[derive(Debug)]
pub struct StackBuilder {
    handlers: Arc<Handlers>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    connection_ids: Arc<dyn IdGenerator>,
    job_concurrency: usize,
    tenant_job_share: Option<usize>,
    management_credentials: Option<ManagementCredentials>,
    timeouts: Timeouts,
    socket_limits: SocketLimits,
    management_faults: f64,
    management_latency: Duration,
    index_lag: Option<Duration>,
    concurrent_frames: bool,
    retention: Duration,
    limits: Limits,
    worker: WorkerSettings,
    sweep_every: Duration,
    sweep: SweepOptions,
    auth: Arc<dyn Authenticator>,
    access: Access,
}

impl StackBuilder {
    /// Authenticates connections with `auth` (default: development mode, one anonymous
    /// tenant).
    pub fn with_authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.auth = auth;
        self
    }

    /// Who may act on a request (default: anyone of its tenant).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// How workers run jobs: lease, time limit, progress interval, cancel grace, result
    /// size ([`WorkerSettings`]; on Lambda the `STREAMER_*` variables of the same names).
    pub fn with_worker_settings(mut self, settings: WorkerSettings) -> Self {
        self.worker = settings;
        self
    }

    /// An attempt that runs longer than `limit` is ended as a retryable `DEADLINE_EXCEEDED`
    /// failure (default 15 minutes, Lambda's limit).
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.worker.time_limit = limit;
        self
    }

    /// Workers hold requests with leases of this length (default 30 s): a job whose worker
    /// died runs again once it has passed.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.worker.lease = lease;
        self
    }

    /// Sweeps (abandoned leases, due retries, lost dispatches, init timeouts) this often
    /// (default every second).
    pub fn with_sweep_every(mut self, every: Duration) -> Self {
        self.sweep_every = every;
        self
    }

    /// Dispatches again a request left QUEUED this long, in case its dispatch was lost or
    /// its worker died before claiming it (default a minute).
    pub fn with_queued_grace(mut self, grace: Duration) -> Self {
        self.sweep.queued_grace = grace;
        self
    }

    /// With these limits instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// With these connection timers (init, idle, lifetime) instead of the defaults.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Uses this clock (tests pass a manual one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses these request ids.
    pub fn with_ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.ids = ids;
        self
    }

    /// Uses these connection ids.
    pub fn with_connection_ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.connection_ids = ids;
        self
    }

    /// At most this many jobs run at once (default 64).
    pub fn with_job_concurrency(mut self, limit: usize) -> Self {
        self.job_concurrency = limit;
        self
    }

    /// Runs at most `share` jobs of one tenant at once, instead of three quarters of the job
    /// concurrency ([`streamer_processor::local::default_tenant_share`]).
    pub fn with_tenant_job_share(mut self, share: usize) -> Self {
        self.tenant_job_share = Some(share);
        self
    }

    /// Gives a cancelled handler `grace` to stop before its attempt is dropped, instead of
    /// [`DEFAULT_CANCEL_GRACE`](streamer_processor::DEFAULT_CANCEL_GRACE) (5 s).
    pub fn with_cancel_grace(mut self, grace: Duration) -> Self {
        self.worker.cancel_grace = grace;
        self
    }

    /// Limits what clients may send and leave unread ([`SocketLimits`]) instead of API
    /// Gateway's limits.
    pub fn with_socket_limits(mut self, limits: SocketLimits) -> Self {
        self.socket_limits = limits;
        self
    }

    /// Fails `rate` of the local Management API's posts and deletes, at random, with a 500
    /// or a hang ([`Server::with_management_faults`]); the senders that call it (every part,
    /// on a backend that posts through it) must retry them.
    pub fn with_management_faults(mut self, rate: f64) -> Self {
        self.management_faults = rate;
        self
    }

    /// Makes each of the local Management API's posts and deletes take `latency`
    /// ([`Server::with_management_latency`]), on a backend that posts through it.
    pub fn with_management_latency(mut self, latency: Duration) -> Self {
        self.management_latency = latency;
        self
    }

    /// Hands a connection's frames to the gateway concurrently, as API Gateway's separate
    /// invocations can run ([`Server::with_concurrent_frames`]). For tests; off by default.
    pub fn with_concurrent_frames(mut self) -> Self {
        self.concurrent_frames = true;
        self
    }

    /// Answers index queries (connections awaiting init, request listings, quota counts)
    /// `lag` late, as DynamoDB's eventually consistent indexes can ([`LaggingIndexes`]).
    /// For tests; off by default.
    ///
    /// [`LaggingIndexes`]: streamer_core::LaggingIndexes
    pub fn with_index_lag(mut self, lag: Duration) -> Self {
        self.index_lag = Some(lag);
        self
    }

    /// Keeps ended requests (and their history) for `retention` on the embedded store
    /// instead of [`DEFAULT_RETENTION`].
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The Management API takes only calls signed (SigV4) with `credentials`, instead of
    /// a key made at random when the stack is built.
    pub fn with_management_credentials(mut self, credentials: ManagementCredentials) -> Self {
        self.management_credentials = Some(credentials);
        self
    }

    /// Builds the stack on the embedded store.
    ///
    /// # Errors
    ///
    /// When the schema cannot be built from the registered handlers.
    pub fn build(self) -> Result<Stack, async_graphql::dynamic::SchemaError> {
        self.build_on(Embedded::new())
    }

    /// Builds the stack on `backend`.
    ///
    /// # Errors
    ///
    /// When the schema cannot be built from the registered handlers.
    pub fn build_on(
        self,
        backend: impl Backend,
    ) -> Result<Stack, async_graphql::dynamic::SchemaError> {
        let store = match self.index_lag {
            Some(lag) => Arc::new(streamer_core::LaggingIndexes::new(backend.store(), lag)),
            None => backend.store(),
        };
        let services = Services {
            store: Arc::clone(&store),
            clock: Arc::clone(&self.clock),
            ids: self.ids,
            limits: self.limits,
            access: self.access,
        };
        let sockets = Sockets::default();
        let local_sender: Arc<dyn Sender> = Arc::new(LocalSender::new(sockets.clone()));
        let gateway = Gateway::for_app(
            Arc::clone(&self.handlers),
            &services,
            Arc::clone(&local_sender),
            self.auth,
        )?;
        let worker = Worker::new(
            Arc::clone(&store),
            Arc::clone(&self.clock),
            Arc::clone(&self.handlers),
        )
        .with_settings(self.worker)
        .with_tenant_active_requests(services.limits.max_tenant_active_requests);
        let share = self.tenant_job_share.unwrap_or_else(|| {
            streamer_processor::local::default_tenant_share(self.job_concurrency)
        });
        let dispatcher = TaskDispatcher::with_tenant_share(worker, self.job_concurrency, share);
        let processor = Processor::for_app(
            Arc::clone(&self.handlers),
            &services,
            local_sender,
            Arc::new(dispatcher.clone()),
        )?;
        // Never logged: whoever has it can post to any client.
        let management_credentials =
            self.management_credentials
                .unwrap_or_else(|| ManagementCredentials {
                    access_key_id: format!("STREAMER{}", RandomIds.next_id().replace('-', "")),
                    secret_access_key: format!(
                        "{}{}",
                        RandomIds.next_id().replace('-', ""),
                        RandomIds.next_id().replace('-', "")
                    ),
                });
        let server = Server::new(gateway, sockets.clone(), self.connection_ids)
            .with_timeouts(self.timeouts)
            .with_socket_limits(self.socket_limits)
            .with_management_faults(self.management_faults)
            .with_management_latency(self.management_latency)
            .with_concurrent_frames(self.concurrent_frames)
            .with_management_credentials(management_credentials.clone());
        Ok(Stack {
            management_credentials,
            retention: self.retention,
            clock: self.clock,
            sweep: (
                self.sweep_every,
                SweepOptions {
                    init_timeout: self.timeouts.init,
                    ..self.sweep
                },
            ),
            server,
            sockets,
            processor,
            store,
            dispatcher,
            backend: Box::new(backend),
        })
    }
}

/// The local stack, ready to serve.
#[derive(Debug)]
pub struct Stack {
    server: Server,
    sockets: Sockets,
    /// The processor, its sender set when the stack runs.
    processor: Processor,
    store: Arc<dyn Store>,
    dispatcher: TaskDispatcher,
    backend: Box<dyn Backend>,
    clock: Arc<dyn Clock>,
    sweep: (Duration, SweepOptions),
    retention: Duration,
    management_credentials: ManagementCredentials,
}

impl Stack {
    /// A stack for these handlers, with the system clock, random ids and defaults.
    pub fn builder(handlers: Arc<Handlers>) -> StackBuilder {
        StackBuilder {
            handlers,
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            connection_ids: Arc::new(RandomIds),
            job_concurrency: 64,
            tenant_job_share: None,
            management_credentials: None,
            timeouts: Timeouts::default(),
            socket_limits: SocketLimits::default(),
            management_faults: 0.0,
            management_latency: Duration::ZERO,
            index_lag: None,
            concurrent_frames: false,
            retention: DEFAULT_RETENTION,
            limits: Limits::default(),
            worker: WorkerSettings::default(),
            sweep_every: Duration::from_secs(1),
            sweep: SweepOptions::default(),
            auth: Arc::new(DevMode),
            access: Access::default(),
        }
    }

    /// The local workers, for fault injection ([`TaskDispatcher::kill`]).
    pub fn workers(&self) -> TaskDispatcher {
        self.dispatcher.clone()
    }

    /// The credentials a call to the local Management API must be signed (SigV4) with.
    pub fn management_credentials(&self) -> &ManagementCredentials {
        &self.management_credentials
    }

    /// The store the stack runs on.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Serves on `listener` until `shutdown` resolves, feeding the processor from the
    /// backend meanwhile.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (server, engine) = self.start_engine(&endpoint)?;
        let served = server.run(listener, shutdown).await;
        drop(engine);
        served
    }

    /// Runs the processor and the sweeper with no server: GraphQL requests go straight to
    /// the gateway ([`InProcess::execute`]) and nobody is connected to push to. For the test
    /// kit, which reads states from the store. Stops when the returned value is dropped.
    ///
    /// # Errors
    ///
    /// When the processor's thread cannot start.
    pub fn start_in_process(self) -> std::io::Result<InProcess> {
        let store = Arc::clone(&self.store);
        let workers = self.dispatcher.clone();
        // No server listens: a backend whose pushes go through the Management API would
        // find nothing there, as a post to a connection that is gone.
        let (server, engine) = self.start_engine("http://127.0.0.1:9")?;
        Ok(InProcess {
            gateway: server.gateway().clone(),
            store,
            workers,
            _engine: engine,
        })
    }

    /// Starts what runs besides the server (the processor on the backend's feed, the
    /// sweeper) and returns the server, its gateway posting through the backend's sender.
    fn start_engine(self, endpoint: &str) -> std::io::Result<(Server, Engine)> {
        let sender = self
            .backend
            .sender(endpoint, &self.management_credentials, &self.sockets);
        let replies = self
            .backend
            .replies(endpoint, &self.management_credentials, &self.sockets);
        let server = self.server.with_gateway_sender(Arc::clone(&replies));
        let processor = self.processor.with_sender(sender);
        let ttl = self.backend.ttl();
        let pipeline = Pipeline::start(self.backend.feed(processor))?;
        let (every, options) = self.sweep;
        let (clock, retention) = (Arc::clone(&self.clock), self.retention);
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let sweeper = Sweeper::new(
            Arc::clone(&self.store),
            replies,
            Arc::new(self.dispatcher),
            self.clock,
            options,
        );
        let sweeping = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = streamer_core::calls::within("Sweeper", sweeper.sweep()).await {
                    tracing::error!(error = ?error.to_string(), "sweep failed");
                }
                if let Some(store) = &ttl {
                    let now = clock.now();
                    let expired = store.expire(now)
                        + store.expire_ended(now.checked_sub_signed(retention).unwrap_or(now));
                    if expired > 0 {
                        tracing::debug!(expired, "expired");
                    }
                }
            }
        });
        Ok((
            server,
            Engine {
                _pipeline: pipeline,
                sweeping: sweeping.abort_handle(),
            },
        ))
    }
}

/// The processor and the sweeper of a running stack; both stop when it is dropped.
#[derive(Debug)]
struct Engine {
    _pipeline: Pipeline,
    sweeping: tokio::task::AbortHandle,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.sweeping.abort();
    }
}

/// A stack running without a server ([`Stack::start_in_process`]).
#[derive(Debug)]
pub struct InProcess {
    gateway: Gateway,
    store: Arc<dyn Store>,
    workers: TaskDispatcher,
    _engine: Engine,
}

impl InProcess {
    /// Executes a GraphQL request (`{"query", "variables", "operationName"}`) as an HTTP
    /// client without credentials would: the status code and the JSON answer.
    pub async fn execute(&self, request: &serde_json::Value) -> (u16, serde_json::Value) {
        let body = request.to_string();
        let (status, answer) = self
            .gateway
            .execute_http(body.as_bytes(), None, Some("application/json"))
            .await;
        (
            status,
            serde_json::from_str(&answer).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The store the stack runs on.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The local workers, for fault injection.
    pub fn workers(&self) -> &TaskDispatcher {
        &self.workers
    }
}

/// The processor's thread: the change feed, the fan-out and the jobs it dispatches run on a
/// runtime of their own (as on AWS they run in functions of their own), so that a burst of
/// client messages on the server's threads does not hold pushes up behind it. Stops when
/// dropped.
#[derive(Debug)]
struct Pipeline {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Pipeline {
    fn start(feed: impl Future<Output = ()> + Send + 'static) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("streamer-processor".into())
            .spawn(move || {
                runtime.block_on(async {
                    tokio::select! {
                        () = feed => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends the jobs still running on it.
            })?;
        Ok(Self { stop: Some(stop) })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
