//! The whole system in one process: the embedded store and its change feed, the gateway
//! behind the local server, and the processor with jobs as local tasks.

use std::sync::Arc;
use std::time::Duration;

use streamer_core::store::Change;
use streamer_core::{Clock, IdGenerator, MemoryStore, RandomIds, Store, SystemClock};
use streamer_gateway::Gateway;
use streamer_processor::{Processor, TaskDispatcher, Worker};
use streamer_schema::{Handlers, Services};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::{LocalSender, Server, Sockets};

/// How many times a failed change is handled again before it is given up (and logged).
const CHANGE_ATTEMPTS: u32 = 5;

/// Builds a [`Stack`].
#[derive(Debug)]
pub struct StackBuilder {
    handlers: Arc<Handlers>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    connection_ids: Arc<dyn IdGenerator>,
    job_concurrency: usize,
}

impl StackBuilder {
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

    /// Builds the stack on the embedded store.
    ///
    /// # Errors
    ///
    /// When the schema cannot be built from the registered handlers.
    pub fn build(self) -> Result<Stack, async_graphql::dynamic::SchemaError> {
        let memory = Arc::new(MemoryStore::new());
        let feed = memory.changes();
        let store: Arc<dyn Store> = memory;
        let services = Services {
            store: Arc::clone(&store),
            clock: Arc::clone(&self.clock),
            ids: self.ids,
        };
        let schema = streamer_schema::build(Arc::clone(&self.handlers), services.clone())?;
        let sockets = Sockets::default();
        let sender = Arc::new(LocalSender::new(sockets.clone()));
        let gateway = Gateway::new(schema.clone(), &services, sender.clone());
        let worker = Worker::new(Arc::clone(&store), self.clock, self.handlers);
        let dispatcher = Arc::new(TaskDispatcher::new(worker, self.job_concurrency));
        let processor = Processor::new(schema, store, sender, dispatcher);
        let server = Server::new(gateway, sockets, self.connection_ids);
        Ok(Stack {
            server,
            processor,
            feed,
        })
    }
}

/// The local stack, ready to serve.
#[derive(Debug)]
pub struct Stack {
    server: Server,
    processor: Processor,
    feed: mpsc::UnboundedReceiver<Change>,
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
        }
    }

    /// Serves on `listener` until `shutdown` resolves, feeding the processor from the store's
    /// change feed meanwhile.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let feed = tokio::spawn(feed_processor(self.feed, self.processor));
        let served = self.server.run(listener, shutdown).await;
        feed.abort();
        served
    }
}

/// Hands the change feed to the processor in batches of whatever has arrived, as the Lambda
/// event source does; failed changes are handled again with a backoff.
async fn feed_processor(mut feed: mpsc::UnboundedReceiver<Change>, processor: Processor) {
    while let Some(first) = feed.recv().await {
        let mut batch = vec![first];
        while let Ok(change) = feed.try_recv() {
            batch.push(change);
        }
        let mut attempt = 1;
        loop {
            let outcome = processor.handle_batch(batch.clone()).await;
            if outcome.failures.is_empty() {
                break;
            }
            if attempt == CHANGE_ATTEMPTS {
                tracing::error!(failures = ?outcome.failures, "changes given up after {CHANGE_ATTEMPTS} attempts");
                break;
            }
            batch.retain(|change| outcome.failures.contains(&change.sequence_number));
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            attempt += 1;
        }
    }
}
