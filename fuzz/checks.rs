//! What the fuzz targets check, shared with the test that replays their corpora
//! (`tests/fuzz_corpus.rs`), so every input ever found keeps being checked.

use streamer_aws::stream::{StreamEvent, decode};
use streamer_core::Limits;
use streamer_core::protocol::{ClientMessage, Effect, ServerMessage, Session, receive};
use streamer_schema::document::{Document, Refusal};

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

/// How long measuring one document may take, whatever it holds: the analysis is linear in
/// the document's size, which the limits bound to 32 KiB.
const DOCUMENT_BUDGET: std::time::Duration = std::time::Duration::from_millis(200);

/// The document analysis (size, parse, depth, complexity, aliases, fragments) on any text:
/// never panics, stays within its time budget, and refuses what is over the size limit
/// before parsing it.
pub(crate) fn document(text: &str) {
    let limits = Limits::default();
    let started = std::time::Instant::now();
    let outcome = Document::prepare(text, None, None, &limits);
    let elapsed = started.elapsed();
    assert!(
        elapsed < DOCUMENT_BUDGET,
        "{elapsed:?} for {} bytes",
        text.len()
    );
    if text.len() > limits.max_document_bytes {
        assert!(
            matches!(&outcome, Err(Refusal::Limit(e)) if e.limit == "documentBytes"),
            "an oversized document is refused for its size"
        );
    }
}
