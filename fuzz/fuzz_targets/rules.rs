//! Rules (redirects with captures, path rewrites, header edits, deny) and routing over
//! arbitrary requests: never a panic, and every redirect a valid `Location`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_proxy::fuzzing::rules(data));
