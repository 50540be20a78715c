//! The gateway: one API Gateway WebSocket event in, its response out, with the protocol
//! session loaded from and saved to the store and every frame to the client posted through
//! the sender (nothing can be posted during `$connect`: the socket is not open yet).

use std::sync::Arc;

use async_graphql::dynamic::Schema;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use http::HeaderValue;
use serde_json::Value;
use streamer_core::protocol::{self, Close, Effect, ServerMessage, Session, SubscribePayload};
use streamer_core::{
    Access, AuthError, Authenticator, Clock, Connection, Credentials, DevMode, Error,
    LimitExceeded, Limits, Phase, Principal, Result, Sender, Store, Subscription, SubscriptionKey,
    metric,
};
use streamer_schema::document::{Document, Refusal};
use streamer_schema::execute::{self, OperationKind};
use streamer_schema::{
    Delivery, Handlers, Pusher, ResultBudget, Services, next_or_error, prune_connection,
};

use crate::event::WsEvent;

/// Handles API Gateway WebSocket events and GraphQL over HTTP.
#[derive(Clone)]
pub struct Gateway {
    schema: Schema,
    // Resolves documents already validated: the snapshot on subscribe, missed states.
    resolving: Schema,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sender: Arc<dyn Sender>,
    limits: Limits,
    auth: Arc<dyn Authenticator>,
    access: Access,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("store", &self.store)
            .field("sender", &self.sender)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// The `error` for a subscription to a request the caller cannot see: unknown, or another
/// tenant's, alike.
fn not_found(id: String, request_id: &str) -> ServerMessage {
    let error = serde_json::json!({
        "message": format!("no request with id \"{request_id}\""),
        "extensions": { "code": "NOT_FOUND" },
    });
    ServerMessage::Error {
        id,
        payload: vec![error],
    }
}

fn response(status: i64) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response
}

/// Whether a response is a request error (no execution happened: parse or validation), which
/// the protocol reports with `error` rather than `next`.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// At most this many early `complete`s are marked per connection: a client sending
/// `complete` for ids it never used cannot grow its connection's item.
const MAX_COMPLETED_EARLY: usize = 16;

/// How long the mark of an early `complete` stops a `subscribe` of the same id: frames of
/// one connection overlap by far less; a later subscribe reusing the id is a new operation.
const COMPLETED_EARLY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// How many errors of one operation go back to the client, and how long each message may be:
/// a document of ten thousand bad directives must not come back as ten thousand errors.
const MAX_ERRORS: usize = 10;
const MAX_ERROR_MESSAGE: usize = 512;

fn errors_payload(errors: &[async_graphql::ServerError]) -> Vec<Value> {
    let mut payload: Vec<Value> = errors
        .iter()
        .take(MAX_ERRORS)
        .filter_map(|e| {
            let mut e = e.clone();
            if e.message.len() > MAX_ERROR_MESSAGE {
                let mut end = MAX_ERROR_MESSAGE;
                while !e.message.is_char_boundary(end) {
                    end -= 1;
                }
                e.message.truncate(end);
                e.message.push('…');
            }
            serde_json::to_value(e).ok()
        })
        .collect();
    if errors.len() > MAX_ERRORS {
        payload.push(serde_json::json!({
            "message": format!("{} more errors", errors.len() - MAX_ERRORS),
        }));
    }
    if payload.is_empty() {
        vec![serde_json::json!({ "message": "request failed" })]
    } else {
        payload
    }
}

/// The frame text of `message` within `max` bytes: an `error` over it is cut to one error
/// that says so, a `pong` loses its payload. `None` when even that is over (an operation id
/// near the limit): the connection is then closed instead.
fn bounded(message: &ServerMessage, max: usize) -> Option<String> {
    let text = message.to_text();
    if text.len() <= max {
        return Some(text);
    }
    let smaller = match message {
        ServerMessage::Error { id, .. } => ServerMessage::Error {
            id: id.clone(),
            payload: vec![
                LimitExceeded {
                    limit: "messageBytes",
                    what: "the error size in bytes",
                    actual: text.len(),
                    max,
                }
                .to_graphql(),
            ],
        },
        ServerMessage::Pong { .. } => ServerMessage::Pong { payload: None },
        ServerMessage::Ping { .. } => ServerMessage::Ping { payload: None },
        _ => return None,
    };
    Some(smaller.to_text()).filter(|text| text.len() <= max)
}

