//! `apns_mock::fuzzing::request` under libFuzzer (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| apns_mock::fuzzing::request(data));
