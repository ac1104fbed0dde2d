//! `gateway::fuzzing::config_file` under libFuzzer (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::config_file(data));
