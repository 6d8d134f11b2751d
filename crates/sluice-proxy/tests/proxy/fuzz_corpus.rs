//! Every committed fuzz seed (`fuzz/corpus/<target>/`) replayed through its target's
//! entry point on stable Rust, so the properties the fuzzers check hold on each `cargo
//! test`, and a regression seed added there is checked from then on.

use std::path::PathBuf;

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let seeds: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn every_seed_holds_its_targets_properties() {
    for (_, data) in seeds("client_hello") {
        let _ = sluice_proxy::l4::inspect_client_hello(&data);
    }
    for (_, data) in seeds("request_head") {
        sluice_proxy::fuzzing::framing(&data);
    }
    for (_, data) in seeds("cookie") {
        sluice_proxy::fuzzing::persistence_cookie(&data);
    }
    for (_, data) in seeds("rules") {
        sluice_proxy::fuzzing::rules(&data);
    }
    let base = std::path::Path::new("/nonexistent-sluice-fuzz");
    let mut parsed = 0;
    for (path, data) in seeds("config") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        match sluice_config::parse(text, "fuzz.toml", base) {
            Ok(_) => parsed += 1,
            Err(errors) => {
                assert!(!errors.0.is_empty(), "{}", path.display());
                assert!(
                    errors.to_string().contains("fuzz.toml:"),
                    "{}",
                    path.display()
                );
            }
        }
    }
    // The seeds without file references are valid configurations.
    assert!(parsed >= 2, "only {parsed} seed configurations parse");
}
