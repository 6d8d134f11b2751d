//! The ClientHello peek of tcp services: whatever a client sends first, `inspect` must
//! neither panic nor keep waiting once the size limit is reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_proxy::l4::{inspect_client_hello, MAX_CLIENT_HELLO};

fuzz_target!(|data: &[u8]| {
    // The bytes as they may arrive: whole, and cut where a read could end.
    let _ = inspect_client_hello(data);
    let _ = inspect_client_hello(&data[..data.len() / 2]);
    if data.len() >= MAX_CLIENT_HELLO {
        assert!(inspect_client_hello(data).is_some());
    }
});