impl Gateway {
    /// The gateway of an app, as the local stack and the Lambda gateway both build it: the
    /// clients' schema and the schema stored documents are resolved with, both from
    /// `handlers` over `services` (store, clock, ids, limits, access rule), posting through
    /// `sender` and authenticating with `auth`.
    ///
    /// # Errors
    ///
    /// When the schema cannot be built from the handlers.
    pub fn for_app(
        handlers: Arc<Handlers>,
        services: &Services,
        sender: Arc<dyn Sender>,
        auth: Arc<dyn Authenticator>,
    ) -> Result<Self, async_graphql::dynamic::SchemaError> {
        let schema = streamer_schema::build(Arc::clone(&handlers), services.clone())?;
        let resolving = streamer_schema::build_for_stored_documents(handlers, services.clone())?;
        Ok(Self::new(schema, services, sender)
            .with_resolving_schema(resolving)
            .with_authenticator(auth))
    }

    /// A gateway over a schema built with these services, posting through `sender`.
    pub fn new(schema: Schema, services: &Services, sender: Arc<dyn Sender>) -> Self {
        Self {
            resolving: schema.clone(),
            schema,
            store: Arc::clone(&services.store),
            clock: Arc::clone(&services.clock),
            sender,
            limits: services.limits,
            auth: Arc::new(DevMode),
            access: services.access,
        }
    }

    /// Resolves subscription documents it has validated (the snapshot on subscribe, the
    /// states a resuming subscription missed) with `schema`, built by
    /// [`streamer_schema::build_for_stored_documents`], instead of validating them again.
    #[must_use]
    pub fn with_resolving_schema(mut self, schema: Schema) -> Self {
        self.resolving = schema;
        self
    }

    /// Posts through `sender` instead of the one it was made with.
    #[must_use]
    pub fn with_sender(mut self, sender: Arc<dyn Sender>) -> Self {
        self.sender = sender;
        self
    }

    /// Authenticates connections with `auth` instead of development mode.
    #[must_use]
    pub fn with_authenticator(mut self, auth: Arc<dyn Authenticator>) -> Self {
        self.auth = auth;
        self
    }

    /// Authenticates `credentials`; logs why not (never the token).
    async fn authenticate(
        &self,
        connection_id: &str,
        credentials: &Credentials,
    ) -> std::result::Result<Principal, AuthError> {
        let outcome = self.auth.authenticate(credentials, self.clock.now()).await;
        match &outcome {
            Ok(principal) => {
                tracing::info!(%connection_id, tenant = ?principal.tenant, user = ?principal.user, "authenticated");
            }
            Err(error) => {
                tracing::info!(%connection_id, error = ?error.to_string(), "not authenticated")
            }
        }
        outcome
    }

    /// Whether `principal`'s tenant may open one more connection, `counted` being whether
    /// this connection is already counted.
    async fn connection_quota_left(&self, principal: &Principal, counted: bool) -> Result<bool> {
        let Some(max) = self.limits.max_tenant_connections else {
            return Ok(true);
        };
        let open = self
            .store
            .count_connections(&principal.tenant, self.clock.now(), max + 1)
            .await?;
        let others = open.saturating_sub(usize::from(counted));
        if others >= max {
            tracing::warn!(tenant = ?principal.tenant, max, "connection quota exceeded");
        }
        Ok(others < max)
    }

    /// How this gateway pushes a state to a subscription (the snapshot on subscribe, the
    /// states a resuming subscriber missed): as the processor does, with this gateway's
    /// clock.
    fn pusher(&self) -> Pusher<'_> {
        Pusher {
            schema: &self.resolving,
            store: &*self.store,
            sender: &*self.sender,
            limits: &self.limits,
            clock: &*self.clock,
            access: self.access,
        }
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Handles one raw event. Never fails: on `$default` a failed integration makes API
    /// Gateway send a non-protocol frame, after which graphql-ws gives up (4004), so every
    /// error is logged and answered 200.
    pub async fn handle(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        match WsEvent::try_from(event) {
            Ok(event) => self.handle_event(event).await,
            Err(error) => {
                tracing::error!(error = ?error.to_string(), "dropping event");
                response(400)
            }
        }
    }

