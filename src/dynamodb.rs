//! [`DynamoDbBackend`]: the local stack on a real DynamoDB (DynamoDB Local): state in its
//! tables, changes from the requests table's stream through a [`StreamPoller`], pushes through
//! an [`ApiGatewaySender`] to the local server's Management API over HTTP.

use std::sync::Arc;

use async_trait::async_trait;
use streamer_aws::tables::REQUESTS;
use streamer_aws::{
    ApiGatewaySender, DynamoDbStore, PollerOptions, SenderOptions, StartingPosition, StreamPoller,
    Tables,
};
use streamer_core::{Sender, Store};
use streamer_local::{Backend, ManagementCredentials, Sockets};
use streamer_processor::Processor;

/// The local stack's backend on DynamoDB at an endpoint.
#[derive(Debug)]
pub struct DynamoDbBackend {
    store: Arc<DynamoDbStore>,
    poller: StreamPoller,
    sender_options: SenderOptions,
}

impl DynamoDbBackend {
    /// Uses the DynamoDB at `endpoint` (DynamoDB Local), creating the tables that are
    /// missing. The stream is read from its oldest record when the requests table was created
    /// now, else from the newest: a restart does not replay old changes.
    ///
    /// # Errors
    ///
    /// When the tables cannot be created or described.
    pub async fn connect(endpoint: &str, tables: Tables) -> streamer_core::Result<Self> {
        Self::connect_with(endpoint, tables, PollerOptions::default()).await
    }

    /// As [`DynamoDbBackend::connect`], polling with `options` (their starting position is
    /// replaced as described there).
    ///
    /// # Errors
    ///
    /// When the tables cannot be created or described.
    pub async fn connect_with(
        endpoint: &str,
        tables: Tables,
        mut options: PollerOptions,
    ) -> streamer_core::Result<Self> {
        let store = DynamoDbStore::local(endpoint, tables.clone());
        let created = store.create_tables().await?;
        let requests = tables.name(&REQUESTS);
        options.starting_position = if created.contains(&requests) {
            StartingPosition::TrimHorizon
        } else {
            StartingPosition::Latest
        };
        Ok(Self {
            store: Arc::new(store),
            poller: StreamPoller::local(endpoint, requests, options),
            sender_options: SenderOptions::default(),
        })
    }

    /// Posts (every part's) with `options` instead of the defaults.
    #[must_use]
    pub fn with_sender_options(mut self, options: SenderOptions) -> Self {
        self.sender_options = options;
        self
    }
}

#[async_trait]
impl Backend for DynamoDbBackend {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn sender(
        &self,
        endpoint: &str,
        credentials: &ManagementCredentials,
        _sockets: &Sockets,
    ) -> Arc<dyn Sender> {
        management_api(endpoint, credentials, self.sender_options)
    }

    async fn feed(self: Box<Self>, processor: Processor) {
        self.poller.run(processor).await;
    }
}

/// The embedded store with every post (the processor's pushes, the gateway's replies, the
/// sweeper's closes) through the local server's Management API over HTTP, signed, as on
/// AWS: what the Management API's injected faults and latency
/// ([`StackBuilder::with_management_faults`](streamer_local::StackBuilder::with_management_faults),
/// [`StackBuilder::with_management_latency`](streamer_local::StackBuilder::with_management_latency))
/// act on without DynamoDB.
#[derive(Debug)]
pub struct ThroughManagementApi {
    embedded: streamer_local::Embedded,
    sender_options: SenderOptions,
}

impl ThroughManagementApi {
    /// A new embedded store, posting with `options`.
    #[must_use]
    pub fn new(options: SenderOptions) -> Self {
        Self {
            embedded: streamer_local::Embedded::new(),
            sender_options: options,
        }
    }
}

#[async_trait]
impl Backend for ThroughManagementApi {
    fn store(&self) -> Arc<dyn Store> {
        self.embedded.store()
    }

    fn sender(
        &self,
        endpoint: &str,
        credentials: &ManagementCredentials,
        _sockets: &Sockets,
    ) -> Arc<dyn Sender> {
        management_api(endpoint, credentials, self.sender_options)
    }

    fn replies(
        &self,
        endpoint: &str,
        credentials: &ManagementCredentials,
        sockets: &Sockets,
    ) -> Arc<dyn Sender> {
        self.sender(endpoint, credentials, sockets)
    }

    async fn feed(self: Box<Self>, processor: Processor) {
        Box::new(self.embedded).feed(processor).await;
    }

    fn ttl(&self) -> Option<Arc<streamer_core::MemoryStore>> {
        self.embedded.ttl()
    }
}

/// A sender to the local server's Management API at `endpoint`, signing with `credentials`.
fn management_api(
    endpoint: &str,
    credentials: &ManagementCredentials,
    options: SenderOptions,
) -> Arc<dyn Sender> {
    Arc::new(ApiGatewaySender::local(
        endpoint,
        &credentials.access_key_id,
        &credentials.secret_access_key,
        options,
    ))
}
