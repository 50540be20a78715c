//! graphql-transport-ws, sans-IO.
//!
//! In Lambda every frame is a separate invocation, so the protocol cannot live in a socket
//! loop (async-graphql's own transport assumes one). It is a pure function instead:
//! [`step`] takes the stored [`Session`] and one [`ClientMessage`] and returns the new session,
//! the messages to send, the effects for the caller to carry out, and whether to close.
//!
//! Parsing is strict and happens once, in [`ClientMessage::parse`]: an unknown type or a bad
//! shape closes the socket with 4400, as the reference implementation does.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The subprotocol this server speaks.
pub const SUBPROTOCOL: &str = "graphql-transport-ws";

/// A close code of the protocol, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Close {
    /// The WebSocket close code.
    pub code: u16,
    /// The reason, kept under the 123 bytes a close frame allows.
    pub reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 120 {
            let mut end = 120;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self { code, reason }
    }

    /// 4400: the message could not be understood.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(4400, reason)
    }
    /// 4401: `subscribe` before `connection_ack`.
    pub fn unauthorized() -> Self {
        Self::new(4401, "Unauthorized")
    }
    /// 4403: the connection was refused in `connection_init`.
    pub fn forbidden() -> Self {
        Self::new(4403, "Forbidden")
    }
    /// 4403: the tenant has as many connections as its quota allows.
    pub fn connection_quota() -> Self {
        Self::new(4403, "Forbidden: connection quota exceeded")
    }
    /// 4403: the connection's credentials expired.
    pub fn expired() -> Self {
        Self::new(4403, "Forbidden: token expired")
    }
    /// 4408: no `connection_init` in time.
    pub fn init_timeout() -> Self {
        Self::new(4408, "Connection initialisation timeout")
    }
    /// 4409: an operation id that is already active.
    pub fn subscriber_exists(id: &str) -> Self {
        Self::new(4409, format!("Subscriber for {id} already exists"))
    }
    /// 4429: a second `connection_init`.
    pub fn too_many_inits() -> Self {
        Self::new(4429, "Too many initialisation requests")
    }
    /// 4500: the server failed.
    pub fn internal() -> Self {
        Self::new(4500, "Internal server error")
    }
}

/// The payload of `subscribe`: a GraphQL request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribePayload {
    /// The document.
    pub query: String,
    /// The operation to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_name: Option<String>,
    /// Variables, an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Map<String, Value>>,
    /// Extensions, an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

/// A message from the client, strictly typed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `connection_init`.
    ConnectionInit {
        /// Optional object payload (credentials, typically).
        payload: Option<Map<String, Value>>,
    },
    /// `ping`.
    Ping {
        /// Optional object payload, echoed in the `pong`.
        payload: Option<Map<String, Value>>,
    },
    /// `pong`.
    Pong {
        /// Optional object payload.
        payload: Option<Map<String, Value>>,
    },
    /// `subscribe`: start an operation.
    Subscribe {
        /// The operation id, unique among the active ones.
        id: String,
        /// The GraphQL request.
        payload: SubscribePayload,
    },
    /// `complete`: the client stops listening to an operation.
    Complete {
        /// The operation id.
        id: String,
    },
}

fn optional_object(
    message: &Map<String, Value>,
    kind: &str,
    field: &str,
) -> Result<Option<Map<String, Value>>, String> {
    match message.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object.clone())),
        Some(_) => Err(format!(
            "\"{kind}\" message expects the '{field}' property to be an object or nullish"
        )),
    }
}

fn required_id(message: &Map<String, Value>, kind: &str) -> Result<String, String> {
    match message.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        _ => Err(format!(
            "\"{kind}\" message requires a non-empty 'id' string"
        )),
    }
}

