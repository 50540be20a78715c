//! The document analysis: any text is measured or refused within its time budget, never
//! panics; fragment DAGs and deep nesting included.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    checks::document(text);
});
