//! Any sequence of inputs and time steps through each of the four transaction machines.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| limes_sip::fuzzing::transaction_ops(data));