impl ClientMessage {
    /// Parses one text frame. The error is the 4400 close reason.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| "Message is not valid JSON".to_string())?;
        let Value::Object(message) = value else {
            return Err("Message must be a JSON object".into());
        };
        let Some(Value::String(kind)) = message.get("type") else {
            return Err("Message is missing the 'type' property".into());
        };
        match kind.as_str() {
            "connection_init" => Ok(Self::ConnectionInit {
                payload: optional_object(&message, kind, "payload")?,
            }),
            "ping" => Ok(Self::Ping {
                payload: optional_object(&message, kind, "payload")?,
            }),
            "pong" => Ok(Self::Pong {
                payload: optional_object(&message, kind, "payload")?,
            }),
            "complete" => Ok(Self::Complete {
                id: required_id(&message, kind)?,
            }),
            "subscribe" => {
                let id = required_id(&message, kind)?;
                let Some(Value::Object(payload)) = message.get("payload") else {
                    return Err(
                        "\"subscribe\" message expects the 'payload' property to be an object"
                            .into(),
                    );
                };
                let Some(Value::String(query)) = payload.get("query") else {
                    return Err(
                        "\"subscribe\" message payload expects the 'query' property to be a string"
                            .into(),
                    );
                };
                let operation_name = match payload.get("operationName") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(name)) => Some(name.clone()),
                    Some(_) => {
                        return Err("\"subscribe\" message payload expects 'operationName' to be a string or nullish".into());
                    }
                };
                let payload = SubscribePayload {
                    query: query.clone(),
                    operation_name,
                    variables: optional_object(payload, "subscribe", "variables")?,
                    extensions: optional_object(payload, "subscribe", "extensions")?,
                };
                Ok(Self::Subscribe { id, payload })
            }
            "connection_ack" | "next" | "error" => {
                Err(format!("Unexpected message of type {kind} received"))
            }
            other => Err(format!("Invalid message type \"{other}\"")),
        }
    }
}

/// A message to the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// `connection_ack`; the payload is omitted when there is none, as graphql-ws does.
    ConnectionAck {
        /// Optional payload.
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<Map<String, Value>>,
    },
    /// `ping`.
    Ping {
        /// Optional payload.
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<Map<String, Value>>,
    },
    /// `pong`, echoing the ping's payload.
    Pong {
        /// Optional payload.
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<Map<String, Value>>,
    },
    /// `next`: one execution result.
    Next {
        /// The operation id.
        id: String,
        /// `{data, errors?, extensions?}`.
        payload: Value,
    },
    /// `error`: the operation failed; no `complete` follows. Never empty.
    Error {
        /// The operation id.
        id: String,
        /// GraphQL formatted errors, at least one.
        payload: Vec<Value>,
    },
    /// `complete`: the operation is done.
    Complete {
        /// The operation id.
        id: String,
    },
}

impl ServerMessage {
    /// An `error` with one message.
    pub fn error(id: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Error {
            id: id.into(),
            payload: vec![serde_json::json!({ "message": message.into() })],
        }
    }

    /// The operation a frame answers, if it answers one.
    pub fn operation_id(&self) -> Option<&str> {
        match self {
            Self::Next { id, .. } | Self::Error { id, .. } | Self::Complete { id } => Some(id),
            _ => None,
        }
    }

    /// The frame text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// The text of a `next` frame whose payload is JSON text already: the text
/// [`ServerMessage::Next`] makes, without parsing and serializing the payload again.
pub fn next_text(id: &str, payload: &RawValue) -> String {
    #[derive(Serialize)]
    struct Next<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: &'a str,
        payload: &'a RawValue,
    }
    let next = Next {
        kind: "next",
        id,
        payload,
    };
    serde_json::to_string(&next).expect("server messages always serialize")
}

/// The protocol state of one connection, as stored between frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Whether `connection_init` was accepted.
    pub acknowledged: bool,
    /// Active operation ids.
    pub operations: BTreeSet<String>,
}

