//! Any bytes: frame, parse, read every view, check sanity, forward unchanged, re-parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| limes_sip::fuzzing::parse_and_forward(data));
