//! `gateway::fuzzing::smtp_session` under libFuzzer (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::smtp_session(data));