/// What the caller must do after a step, besides sending.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Persist the handshake (a conditional write: a concurrent second init loses → 4429).
    Initialise {
        /// The `connection_init` payload.
        payload: Option<Map<String, Value>>,
    },
    /// Run an operation: execute a query or mutation, or validate and store a subscription.
    Subscribe {
        /// The operation id.
        id: String,
        /// The request.
        payload: SubscribePayload,
    },
    /// Forget an active operation; nothing is sent back.
    Unsubscribe {
        /// The operation id.
        id: String,
    },
    /// A `complete` for an operation the session does not know: its `subscribe` may still be
    /// on its way (on AWS frames of one connection can run at once), or it already ended.
    /// Nothing is sent back.
    CompleteUnknown {
        /// The operation id.
        id: String,
    },
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// The session after the message.
    pub session: Session,
    /// Messages to send, in order.
    pub send: Vec<ServerMessage>,
    /// Effects for the caller, in order, before sending.
    pub effects: Vec<Effect>,
    /// Close the socket with this code after sending.
    pub close: Option<Close>,
}

impl Step {
    fn closing(session: &Session, close: Close) -> Self {
        Self {
            session: session.clone(),
            close: Some(close),
            ..Self::default()
        }
    }
}

/// One protocol step on a parsed message.
pub fn step(session: &Session, message: ClientMessage) -> Step {
    let mut next = session.clone();
    match message {
        ClientMessage::ConnectionInit { payload } => {
            if session.acknowledged {
                return Step::closing(session, Close::too_many_inits());
            }
            next.acknowledged = true;
            Step {
                session: next,
                send: vec![ServerMessage::ConnectionAck { payload: None }],
                effects: vec![Effect::Initialise { payload }],
                close: None,
            }
        }
        ClientMessage::Ping { payload } => Step {
            session: next,
            send: vec![ServerMessage::Pong { payload }],
            ..Step::default()
        },
        ClientMessage::Pong { .. } => Step {
            session: next,
            ..Step::default()
        },
        ClientMessage::Subscribe { id, payload } => {
            if !session.acknowledged {
                return Step::closing(session, Close::unauthorized());
            }
            if session.operations.contains(&id) {
                return Step::closing(session, Close::subscriber_exists(&id));
            }
            next.operations.insert(id.clone());
            Step {
                session: next,
                effects: vec![Effect::Subscribe { id, payload }],
                ..Step::default()
            }
        }
        ClientMessage::Complete { id } => {
            // A client `complete` is never echoed. Before `connection_init` nothing can be
            // running, and nothing is done for a client not yet authenticated.
            let effects = if next.operations.remove(&id) {
                vec![Effect::Unsubscribe { id }]
            } else if session.acknowledged {
                vec![Effect::CompleteUnknown { id }]
            } else {
                vec![]
            };
            Step {
                session: next,
                effects,
                ..Step::default()
            }
        }
    }
}

