//! The DynamoDB stream-record decoder on any JSON batch: it never panics, and every record
//! ends up either a change or a batch item failure.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::stream_record(data);
});
