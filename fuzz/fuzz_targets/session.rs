//! The session state machine over any sequence of frames (separated by NUL bytes), applied the
//! way the gateway applies them: it never panics; a close ends the sequence; nothing is sent
//! before `connection_init` except `pong`; an operation id is never active twice; every
//! message it sends serializes.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::session(data);
});
