//! `sluice lab`: emulated Exchange servers with sluice in front of them on one machine,
//! to try sluice interactively or to replay the known incidents as scenarios.

mod interactive;
mod scenarios;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sluice_exchange::Version;

#[derive(Args)]
pub struct LabArgs {
    /// Exchange versions of the emulated servers, comma-separated (EX1, EX2, ...).
    #[arg(long, value_delimiter = ',', default_value = "2016,2016,2013")]
    servers: Vec<Version>,
    /// Where sluice's HTTPS service listens on loopback (0: any free port).
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Where the HTTP-to-HTTPS redirector listens on loopback (0: any free port).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// First port of the emulated servers; their admin endpoints start 100 above
    /// (0: any free ports).
    #[arg(long, default_value_t = 44301)]
    server_port: u16,
    /// Where sluice's admin API and dashboard listen on loopback (0: any free port).
    #[arg(long, default_value_t = 9900)]
    admin_port: u16,
    /// Run your own configuration in front of the emulated servers instead of the
    /// embedded one (servers at 127.0.0.1:<server-port>, <server-port>+1, ...).
    #[arg(long, conflicts_with = "scenario")]
    config: Option<PathBuf>,
    /// Replay a known incident (`list` names them, `all` runs every one) and exit 0 only
    /// if sluice behaves correctly.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
}

impl LabArgs {
    pub fn is_scenario(&self) -> bool {
        self.scenario.is_some()
    }
}

pub fn lab(args: LabArgs) -> ExitCode {
    let runtime = match crate::runtime(None, std::time::Duration::ZERO) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match &args.scenario {
        Some(name) => runtime.block_on(scenarios::run(name)),
        None => runtime.block_on(interactive::run(&args)),
    }
}
