//! The configuration file: whatever text an operator (or a broken deployment) writes,
//! parsing either succeeds or reports errors, and every error names its place.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A base directory that does not exist: relative file names resolve to nothing.
    let base = std::path::Path::new("/nonexistent-sluice-fuzz");
    if let Err(errors) = sluice_config::parse(text, "fuzz.toml", base) {
        assert!(!errors.0.is_empty());
        let _ = errors.to_string();
    }
});
