//! The persistence cookie in arbitrary `Cookie` headers: never a panic, never passed to
//! the server, and only a value sluice issued names a server.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_proxy::fuzzing::persistence_cookie(data));
