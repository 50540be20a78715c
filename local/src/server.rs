//! A WebSocket server that behaves like API Gateway: it assigns connection ids, turns socket
//! events into the API Gateway events the gateway Lambda receives, answers the handshake with
//! the subprotocol `$connect` returned (and refuses it when `$connect` refuses), sends real
//! close frames, and serves the Management API (`/@connections/{id}`) over HTTP. It also
//! serves `POST /graphql`, GraphiQL at `GET /` and the run dashboard at `GET /dashboard`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::SplitStream;
use streamer_core::IdGenerator;
use streamer_gateway::Gateway;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::events::{self, Frame};
use crate::listener::{GuardedListener, Peer};
use crate::sigv4::ManagementCredentials;
use crate::sockets::{Outbox, Outgoing, Socket, Sockets};

/// The timers of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A connection that has not sent `connection_init` by then is closed with 4408 (the
    /// reference server's default: 3 s).
    pub init: Duration,
    /// A connection the client sent nothing on for this long is closed with 1001, as API
    /// Gateway closes idle connections (10 minutes).
    pub idle: Duration,
    /// Every connection is closed with 1001 after this long, as API Gateway does (2 hours).
    pub lifetime: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            init: Duration::from_secs(3),
            idle: Duration::from_secs(10 * 60),
            lifetime: streamer_core::MAX_CONNECTION_LIFETIME
                .to_std()
                .expect("a positive duration"),
        }
    }
}

/// What the server takes from clients, as API Gateway limits it; each can be changed, for
/// tests or to be stricter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketLimits {
    /// Largest frame from a client: 32 KiB, API Gateway's. A larger one closes the connection
    /// with 1009.
    pub frame_bytes: usize,
    /// Largest message from a client, its frames together: 128 KiB, API Gateway's (1009).
    pub message_bytes: usize,
    /// Most bytes waiting for a client that does not read: 4 MiB. A socket over it for
    /// [`SocketLimits::queue_grace`], or over eight times it at all, is closed with 1008.
    pub queue_bytes: usize,
    /// How long a socket may stay over [`SocketLimits::queue_bytes`]: 10 s.
    pub queue_grace: Duration,
    /// How long a client has to send its request head (the handshake): 5 s.
    pub handshake_timeout: Duration,
    /// Most connections in their handshake at once: 256; more are dropped at once.
    pub pending_handshakes: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            frame_bytes: 32 * 1024,
            message_bytes: 128 * 1024,
            queue_bytes: 4 * 1024 * 1024,
            queue_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            pending_handshakes: 256,
        }
    }
}

/// What the server needs: the gateway to call, the sockets it shares with [`crate::LocalSender`],
/// where connection ids come from, and the connections' timers.
#[derive(Debug, Clone)]
pub struct Server {
    gateway: Gateway,
    sockets: Sockets,
    connection_ids: Arc<dyn IdGenerator>,
    timeouts: Timeouts,
    limits: SocketLimits,
    /// The credentials a Management API call must be signed with; `None` takes any.
    management_credentials: Option<Arc<ManagementCredentials>>,
    /// The share of Management API calls that fail (a 500, or a hang), as a faulty stage may.
    management_faults: f64,
    /// How long the Management API takes over each post and delete before it acts.
    management_latency: Duration,
    /// Each frame of a connection handled as soon as it arrives, not after the one before.
    concurrent_frames: bool,
}

impl Server {
    /// A server calling `gateway`, whose sender must post to `sockets`.
    pub fn new(gateway: Gateway, sockets: Sockets, connection_ids: Arc<dyn IdGenerator>) -> Self {
        Self {
            gateway,
            sockets,
            connection_ids,
            timeouts: Timeouts::default(),
            limits: SocketLimits::default(),
            management_credentials: None,
            management_faults: 0.0,
            management_latency: Duration::ZERO,
            concurrent_frames: false,
        }
    }

    /// The gateway frames and requests are handed to.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The gateway posts through `sender` (the stack's, once it knows the server's address).
    pub(crate) fn with_gateway_sender(mut self, sender: Arc<dyn streamer_core::Sender>) -> Self {
        self.gateway = self.gateway.with_sender(sender);
        self
    }

    /// Hands each frame of a connection to the gateway as soon as it arrives, without
    /// waiting for the one before, and the `$disconnect` without waiting for them: on AWS
    /// each frame is its own Lambda invocation, and they may overlap. For tests; off by
    /// default (frames one at a time, in order).
    pub fn with_concurrent_frames(mut self, concurrent: bool) -> Self {
        self.concurrent_frames = concurrent;
        self
    }

