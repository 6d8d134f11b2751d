//! Request framing and host checks (`framing::check`): any request head hyper could hand
//! over is refused or leaves exactly one way to read its body and host.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_proxy::fuzzing::framing(data));
