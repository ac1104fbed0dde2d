//! `gateway::fuzzing::mcmt_message` under libFuzzer (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::mcmt_message(data));
