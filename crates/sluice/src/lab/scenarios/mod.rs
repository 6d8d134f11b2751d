//! The known Exchange load-balancing incidents, replayed against emulated servers with
//! sluice in front. Each prints what happened in plain words, checks sluice's behaviour
//! and gives a verdict.

mod component_offline;
mod drain_for_patching;
mod ews_2010_affinity;
mod expect_continue;
mod layer4_namespaces;
mod ntlm_isolation;
mod outlook_streams;
mod owa_browser;
mod owa_coexistence;
mod root_probe;

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use sluice_emulator::{Array, ArrayOptions, Version};
use sluice_exchange::ProbeTiming;
use sluice_proxy::AccessLog;

use super::setup::{Lab, Ports};

struct Scenario {
    name: &'static str,
    title: &'static str,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario {
        name: "root-probe",
        title: "a health check on / marks every server down after CU6; healthcheck.htm keeps them up",
    },
    Scenario {
        name: "owa-coexistence",
        title: "OWA across 2013 and 2016 loops on 440 without cookie persistence",
    },
    Scenario {
        name: "component-offline",
        title: "OWA inactive on one server leaves only the OWA pool",
    },
    Scenario {
        name: "expect-continue",
        title: "EWS POST with Expect: 100-continue gets through (no 501); an early 401 skips the upload",
    },
    Scenario {
        name: "ntlm-isolation",
        title: "interleaved NTLM sessions never see each other's identity",
    },
    Scenario {
        name: "ews-2010-affinity",
        title: "Exchange 2010 EWS subscriptions need 45-minute source persistence",
    },
    Scenario {
        name: "outlook-streams",
        title: "an RPC channel pair and a MAPI long poll stay up with bytes flowing both ways",
    },
    Scenario {
        name: "layer4-namespaces",
        title: "TLS passed through and routed by SNI: OWA out on one server leaves its EWS in",
    },
    Scenario {
        name: "drain-for-patching",
        title: "a drained server gets no new sessions while its existing ones finish",
    },
];

pub async fn run(name: &str) -> ExitCode {
    match name {
        "list" => {
            for s in &SCENARIOS {
                println!("{:<20} {}", s.name, s.title);
            }
            ExitCode::SUCCESS
        }
        "all" => run_all().await,
        _ => match SCENARIOS.iter().find(|s| s.name == name) {
            Some(s) => verdict(play(s).await),
            None => {
                let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                eprintln!(
                    "sluice lab: no scenario \"{name}\" (list, all, {})",
                    names.join(", ")
                );
                ExitCode::FAILURE
            }
        },
    }
}

async fn run_all() -> ExitCode {
    let (mut passed, mut failed) = (0, Vec::new());
    for s in &SCENARIOS {
        if play(s).await {
            passed += 1;
        } else {
            failed.push(s.name);
        }
        println!();
    }
    println!(
        "{passed} passed, {} failed{}",
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join(", "))
        }
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn verdict(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one scenario; true when sluice behaved correctly.
async fn play(s: &Scenario) -> bool {
    println!("== {}: {}", s.name, s.title);
    let mut story = Story::default();
    let outcome = match s.name {
        "root-probe" => root_probe::run(&mut story).await,
        "owa-coexistence" => owa_coexistence::run(&mut story).await,
        "component-offline" => component_offline::run(&mut story).await,
        "expect-continue" => expect_continue::run(&mut story).await,
        "ntlm-isolation" => ntlm_isolation::run(&mut story).await,
        "ews-2010-affinity" => ews_2010_affinity::run(&mut story).await,
        "outlook-streams" => outlook_streams::run(&mut story).await,
        "drain-for-patching" => drain_for_patching::run(&mut story).await,
        "layer4-namespaces" => layer4_namespaces::run(&mut story).await,
        other => Err(format!("no implementation for {other}")),
    };
    if let Err(e) = outcome {
        story.check(false, format!("the scenario could not go on: {e}"));
    }
    let passed = story.failures == 0 && story.checks > 0;
    println!(
        "   {}: {} of {} checks held",
        if passed { "PASS" } else { "FAIL" },
        story.checks - story.failures,
        story.checks
    );
    passed
}

/// What a scenario tells, and the checks it made.
#[derive(Default)]
pub struct Story {
    checks: usize,
    failures: usize,
}

impl Story {
    pub fn say(&self, text: impl Display) {
        println!("   {text}");
    }

    /// Records one expectation; prints it with its outcome.
    pub fn check(&mut self, held: bool, what: impl Display) -> bool {
        self.checks += 1;
        if !held {
            self.failures += 1;
        }
        println!("   [{}] {what}", if held { "ok" } else { "FAIL" });
        held
    }
}

/// Health probes in scenarios: fast enough that a server is judged within a second.
pub const PROBE: ProbeTiming = ProbeTiming {
    interval: Duration::from_millis(100),
    timeout: Duration::from_secs(1),
};

/// How long a scenario waits for sluice to notice a change.
pub const NOTICE: Duration = Duration::from_secs(5);

/// An emulated array of `versions` on free ports.
pub fn array(versions: &[Version]) -> Result<Array, String> {
    Array::start(&ArrayOptions::new(versions)).map_err(|e| format!("emulated servers: {e}"))
}

/// sluice with the shipped Exchange configuration in front of `array`.
pub async fn shipped(array: Array) -> Result<Lab, String> {
    Lab::start(
        array,
        Ports::ANY,
        |s| s.default_config(PROBE),
        AccessLog::disabled(),
    )
    .await
}

/// sluice with an administrator's own one-pool configuration in front of `array` (see
/// `Setting::one_pool`): `health` is its `[pool.health]`, probed at the scenarios' pace.
pub async fn one_pool(array: Array, pool: &str, health: &str) -> Result<Lab, String> {
    let health = format!("{health}\ninterval = \"{}ms\"", PROBE.interval.as_millis());
    Lab::start(
        array,
        Ports::ANY,
        |s| Ok(s.one_pool(pool, &health)),
        AccessLog::disabled(),
    )
    .await
}

/// A string error for `?` on anything displayable.
pub fn fail(e: impl Display) -> String {
    e.to_string()
}