    /// Fails `rate` (0.0 to 1.0) of the Management API's posts and deletes, at random, as
    /// API Gateway sometimes does: half of them with a 500 `InternalServerErrorException`,
    /// half by hanging for 2 s and then answering 504. Neither delivers the frame. For fault
    /// injection; 0 by default.
    pub fn with_management_faults(mut self, rate: f64) -> Self {
        self.management_faults = rate.clamp(0.0, 1.0);
        self
    }

    /// Makes every Management API post and delete take `latency` before it acts, as calls
    /// to API Gateway from a Lambda function take milliseconds each: for measuring what a
    /// large fan-out costs in time. None by default.
    pub fn with_management_latency(mut self, latency: Duration) -> Self {
        self.management_latency = latency;
        self
    }

    /// The Management API answers only calls signed (SigV4) with `credentials`, as API
    /// Gateway answers only calls its IAM allows: a client that learns a connection id
    /// cannot read, post to or close another's connection.
    pub fn with_management_credentials(mut self, credentials: ManagementCredentials) -> Self {
        self.management_credentials = Some(Arc::new(credentials));
        self
    }

    /// With these limits on what clients send instead of API Gateway's.
    pub fn with_socket_limits(mut self, limits: SocketLimits) -> Self {
        self.limits = limits;
        self
    }

    /// With these timers instead of API Gateway's.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The HTTP routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/dashboard", get(page))
            .route("/assets/{*path}", get(page))
            .route("/graphql", get(upgrade).post(graphql))
            .route("/stats", get(stats))
            .fallback(management)
            .with_state(self)
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = GuardedListener::new(
            listener,
            self.limits.pending_handshakes,
            self.limits.handshake_timeout,
        );
        let app = self
            .router()
            .layer(axum::extract::DefaultBodyLimit::max(HTTP_BODY_BYTES))
            .into_make_service_with_connect_info::<Peer>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// `GET /stats`: the cloud API calls this process has made, by service and operation
/// (`{"awsCalls": {"DynamoDB.PutItem": 12, …}}`), for the load generator's cost per job.
async fn stats() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "awsCalls": streamer_core::calls::snapshot() }))
}