    /// Handles one strict event.
    pub async fn handle_event(&self, event: WsEvent) -> ApiGatewayProxyResponse {
        match event {
            WsEvent::Connect {
                connection_id,
                protocols,
                query,
                connected_at,
                credentials,
            } => {
                self.connect(connection_id, &protocols, query, connected_at, &credentials)
                    .await
            }
            WsEvent::Message {
                connection_id,
                body,
            } => {
                if let Err(error) = self.message(&connection_id, &body).await {
                    tracing::error!(%connection_id, error = ?error.to_string(), source = ?std::error::Error::source(&error), "message failed");
                    self.close(&connection_id, &Close::internal()).await;
                }
                response(200)
            }
            WsEvent::Disconnect {
                connection_id,
                status_code,
                reason,
            } => {
                tracing::info!(%connection_id, ?status_code, ?reason, "disconnected");
                metrics::counter!(metric::CONNECTIONS_CLOSED).increment(1);
                if let Err(error) = prune_connection(&*self.store, &connection_id).await {
                    tracing::error!(%connection_id, error = ?error.to_string(), "cleanup on disconnect failed; TTL will remove it");
                }
                response(200)
            }
        }
    }

    async fn connect(
        &self,
        connection_id: String,
        protocols: &[String],
        query: std::collections::BTreeMap<String, String>,
        connected_at: chrono::DateTime<chrono::Utc>,
        credentials: &Credentials,
    ) -> ApiGatewayProxyResponse {
        // Matching is case-sensitive, as in the reference server.
        if !protocols.iter().any(|p| p == protocol::SUBPROTOCOL) {
            tracing::info!(%connection_id, ?protocols, "refused: graphql-transport-ws not offered");
            return response(400);
        }
        // Credentials on the handshake are checked now; without any, `connection_init`
        // must bring them.
        let principal = if credentials.is_empty() {
            None
        } else {
            match self.authenticate(&connection_id, credentials).await {
                Ok(principal) => Some(principal),
                Err(_) => return response(401),
            }
        };
        if let Some(principal) = &principal {
            match self.connection_quota_left(principal, false).await {
                Ok(true) => {}
                Ok(false) => return response(429),
                Err(error) => {
                    tracing::error!(%connection_id, error = ?error.to_string(), "could not count connections");
                    return response(500);
                }
            }
        }
        let mut connection = Connection::new(&connection_id, connected_at);
        connection.query = query;
        connection.principal = principal;
        if let Err(error) = self.store.put_connection(&connection).await {
            tracing::error!(%connection_id, error = ?error.to_string(), "could not store the connection");
            return response(500);
        }
        tracing::info!(%connection_id, "connected");
        metrics::counter!(metric::CONNECTIONS_OPENED).increment(1);
        let mut accepted = response(200);
        accepted.headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(protocol::SUBPROTOCOL),
        );
        accepted
    }

    /// Closes the connection with 4408 if it still has not sent `connection_init` (the
    /// server's init timer calls this when it fires). `true` when it was closed.
    ///
    /// # Errors
    ///
    /// When the store or the sender fails.
    pub async fn close_if_uninitialised(&self, connection_id: &str) -> Result<bool> {
        let Some(connection) = self.store.get_connection(connection_id).await? else {
            return Ok(false);
        };
        if connection.phase != Phase::AwaitingInit {
            return Ok(false);
        }
        tracing::info!(%connection_id, "closed: no connection_init in time");
        metrics::counter!(metric::INIT_TIMEOUTS).increment(1);
        match self
            .sender
            .close(connection_id, &Close::init_timeout())
            .await
        {
            Ok(()) | Err(Error::Gone(_)) => Ok(true),
            Err(error) => Err(error),
        }
    }

    /// Answers an operation that exceeds a limit with an `error` naming it.
    async fn refuse(
        &self,
        connection_id: &str,
        id: String,
        exceeded: &LimitExceeded,
    ) -> Result<Option<Close>> {
        let error = ServerMessage::Error {
            id,
            payload: vec![exceeded.to_graphql()],
        };
        self.post(connection_id, &error).await?;
        Ok(None)
    }

    /// Posts one frame, never over the message size limit (see [`bounded`]). A reply that
    /// cannot be delivered (after the sender's own retries) never closes the connection by
    /// itself: one refused as too large becomes an `error` for its operation, any other
    /// failure is logged. Only a gone connection is an error here.
    async fn post(&self, connection_id: &str, message: &ServerMessage) -> Result<()> {
        match bounded(message, self.limits.max_message_bytes) {
            Some(text) => match self.sender.post(connection_id, &text).await {
                Ok(()) => Ok(()),
                Err(Error::Gone(id)) => Err(Error::Gone(id)),
                Err(Error::TooLarge(_)) => {
                    tracing::warn!(%connection_id, bytes = text.len(), "reply refused as too large");
                    if let Some(id) = message.operation_id() {
                        let error = ServerMessage::error(
                            id,
                            "the answer is larger than the connection accepts",
                        );
                        if let Some(text) = bounded(&error, self.limits.max_message_bytes) {
                            let _ = self.sender.post(connection_id, &text).await;
                        }
                    }
                    Ok(())
                }
                Err(error) => {
                    tracing::warn!(%connection_id, error = ?error.to_string(), "reply not delivered; the connection stays open");
                    Ok(())
                }
            },
            None => {
                let close = Close::bad_request("the answer would be over the message size limit");
                self.close(connection_id, &close).await;
                Err(Error::Gone(connection_id.to_owned()))
            }
        }
    }

    async fn close(&self, connection_id: &str, close: &Close) {
        tracing::info!(%connection_id, code = close.code, reason = ?close.reason, "closing");
        if let Err(error) = self.sender.close(connection_id, close).await {
            tracing::warn!(%connection_id, error = ?error.to_string(), "close failed");
        }
    }

    async fn message(&self, connection_id: &str, body: &str) -> Result<()> {
        let Some(connection) = self.store.get_connection(connection_id).await? else {
            // Pruned or expired: nothing of its session is left to continue.
            self.close(connection_id, &Close::internal()).await;
            return Ok(());
        };
        if connection
            .principal
            .as_ref()
            .is_some_and(|p| p.is_expired(self.clock.now()))
        {
            tracing::info!(%connection_id, "closed: credentials expired");
            self.close(connection_id, &Close::expired()).await;
            prune_connection(&*self.store, connection_id).await?;
            return Ok(());
        }
        let session = Session {
            acknowledged: connection.phase == Phase::Acknowledged,
            operations: connection
                .subscriptions()
                .map(|(id, _)| id.clone())
                .collect(),
        };
        let step = protocol::receive(&session, body);
        for effect in step.effects {
            let outcome = match effect {
                Effect::Initialise { payload } => self.initialise(&connection, payload).await?,
                Effect::Subscribe { id, payload } => {
                    self.operation(&connection, id, payload).await?
                }
                Effect::Unsubscribe { id } => {
                    self.unsubscribe(&connection, &id).await?;
                    None
                }
                Effect::CompleteUnknown { id } => {
                    self.complete_unknown(&connection, &id).await?;
                    None
                }
            };
            if let Some(close) = outcome {
                self.close(connection_id, &close).await;
                return Ok(());
            }
        }
        for message in &step.send {
            match self.post(connection_id, message).await {
                Err(Error::Gone(_)) => return Ok(()),
                other => other?,
            }
        }
        if let Some(close) = step.close {
            self.close(connection_id, &close).await;
        }
        Ok(())
    }

    /// `connection_init`: authenticates (a token in the payload's `authorization`, else what
    /// the handshake presented), checks the tenant's connection quota, and acknowledges. A
    /// refusal closes with 4403 and no `connection_ack`.
    async fn initialise(
        &self,
        connection: &Connection,
        payload: Option<serde_json::Map<String, Value>>,
    ) -> Result<Option<Close>> {
        let connection_id = connection.id.as_str();
        let mut payload = payload;
        // Taken out of the payload, which is stored: tokens are never kept.
        let token = payload
            .as_mut()
            .and_then(|p| p.remove("authorization"))
            .and_then(|v| v.as_str().and_then(Credentials::bearer));
        // Kept with the connection and read on every frame: bounded.
        let kept = payload
            .as_ref()
            .map_or(0, |p| serde_json::to_string(p).map_or(0, |text| text.len()));
        if kept > self.limits.max_init_payload_bytes {
            tracing::info!(%connection_id, bytes = kept, "refused: connection_init payload too large");
            return Ok(Some(Close::bad_request(format!(
                "the connection_init payload is over {} bytes",
                self.limits.max_init_payload_bytes
            ))));
        }
        let principal = match (token, &connection.principal) {
            (None, Some(principal)) => principal.clone(),
            (token, _) => {
                let credentials = Credentials {
                    token,
                    ..Credentials::default()
                };
                match self.authenticate(connection_id, &credentials).await {
                    Ok(principal) => principal,
                    Err(_) => return Ok(Some(Close::forbidden())),
                }
            }
        };
        let counted = connection
            .principal
            .as_ref()
            .is_some_and(|p| p.tenant == principal.tenant);
        if !self.connection_quota_left(&principal, counted).await? {
            return Ok(Some(Close::connection_quota()));
        }
        match self
            .store
            .acknowledge_connection(connection_id, payload.map(Value::Object), &principal)
            .await
        {
            Ok(()) => Ok(None),
            // Another invocation initialised this connection first.
            Err(Error::Conflict(_)) => Ok(Some(Close::too_many_inits())),
            Err(other) => Err(other),
        }
    }

    /// A `complete` for an operation this frame's read of the connection does not know.
    /// Its `subscribe` may be running at this moment: a mark left in its place makes that
    /// subscribe store nothing. If the subscribe stored its operation meanwhile, the
    /// operation is ended as usual. Marks older than [`COMPLETED_EARLY_FOR`] are taken
    /// away first, and at most [`MAX_COMPLETED_EARLY`] are kept per connection (a
    /// `complete` for a query in flight, which nothing stores, leaves one too).
    async fn complete_unknown(&self, connection: &Connection, operation_id: &str) -> Result<()> {
        if operation_id.chars().count() > self.limits.max_operation_id {
            return Ok(());
        }
        let now_ms = self.clock.now().timestamp_millis();
        let stale = |at_ms: i64| now_ms - at_ms >= COMPLETED_EARLY_FOR.as_millis() as i64;
        let mut fresh = 0;
        for (id, value) in &connection.operations {
            match streamer_core::completed_early_at(value) {
                Some(at_ms) if stale(at_ms) => {
                    self.store.remove_operation(&connection.id, id).await?;
                }
                Some(_) => fresh += 1,
                None => {}
            }
        }
        if fresh >= MAX_COMPLETED_EARLY {
            return Ok(());
        }
        let mark = streamer_core::completed_early_mark(now_ms);
        match self
            .store
            .add_operation(&connection.id, operation_id, &mark)
            .await
        {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(Error::Conflict(_)) => {
                // Stored meanwhile (or marked by another `complete`): read it again.
                match self.store.get_connection(&connection.id).await? {
                    Some(current) if current.subscriptions().any(|(id, _)| id == operation_id) => {
                        self.unsubscribe(&current, operation_id).await
                    }
                    _ => Ok(()),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Starts `subscription` ([`Store::open_subscription`]). `Ok(false)` when the client
    /// completed its operation before this subscribe was handled (the mark is taken away,
    /// nothing is stored); a mark older than [`COMPLETED_EARLY_FOR`] is stale and replaced.
    async fn open(&self, subscription: &Subscription) -> Result<bool> {
        let key = &subscription.key;
        for _ in 0..2 {
            match self.store.open_subscription(subscription).await {
                Ok(()) => return Ok(true),
                Err(Error::Conflict(conflict)) => {
                    let marked = self
                        .store
                        .get_connection(&key.connection_id)
                        .await?
                        .and_then(|c| c.operations.get(&key.operation_id).cloned())
                        .and_then(|value| streamer_core::completed_early_at(&value));
                    let Some(at_ms) = marked else {
                        return Err(Error::Conflict(conflict));
                    };
                    self.store
                        .remove_operation(&key.connection_id, &key.operation_id)
                        .await?;
                    let age = self.clock.now().timestamp_millis() - at_ms;
                    if age < COMPLETED_EARLY_FOR.as_millis() as i64 {
                        tracing::info!(connection_id = %key.connection_id, operation_id = ?key.operation_id, "not subscribed: completed before its subscribe was handled");
                        return Ok(false);
                    }
                }
                // Disconnected meanwhile: nothing to store, nobody to answer.
                Err(Error::NotFound(_)) => return Ok(false),
                Err(other) => return Err(other),
            }
        }
        Ok(false)
    }

    /// Ends an operation: its id first, then its subscription. In that order a subscribe of
    /// the same operation running at the same time (frames overlap on AWS) cannot keep its
    /// subscription: it stores the subscription and then reads the id back, so either it
    /// finds the id gone and deletes what it stored, or its store came before this delete.
    async fn unsubscribe(&self, connection: &Connection, operation_id: &str) -> Result<()> {
        if let Some(request_id) = connection.operations.get(operation_id) {
            let key = SubscriptionKey {
                request_id: request_id.clone(),
                connection_id: connection.id.clone(),
                operation_id: operation_id.to_owned(),
            };
            self.store
                .remove_operation(&connection.id, operation_id)
                .await?;
            self.store.delete_subscription(&key).await?;
        }
        Ok(())
    }

    /// Runs a `subscribe`: queries and mutations here and now; subscriptions are stored.
    async fn operation(
        &self,
        connection: &Connection,
        id: String,
        payload: SubscribePayload,
    ) -> Result<Option<Close>> {
        if let Err(exceeded) = LimitExceeded::check(
            "operationId",
            "the operation id length",
            id.chars().count(),
            self.limits.max_operation_id,
        ) {
            return self.refuse(&connection.id, id, &exceeded).await;
        }
        let operation_name = payload.operation_name.as_deref();
        let variables = payload.variables.as_ref();
        let document =
            match Document::prepare(&payload.query, operation_name, variables, &self.limits) {
                Ok(document) => document,
                Err(Refusal::Limit(exceeded)) => {
                    return self.refuse(&connection.id, id, &exceeded).await;
                }
                Err(Refusal::Syntax(error)) => {
                    let payload = errors_payload(&[error]);
                    self.post(&connection.id, &ServerMessage::Error { id, payload })
                        .await?;
                    return Ok(None);
                }
            };
        let mut request = document.request(&payload.query, operation_name, variables);
        if let Some(principal) = &connection.principal {
            request = request.data(principal.clone());
        }
        if document.kind() == Some(OperationKind::Subscription) {
            return self.subscribe(connection, id, payload, request).await;
        }
        let budget = Arc::new(ResultBudget::new(self.limits.max_message_bytes));
        let result = self.schema.execute(request.data(Arc::clone(&budget))).await;
        let messages = if let Some(exceeded) = budget.exceeded() {
            // Results stopped being built: the answer as a whole is over the limit.
            vec![ServerMessage::Error {
                id,
                payload: vec![exceeded.to_graphql()],
            }]
        } else if is_request_error(&result) {
            vec![ServerMessage::Error {
                id,
                payload: errors_payload(&result.errors),
            }]
        } else {
            match next_or_error(&id, &result, &self.limits) {
                next @ ServerMessage::Next { .. } => vec![next, ServerMessage::Complete { id }],
                error => vec![error],
            }
        };
        for message in &messages {
            match self.post(&connection.id, message).await {
                Err(Error::Gone(_)) => {
                    prune_connection(&*self.store, &connection.id).await?;
                    return Ok(None);
                }
                other => other?,
            }
        }
        Ok(None)
    }

    /// Stores a subscription, then reads the request and pushes its current state: a change
    /// written after the read is pushed by the processor, which finds the subscription
    /// already stored, so none is missed.
    async fn subscribe(
        &self,
        connection: &Connection,
        id: String,
        payload: SubscribePayload,
        request: async_graphql::Request,
    ) -> Result<Option<Close>> {
        let target = match execute::validate_subscription(&self.schema, request).await {
            Ok(target) => target,
            Err(errors) => {
                self.post(
                    &connection.id,
                    &ServerMessage::Error {
                        id,
                        payload: errors_payload(&errors),
                    },
                )
                .await?;
                return Ok(None);
            }
        };
        if let Err(exceeded) = LimitExceeded::check(
            "subscriptions",
            "the number of active subscriptions",
            connection.subscriptions().count() + 1,
            self.limits.max_subscriptions,
        ) {
            return self.refuse(&connection.id, id, &exceeded).await;
        }
        let subscription = Subscription {
            key: SubscriptionKey {
                request_id: target.request_id.clone(),
                connection_id: connection.id.clone(),
                operation_id: id.clone(),
            },
            query: payload.query,
            operation_name: payload.operation_name,
            variables: payload.variables.map(Value::Object),
            last_version: target.after_version.unwrap_or(0),
            created_at: self.clock.now(),
            expires_at: connection.expires_at,
            // A subscription starts held: the processor waits while its snapshot, or the
            // states a resume missed, go out, in order, before anything newer.
            pushing_until: Some(
                self.clock.now().timestamp_millis() + streamer_schema::PUSH_HOLD_MS,
            ),
            principal: connection.principal.clone(),
        };
        // Stored with its operation in one write: a `complete` for this id or the
        // `$disconnect` (on AWS a connection's frames are invocations that may overlap)
        // either ran before, and this finds its mark or no connection, or finds the
        // operation and ends the subscription.
        match self.open(&subscription).await {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            // A concurrent subscribe with the same id won.
            Err(Error::Conflict(_)) => return Ok(Some(Close::subscriber_exists(&id))),
            Err(other) => return Err(other),
        }
        // The request is read after the subscription is stored: a change written after this
        // read finds the subscription, held until the snapshot is out. Another tenant's
        // request is answered exactly as an unknown one; until then, the hold keeps anything
        // from being pushed to the subscription.
        let state = self
            .store
            .get_request(&target.request_id)
            .await?
            .filter(|request| {
                connection
                    .principal
                    .as_ref()
                    .is_some_and(|principal| self.access.allows(principal, request))
            });
        let Some(state) = state else {
            self.store.delete_subscription(&subscription.key).await?;
            self.store.remove_operation(&connection.id, &id).await?;
            self.post(&connection.id, &not_found(id, &target.request_id))
                .await?;
            return Ok(None);
        };
        tracing::info!(connection_id = %connection.id, operation_id = ?id, request_id = ?target.request_id, "subscribed");
        metrics::counter!(metric::SUBSCRIPTIONS_STARTED).increment(1);
        if let Some(after) = target.after_version {
            self.resume(&subscription, after).await?;
        } else {
            self.pusher()
                .snapshot(&subscription, &Arc::new(state))
                .await?;
        }
        Ok(None)
    }

    /// Pushes what a subscription that resumes after `after` missed: the kept states from
    /// `after + 1` on, as long as they follow one another (a later one is still on its way
    /// through the processor, which pushes it), then releases the subscription it holds.
    async fn resume(&self, subscription: &Subscription, after: u64) -> Result<()> {
        const PAGE: usize = 100;
        let key = &subscription.key;
        let mut last = after;
        let mut terminal = None;
        'pages: loop {
            let missed = self
                .store
                .request_history(&key.request_id, last, PAGE)
                .await?;
            let full = missed.len() == PAGE;
            for state in missed {
                let state = Arc::new(state);
                if state.version != last + 1 {
                    break 'pages;
                }
                let posted = self.pusher().post_held(subscription, &state).await?;
                if matches!(posted, Delivery::Gone | Delivery::TooLarge) {
                    return Ok(());
                }
                last = state.version;
                if state.status.is_terminal() {
                    terminal = Some(state);
                    break 'pages;
                }
            }
            if !full {
                break;
            }
        }
        self.store.release_push(key, last).await?;
        if terminal.is_none() {
            // Resuming at the end of a finished request: nothing more to see, only `complete`.
            terminal = self
                .store
                .get_request(&key.request_id)
                .await?
                .filter(|current| current.status.is_terminal() && current.version <= last)
                .map(Arc::new);
        }
        if let Some(state) = terminal {
            // Already pushed: this only ends the subscription with `complete`.
            self.pusher()
                .deliver(&subscription.released(last), &state)
                .await?;
        }
        Ok(())
    }

    /// GraphQL over HTTP (`POST /graphql`): queries and mutations; subscriptions need the
    /// socket. `authorization` is the request's `Authorization` header. Returns the status
    /// code and the JSON body. The caller is authenticated before anything is read of the
    /// body, the body and the answer are held to the message size limit, and the document to
    /// the document limits, as on the socket.
    ///
    /// The body must be sent as `application/json`: a web page can post any other type to
    /// a developer's local server without a preflight, so accepting it would let any page
    /// enqueue or cancel jobs there (415 otherwise).
    pub async fn execute_http(
        &self,
        body: &[u8],
        authorization: Option<&str>,
        content_type: Option<&str>,
    ) -> (u16, String) {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct HttpRequest {
            query: String,
            operation_name: Option<String>,
            variables: Option<serde_json::Map<String, Value>>,
        }
        let errors = |status: u16, error: Value| {
            (status, serde_json::json!({ "errors": [error] }).to_string())
        };
        let message = |text: String| serde_json::json!({ "message": text });
        let json = content_type
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            let text = "the body must be sent as application/json".to_owned();
            return errors(415, message(text));
        }
        if let Err(exceeded) = LimitExceeded::check(
            "messageBytes",
            "the request body size in bytes",
            body.len(),
            self.limits.max_message_bytes,
        ) {
            return errors(413, exceeded.to_graphql());
        }
        let credentials = Credentials {
            token: authorization.and_then(Credentials::bearer),
            ..Credentials::default()
        };
        let principal = match self.authenticate("http", &credentials).await {
            Ok(principal) => principal,
            Err(error) => {
                let error = serde_json::json!({
                    "message": error.to_string(),
                    "extensions": { "code": "UNAUTHENTICATED" },
                });
                return errors(401, error);
            }
        };
        let request: HttpRequest = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(error) => {
                let text = format!("the body must be a JSON GraphQL request: {error}");
                return errors(400, message(text));
            }
        };
        let operation_name = request.operation_name.as_deref();
        let variables = request.variables.as_ref();
        let document =
            match Document::prepare(&request.query, operation_name, variables, &self.limits) {
                Ok(document) => document,
                Err(Refusal::Limit(exceeded)) => return errors(400, exceeded.to_graphql()),
                Err(Refusal::Syntax(error)) => {
                    let payload = errors_payload(&[error]);
                    return (400, serde_json::json!({ "errors": payload }).to_string());
                }
            };
        if document.kind() == Some(OperationKind::Subscription) {
            let text = "subscriptions need the WebSocket endpoint (graphql-transport-ws)";
            return errors(400, message(text.to_owned()));
        }
        let budget = Arc::new(ResultBudget::new(self.limits.max_message_bytes));
        let request = document
            .request(&request.query, operation_name, variables)
            .data(principal)
            .data(Arc::clone(&budget));
        let mut result = self.schema.execute(request).await;
        if let Some(exceeded) = budget.exceeded() {
            return errors(200, exceeded.to_graphql());
        }
        if result.errors.len() > MAX_ERRORS {
            result.errors.truncate(MAX_ERRORS);
        }
        let text = serde_json::to_string(&result).unwrap_or_default();
        match LimitExceeded::check(
            "messageBytes",
            "the result size in bytes",
            text.len(),
            self.limits.max_message_bytes,
        ) {
            Ok(()) => (200, text),
            Err(exceeded) => errors(200, exceeded.to_graphql()),
        }
    }
}
