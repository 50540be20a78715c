//! The API Gateway WebSocket event, nearly every field optional, parsed once into a strict
//! [`WsEvent`].

use std::collections::BTreeMap;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine;
use chrono::{DateTime, Utc};
use streamer_core::Credentials;

/// The query parameter that may carry a bearer token on `$connect`.
pub const AUTHORIZATION_PARAMETER: &str = "authorization";

/// One WebSocket event of API Gateway, strictly typed.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    /// `$connect`: the handshake, before the socket is open.
    Connect {
        /// The connection id.
        connection_id: String,
        /// The subprotocols the client offered, in order.
        protocols: Vec<String>,
        /// The query string, without credentials.
        query: BTreeMap<String, String>,
        /// When the connection was opened.
        connected_at: DateTime<Utc>,
        /// What the handshake presented: a bearer token (`Authorization` header or
        /// `authorization` query parameter) and the Lambda authorizer's context.
        credentials: Credentials,
    },
    /// `$default`: one frame from the client.
    Message {
        /// The connection id.
        connection_id: String,
        /// The frame text.
        body: String,
    },
    /// `$disconnect`: the socket is closed (best effort: not always delivered).
    Disconnect {
        /// The connection id.
        connection_id: String,
        /// The close code, when API Gateway knows it.
        status_code: Option<i64>,
        /// The close reason, when API Gateway knows it.
        reason: Option<String>,
    },
}

impl WsEvent {
    /// The connection the event is about.
    pub fn connection_id(&self) -> &str {
        match self {
            Self::Connect { connection_id, .. }
            | Self::Message { connection_id, .. }
            | Self::Disconnect { connection_id, .. } => connection_id,
        }
    }
}

/// Why an event could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed WebSocket event: {0}")]
pub struct MalformedEvent(pub &'static str);

/// Splits a `Sec-WebSocket-Protocol` header on commas and trims each entry (browsers send
/// `"a, b"`; AWS's own sample forgets to trim).
pub fn offered_protocols(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

impl TryFrom<ApiGatewayWebsocketProxyRequest> for WsEvent {
    type Error = MalformedEvent;

    fn try_from(event: ApiGatewayWebsocketProxyRequest) -> Result<Self, Self::Error> {
        let context = event.request_context;
        let connection_id = context
            .connection_id
            .ok_or(MalformedEvent("no requestContext.connectionId"))?;
        let kind = context
            .event_type
            .as_deref()
            .or(context.route_key.as_deref());
        match kind {
            Some("CONNECT" | "$connect") => {
                let protocols = event
                    .headers
                    .get_all("sec-websocket-protocol")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(offered_protocols)
                    .collect();
                let mut query: BTreeMap<String, String> = event
                    .query_string_parameters
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                // Browsers cannot set headers on a WebSocket handshake: the query string is
                // the other place for a token. It is taken out, never stored.
                let token = event
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| query.remove(AUTHORIZATION_PARAMETER))
                    .and_then(|value| Credentials::bearer(&value));
                query.remove(AUTHORIZATION_PARAMETER);
                let authorizer = context
                    .authorizer
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let credentials = Credentials { token, authorizer };
                let connected_at =
                    DateTime::from_timestamp_millis(context.connected_at).unwrap_or_default();
                Ok(Self::Connect {
                    connection_id,
                    protocols,
                    query,
                    connected_at,
                    credentials,
                })
            }
            Some("DISCONNECT" | "$disconnect") => Ok(Self::Disconnect {
                connection_id,
                status_code: context.disconnect_status_code,
                reason: context.disconnect_reason,
            }),
            Some(_) => {
                let body = event.body.unwrap_or_default();
                let body = if event.is_base64_encoded {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .map_err(|_| MalformedEvent("body is not valid base64"))?;
                    // A binary frame is not a protocol message; its text (if any) will fail
                    // to parse and close with 4400, as the protocol asks.
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    body
                };
                Ok(Self::Message {
                    connection_id,
                    body,
                })
            }
            None => Err(MalformedEvent("no requestContext.eventType or routeKey")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_split_and_trimmed() {
        assert_eq!(
            offered_protocols("graphql-ws, graphql-transport-ws"),
            ["graphql-ws", "graphql-transport-ws"]
        );
        assert_eq!(offered_protocols(" a ,,b"), ["a", "b"]);
        assert!(offered_protocols("").is_empty());
    }
}
