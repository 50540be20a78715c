//! Socket happenings turned into the API Gateway WebSocket events a Lambda receives, so the
//! local server calls the gateway exactly as API Gateway would.

use std::collections::HashMap;

use aws_lambda_events::apigw::{
    ApiGatewayWebsocketProxyRequest, ApiGatewayWebsocketProxyRequestContext,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use http::HeaderMap;

fn context(
    connection_id: &str,
    route_key: &str,
    event_type: &str,
    connected_at: DateTime<Utc>,
) -> ApiGatewayWebsocketProxyRequestContext {
    let now = Utc::now();
    let mut context = ApiGatewayWebsocketProxyRequestContext::default();
    context.connection_id = Some(connection_id.to_owned());
    context.route_key = Some(route_key.to_owned());
    context.event_type = Some(event_type.to_owned());
    context.connected_at = connected_at.timestamp_millis();
    context.request_time_epoch = now.timestamp_millis();
    context.stage = Some("local".to_owned());
    context.apiid = Some("local".to_owned());
    context.domain_name = Some("localhost".to_owned());
    context.message_direction = Some("IN".to_owned());
    context.request_id = Some(uuid_like(now));
    context
}

// Request ids only need to be unique enough to tell log lines apart.
fn uuid_like(now: DateTime<Utc>) -> String {
    format!("local-{}", now.timestamp_nanos_opt().unwrap_or_default())
}

/// The `$connect` event of a handshake.
pub(crate) fn connect(
    connection_id: &str,
    headers: HeaderMap,
    query: HashMap<String, String>,
    connected_at: DateTime<Utc>,
) -> ApiGatewayWebsocketProxyRequest {
    let mut event = ApiGatewayWebsocketProxyRequest::default();
    event.headers = headers;
    event.query_string_parameters = query.into();
    event.request_context = context(connection_id, "$connect", "CONNECT", connected_at);
    event
}

/// The `$default` event of one frame; binary frames are base64-encoded, as API Gateway does.
pub(crate) fn message(
    connection_id: &str,
    frame: Frame<'_>,
    connected_at: DateTime<Utc>,
) -> ApiGatewayWebsocketProxyRequest {
    let mut event = ApiGatewayWebsocketProxyRequest::default();
    let (body, encoded) = match frame {
        Frame::Text(text) => (text.to_owned(), false),
        Frame::Binary(bytes) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            true,
        ),
    };
    event.body = Some(body);
    event.is_base64_encoded = encoded;
    event.request_context = context(connection_id, "$default", "MESSAGE", connected_at);
    event
}

/// The `$disconnect` event of a closed socket.
pub(crate) fn disconnect(
    connection_id: &str,
    status_code: Option<u16>,
    reason: Option<String>,
    connected_at: DateTime<Utc>,
) -> ApiGatewayWebsocketProxyRequest {
    let mut event = ApiGatewayWebsocketProxyRequest::default();
    let mut context = context(connection_id, "$disconnect", "DISCONNECT", connected_at);
    context.disconnect_status_code = status_code.map(i64::from);
    context.disconnect_reason = reason;
    event.request_context = context;
    event
}

/// One frame from a client.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Frame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}
