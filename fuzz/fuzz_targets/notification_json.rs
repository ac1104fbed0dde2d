//! `gateway::fuzzing::notification_json` under libFuzzer (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::notification_json(data));
