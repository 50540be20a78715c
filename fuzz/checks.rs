//! What the fuzz targets check, shared with the test that replays their corpora
//! (`tests/fuzz_corpus.rs`), so every input ever found keeps being checked.

use streamer_aws::stream::{StreamEvent, decode};
use streamer_core::protocol::{ClientMessage, Effect, ServerMessage, Session, receive};

/// The frame parser: any text parses or is refused, never panics; operation ids are never
/// empty.
pub(crate) fn frame(text: &str) {
    if let Ok(ClientMessage::Subscribe { id, .. } | ClientMessage::Complete { id }) =
        ClientMessage::parse(text)
    {
        assert!(!id.is_empty(), "operation ids are never empty");
    }
}

/// The session state machine over frames separated by NUL bytes, applied as the gateway
/// applies them: never panics; a close ends the sequence; nothing but `pong` is sent before
/// `connection_init`; an operation id is never active twice; what it sends serializes.
pub(crate) fn session(data: &[u8]) {
    let mut session = Session::default();
    for frame in data.split(|b| *b == 0) {
        let Ok(text) = std::str::from_utf8(frame) else {
            continue;
        };
        let step = receive(&session, text);
        for message in &step.send {
            let text = message.to_text();
            assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
            if !session.acknowledged && !step.session.acknowledged {
                assert!(matches!(message, ServerMessage::Pong { .. }), "{text}");
            }
        }
        for effect in &step.effects {
            if let Effect::Subscribe { id, .. } = effect {
                assert!(!session.operations.contains(id), "{id} active twice");
            }
        }
        if step.close.is_some() {
            return;
        }
        session = step.session;
    }
}

/// The stream-record decoder on any JSON: never panics; every record becomes a change or a
/// batch item failure.
pub(crate) fn stream_record(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let event = match serde_json::from_value::<StreamEvent>(value.clone()) {
        Ok(event) => event,
        Err(_) => StreamEvent {
            records: vec![value],
        },
    };
    let decoded = decode(&event);
    assert_eq!(
        decoded.changes.len() + decoded.failures.len(),
        event.records.len()
    );
}
