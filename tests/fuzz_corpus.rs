//! Replays the committed fuzz corpora (`fuzz/corpus/{frame,session,stream_record,document}`) through
//! the checks the fuzz targets make, so every input fuzzing ever kept stays checked in the
//! test command. Fuzzing itself: `fuzz/README.md`.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!inputs.is_empty(), "{} holds inputs", dir.display());
    inputs
}

#[test]
fn frame_corpus() {
    for input in corpus("frame") {
        if let Ok(text) = std::str::from_utf8(&input) {
            checks::frame(text);
        }
    }
}

#[test]
fn session_corpus() {
    for input in corpus("session") {
        checks::session(&input);
    }
}

#[test]
fn stream_record_corpus() {
    for input in corpus("stream_record") {
        checks::stream_record(&input);
    }
}

#[test]
fn document_corpus() {
    for input in corpus("document") {
        if let Ok(text) = std::str::from_utf8(&input) {
            checks::document(text);
        }
    }
}