/// GraphiQL (`/`), the dashboard (`/dashboard`) and their assets, from the binary
/// (`streamer_gateway::pages`).
async fn page(uri: axum::http::Uri) -> Response {
    match streamer_gateway::pages::page(uri.path(), None) {
        Some(page) => {
            // The assets are the binary's own bytes: served without a copy.
            let body = match page.body {
                std::borrow::Cow::Borrowed(bytes) => axum::body::Body::from(bytes),
                std::borrow::Cow::Owned(bytes) => axum::body::Body::from(bytes),
            };
            (
                [(axum::http::header::CONTENT_TYPE, page.content_type)],
                body,
            )
                .into_response()
        }
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// The largest HTTP body read (`POST /graphql`, the Management API): the gateway refuses
/// anything over the message size limit, and the Management API anything over 128 KB, so
/// a body is never read whole past this.
const HTTP_BODY_BYTES: usize = 256 * 1024;

/// The read buffer of a client socket; a larger frame still arrives, in several reads.
const SOCKET_READ_BUFFER: usize = 4 * 1024;

/// Frames written to a socket are sent at the next flush, or once this much is waiting.
const SOCKET_WRITE_BUFFER: usize = 16 * 1024;

async fn graphql(State(server): State<Server>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let (status, body) = server
        .gateway
        .execute_http(&body, authorization, content_type)
        .await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn upgrade(
    State(server): State<Server>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let connection_id = server.connection_ids.next_id();
    let connected_at = Utc::now();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = server
        .gateway
        .handle(events::connect(
            &connection_id,
            headers,
            query,
            connected_at,
        ))
        .await;
    if answer.status_code != 200 {
        // `$connect` refused: the handshake fails with its status, as on API Gateway.
        let status = u16::try_from(answer.status_code)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok());
        return status.unwrap_or(StatusCode::FORBIDDEN).into_response();
    }
    let protocol = answer
        .headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ws = match protocol {
        Some(protocol) => ws.protocols([protocol]),
        None => ws,
    };
    // Protocol frames are small: a 128 KiB read buffer per socket (the default) would make
    // 10,000 idle connections cost over a gigabyte. Frames are flushed as soon as their
    // sender yields (see `Outbox`), so writes are buffered only until then.
    let ws = ws
        .read_buffer_size(SOCKET_READ_BUFFER)
        .write_buffer_size(SOCKET_WRITE_BUFFER)
        .max_frame_size(server.limits.frame_bytes)
        .max_message_size(server.limits.message_bytes);
    ws.on_upgrade(move |socket| {
        let (sink, stream) = socket.split();
        let outbox = Arc::new(Outbox::new(
            sink,
            server.limits.queue_bytes,
            server.limits.queue_grace,
        ));
        let entry = Socket {
            outbox: Arc::clone(&outbox),
            connected_at,
            last_active_at: crate::sockets::epoch_nanos(connected_at).into(),
            source_ip: peer.ip().to_string(),
            user_agent,
        };
        server.sockets.insert(connection_id.clone(), entry);
        serve_socket(server, connection_id, connected_at, stream, outbox)
    })
}

/// Frames in go to the gateway one at a time, in order, as `$default` events (or all at once,
/// [`Server::with_concurrent_frames`]); frames out go
/// through the socket's [`Outbox`]. A close from the server ends both, and so do the timers:
/// no `connection_init` in time (4408), nothing from the client for the idle timeout, or the
/// connection's lifetime over (1001, as API Gateway).
async fn serve_socket(
    server: Server,
    connection_id: String,
    connected_at: chrono::DateTime<Utc>,
    mut stream: SplitStream<WebSocket>,
    outbox: Arc<Outbox>,
) {
    let (closed_tx, mut closed_rx) = oneshot::channel::<(u16, String)>();
    let writer = {
        let outbox = Arc::clone(&outbox);
        tokio::spawn(async move { outbox.write(closed_tx).await })
    };
    let timeouts = server.timeouts;
    let init = tokio::time::sleep(timeouts.init);
    tokio::pin!(init);
    let mut init_pending = true;
    let lifetime = tokio::time::sleep(timeouts.lifetime);
    tokio::pin!(lifetime);
    let idle = tokio::time::sleep(timeouts.idle);
    tokio::pin!(idle);
    let (status_code, reason) = loop {
        tokio::select! {
            () = &mut init, if init_pending => {
                init_pending = false;
                if let Err(error) = server.gateway.close_if_uninitialised(&connection_id).await {
                    tracing::error!(%connection_id, error = ?error.to_string(), "init timeout");
                }
            }
            () = &mut idle => {
                let _ = server.sockets.send(&connection_id, Outgoing::Close(going_away()));
                idle.as_mut().reset(tokio::time::Instant::now() + timeouts.lifetime);
            }
            () = &mut lifetime => {
                let _ = server.sockets.send(&connection_id, Outgoing::Close(going_away()));
                lifetime.as_mut().reset(tokio::time::Instant::now() + timeouts.lifetime);
            }
            closed = &mut closed_rx => {
                let (code, reason) = closed.unwrap_or((1006, String::new()));
                break (Some(code), Some(reason));
            }
            incoming = stream.next() => {
                let frame = match &incoming {
                    Some(Ok(Message::Text(text))) => Frame::Text(text.as_str()),
                    Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes),
                    // Control-frame pings are answered by the WebSocket layer.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(frame))) => {
                        break (frame.as_ref().map(|f| f.code), frame.as_ref().map(|f| f.reason.to_string()));
                    }
                    Some(Err(error)) => match refusal(error) {
                        // A frame API Gateway would refuse: closed with the code it would use.
                        Some(close) => {
                            tracing::info!(%connection_id, code = close.code, "closing: bad frame");
                            let _ = server.sockets.send(&connection_id, Outgoing::Close(close.clone()));
                            let _ = tokio::time::timeout(Duration::from_secs(1), &mut closed_rx).await;
                            break (Some(close.code), Some(close.reason));
                        }
                        None => break (Some(1006), None),
                    },
                    None => break (Some(1006), None),
                };
                server.sockets.touch(&connection_id, Utc::now());
                idle.as_mut().reset(tokio::time::Instant::now() + timeouts.idle);
                let event = events::message(&connection_id, frame, connected_at);
                if server.concurrent_frames {
                    let gateway = server.gateway.clone();
                    tokio::spawn(async move { gateway.handle(event).await });
                } else {
                    server.gateway.handle(event).await;
                }
            }
        }
    };
    server.sockets.remove(&connection_id);
    outbox.finish();
    let disconnect = events::disconnect(&connection_id, status_code, reason, connected_at);
    // With concurrent frames the `$disconnect` does not wait for the socket's last frames
    // out either, so that it overlaps the frames still being handled.
    let disconnected = server.concurrent_frames.then(|| {
        let gateway = server.gateway.clone();
        let event = disconnect.clone();
        tokio::spawn(async move { gateway.handle(event).await })
    });
    if tokio::time::timeout(std::time::Duration::from_secs(1), writer)
        .await
        .is_err()
    {
        tracing::debug!(%connection_id, "writer did not finish in time");
    }
    if disconnected.is_none() {
        server.gateway.handle(disconnect).await;
    }
}