/// Parses one frame and steps: a frame that does not parse closes with 4400.
pub fn receive(session: &Session, text: &str) -> Step {
    match ClientMessage::parse(text) {
        Ok(message) => step(session, message),
        Err(reason) => Step::closing(session, Close::bad_request(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_from_payload_text_is_the_same_frame() {
        let payload =
            serde_json::json!({ "data": { "requestProgress": { "id": "r\"1", "progress": 0.5 } } });
        let raw = serde_json::value::to_raw_value(&payload).unwrap();
        let id = "op \"1\"";
        let next = ServerMessage::Next {
            id: id.into(),
            payload,
        };
        assert_eq!(next_text(id, &raw), next.to_text());
    }

    fn acked() -> Session {
        Session {
            acknowledged: true,
            operations: BTreeSet::new(),
        }
    }

    #[test]
    fn init_acks_once_and_a_second_init_closes_4429() {
        let first = receive(
            &Session::default(),
            r#"{"type":"connection_init","payload":{"token":"t"}}"#,
        );
        assert_eq!(
            first.send,
            vec![ServerMessage::ConnectionAck { payload: None }]
        );
        assert!(first.session.acknowledged);
        assert!(matches!(
            &first.effects[..],
            [Effect::Initialise { payload: Some(_) }]
        ));
        let second = receive(&first.session, r#"{"type":"connection_init"}"#);
        assert_eq!(second.close.map(|c| c.code), Some(4429));
        assert!(second.send.is_empty());
    }

    #[test]
    fn ping_is_answered_with_its_payload_at_any_time_and_pong_is_ignored() {
        let step = receive(&Session::default(), r#"{"type":"ping","payload":{"n":1}}"#);
        assert_eq!(
            step.send[0].to_text(),
            r#"{"type":"pong","payload":{"n":1}}"#
        );
        let step = receive(&Session::default(), r#"{"type":"pong"}"#);
        assert_eq!(step, Step::default());
    }

    #[test]
    fn subscribe_before_ack_closes_4401() {
        let step = receive(
            &Session::default(),
            r#"{"type":"subscribe","id":"1","payload":{"query":"{actions}"}}"#,
        );
        assert_eq!(step.close.map(|c| c.code), Some(4401));
        assert!(step.effects.is_empty());
    }

    #[test]
    fn duplicate_active_id_closes_4409_and_reuse_after_complete_is_fine() {
        let frame = r#"{"type":"subscribe","id":"op","payload":{"query":"{actions}"}}"#;
        let first = receive(&acked(), frame);
        assert!(matches!(&first.effects[..], [Effect::Subscribe { id, .. }] if id == "op"));
        let dup = receive(&first.session, frame);
        assert_eq!(
            dup.close,
            Some(Close {
                code: 4409,
                reason: "Subscriber for op already exists".into()
            })
        );
        let done = receive(&first.session, r#"{"type":"complete","id":"op"}"#);
        assert!(done.send.is_empty(), "a client complete is not echoed");
        assert_eq!(done.effects, vec![Effect::Unsubscribe { id: "op".into() }]);
        assert!(receive(&done.session, frame).close.is_none());
    }

    #[test]
    fn complete_for_an_unknown_id_sends_nothing_and_is_left_to_the_caller() {
        assert_eq!(
            receive(&acked(), r#"{"type":"complete","id":"nope"}"#),
            Step {
                session: acked(),
                effects: vec![Effect::CompleteUnknown { id: "nope".into() }],
                ..Step::default()
            }
        );
        // Before `connection_init`: nothing at all.
        assert_eq!(
            receive(&Session::default(), r#"{"type":"complete","id":"nope"}"#),
            Step {
                session: Session::default(),
                ..Step::default()
            }
        );
    }

    #[test]
    fn bad_frames_close_4400() {
        for frame in [
            "not json",
            "[]",
            r#"{"id":"1"}"#,
            r#"{"type":7}"#,
            r#"{"type":"unknown"}"#,
            r#"{"type":"next","id":"1","payload":{}}"#,
            r#"{"type":"connection_init","payload":"x"}"#,
            r#"{"type":"ping","payload":[1]}"#,
            r#"{"type":"subscribe","payload":{"query":"{a}"}}"#,
            r#"{"type":"subscribe","id":"","payload":{"query":"{a}"}}"#,
            r#"{"type":"subscribe","id":"1"}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":1}}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":"{a}","variables":[]}}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":"{a}","operationName":3}}"#,
            r#"{"type":"complete"}"#,
        ] {
            let step = receive(&acked(), frame);
            assert_eq!(step.close.as_ref().map(|c| c.code), Some(4400), "{frame}");
            assert!(step.close.unwrap().reason.len() < 124);
        }
    }

    #[test]
    fn nullish_optional_fields_are_accepted() {
        let step = receive(
            &acked(),
            r#"{"type":"subscribe","id":"1","payload":{"query":"{a}","operationName":null,"variables":null,"extensions":null}}"#,
        );
        assert!(step.close.is_none());
    }

    #[test]
    fn error_payload_is_never_empty() {
        let text = ServerMessage::error("1", "boom").to_text();
        assert_eq!(
            text,
            r#"{"type":"error","id":"1","payload":[{"message":"boom"}]}"#
        );
    }
}
