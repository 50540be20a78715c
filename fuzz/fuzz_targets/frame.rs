//! The graphql-transport-ws frame parser: any text parses or is refused, never panics; what
//! parses is one of the protocol's messages.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    checks::frame(text);
});