/// The close for a frame the socket refused to read: 1009 for one over the size limits, 1007
/// for a text frame that is not UTF-8; `None` when the socket itself failed.
fn refusal(error: &axum::Error) -> Option<streamer_core::protocol::Close> {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(error) = source {
        if let Some(error) = error.downcast_ref::<WsError>() {
            let (code, reason) = match error {
                WsError::Capacity(_) => (1009, "Message too big"),
                WsError::Utf8(_) => (1007, "Invalid frame payload data"),
                _ => return None,
            };
            return Some(streamer_core::protocol::Close {
                code,
                reason: reason.to_owned(),
            });
        }
        source = error.source();
    }
    None
}

/// How API Gateway closes an idle or too old connection.
fn going_away() -> streamer_core::protocol::Close {
    streamer_core::protocol::Close {
        code: 1001,
        reason: "Going away".into(),
    }
}

/// How long a Management API call that faults by hanging hangs.
const MANAGEMENT_FAULT_HANG: Duration = Duration::from_secs(2);

/// The largest frame `PostToConnection` takes, as on API Gateway (128 KB).
const MAX_POST_BYTES: usize = 128 * 1024;

/// The Management API: `POST`, `GET` and `DELETE /@connections/{id}` (the SDK percent-encodes
/// the `@`, so the path is matched here rather than by the router).
async fn management(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(credentials) = &server.management_credentials
        && let Err(refused) =
            crate::sigv4::verify(credentials, &method, &uri, &headers, &body, Utc::now())
    {
        tracing::warn!(error = %refused, "Management API call refused");
        // As API Gateway answers a call IAM does not allow; the connection id is not echoed.
        let body = serde_json::json!({ "message": "Forbidden" });
        return (
            StatusCode::FORBIDDEN,
            [
                ("x-amzn-errortype", "ForbiddenException"),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
            .into_response();
    }
    let path = uri
        .path()
        .replace("%40", "@")
        .replace("%3D", "=")
        .replace("%3d", "=");
    let Some(connection_id) = path
        .strip_prefix("/@connections/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let gone = || {
        let body = serde_json::json!({ "message": format!("The connection with the provided id {connection_id} no longer exists") });
        (
            StatusCode::GONE,
            [
                ("x-amzn-errortype", "GoneException"),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
            .into_response()
    };
    if matches!(method, Method::POST | Method::DELETE) && !server.management_latency.is_zero() {
        tokio::time::sleep(server.management_latency).await;
    }
    if matches!(method, Method::POST | Method::DELETE)
        && server.management_faults > 0.0
        && rand::random::<f64>() < server.management_faults
    {
        // Half the faults are a 500 at once, half a call that hangs and then times out
        // (a caller waiting less has long given up); neither delivers anything.
        if rand::random::<bool>() {
            tokio::time::sleep(MANAGEMENT_FAULT_HANG).await;
            let body = serde_json::json!({ "message": "Endpoint request timed out" });
            return (
                StatusCode::GATEWAY_TIMEOUT,
                [("content-type", "application/json")],
                body.to_string(),
            )
                .into_response();
        }
        let body = serde_json::json!({ "message": "Internal server error" });
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [
                ("x-amzn-errortype", "InternalServerErrorException"),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
            .into_response();
    }
    match method {
        Method::POST if body.len() > MAX_POST_BYTES => (
            StatusCode::PAYLOAD_TOO_LARGE,
            [
                ("x-amzn-errortype", "PayloadTooLargeException"),
                ("content-type", "application/json"),
            ],
            serde_json::json!({ "message": format!("Message size {} exceeds the limit of {MAX_POST_BYTES} bytes", body.len()) }).to_string(),
        )
            .into_response(),
        Method::POST => {
            let Ok(text) = String::from_utf8(body.to_vec()) else {
                return (StatusCode::BAD_REQUEST, "the data must be UTF-8 text").into_response();
            };
            match server.sockets.send(connection_id, Outgoing::Text(text)) {
                Ok(()) => StatusCode::OK.into_response(),
                Err(_) => gone(),
            }
        }
        Method::GET => match server.sockets.describe(connection_id) {
            Some(description) => (
                [("content-type", "application/json")],
                description.to_string(),
            )
                .into_response(),
            None => gone(),
        },
        Method::DELETE => {
            // API Gateway cannot choose a close code either: a deleted connection closes 1000.
            let close = streamer_core::protocol::Close {
                code: 1000,
                reason: "Connection Closed Normally".into(),
            };
            match server.sockets.send(connection_id, Outgoing::Close(close)) {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(_) => gone(),
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}
