//! The `sluice` command: `lab` to try it against emulated Exchange servers, `run` a
//! configuration, `check` one without starting, `init` one, `ctl` a running one.

mod busy_poll;
mod ctl;
mod init;
mod lab;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sluice_admin::AdminServer;
use sluice_proxy::{AccessLog, Control, Proxy};

/// jemalloc hands pages freed after a burst of connections back to the system from a
/// background thread (see `.cargo/config.toml`); glibc's allocator keeps them, so a
/// thousand connections that went idle would go on costing what they cost while busy.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A layer 7 load balancer built for Microsoft Exchange and any HTTP service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start emulated Exchange servers with sluice in front of them (or replay an incident
    /// with --scenario).
    Lab(Box<lab::LabArgs>),
    /// Run in the foreground until SIGTERM or SIGINT, then stop gracefully; SIGHUP
    /// reloads the configuration.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration and report every error with its location.
    Check {
        /// The configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Write a complete configuration for a known application.
    #[command(subcommand)]
    Init(Init),
    /// Ask a running sluice (its admin API): status, drain, ready, maint, weight, reload.
    Ctl(Box<ctl::CtlArgs>),
}

#[derive(Subcommand)]
enum Init {
    /// Microsoft Exchange: one HTTPS service, a route, pool and health check per workload.
    Exchange(Box<init::ExchangeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A scenario's narrative is its output; sluice's own log would only interleave.
    let scenario = matches!(&cli.command, Command::Lab(args) if args.is_scenario());
    init_tracing(if scenario { "error" } else { "info" });
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
        Command::Ctl(args) => ctl::ctl(*args),
        Command::Init(Init::Exchange(args)) => init::exchange(*args),
        Command::Lab(args) => lab::lab(*args),
    }
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn check(path: &std::path::Path) -> ExitCode {
    match sluice_config::load(path) {
        Ok(c) => {
            println!(
                "{}: valid ({} services, {} pools)",
                path.display(),
                c.services.len(),
                c.pools.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match sluice_config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    match runtime(config.global.workers, config.global.busy_poll) {
        Ok(runtime) => runtime.block_on(serve(config, path)),
        Err(code) => code,
    }
}

/// The runtime that carries traffic, in a process allowed as many open files as the
/// system lets it have. One worker is the current thread's own scheduler: no work
/// stealing, no cross-thread wake-ups, measurably less CPU per request than a
/// one-thread pool; it watches for work a moment before it sleeps (`busy_poll`).
fn runtime(
    workers: Option<usize>,
    busy_poll: std::time::Duration,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    sluice_proxy::fd_limit::raise();
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let watch = (workers == Some(1) && !busy_poll.is_zero())
        .then(|| busy_poll::Watch::install(&mut builder, busy_poll));
    let runtime = builder.enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })?;
    if watch.is_some_and(|w| !w.arm(&runtime)) {
        tracing::warn!("busy polling is off: the runtime's epoll instance was not found");
    }
    Ok(runtime)
}

async fn serve(config: sluice_config::Config, path: &std::path::Path) -> ExitCode {
    let grace = config.global.shutdown_timeout;
    let admin = config.admin.clone();
    // Handlers first: a stop signal that arrives while listeners come up must not kill
    // the process the default way in the middle of a request.
    let stop = match StopSignals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = if config.global.access_log {
        AccessLog::stdout(65_536).with_format(config.global.access_log_format)
    } else {
        AccessLog::disabled()
    };
    let proxy = match Proxy::start(config, log).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let control = proxy.control();
    control.set_source(path.to_path_buf());
    // Held until the end: dropping it stops the admin listener.
    let _admin = match admin.map(|a| AdminServer::start(control.clone(), a.listen)) {
        Some(Err(e)) => {
            eprintln!("admin API: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
        Some(Ok(server)) => Some(server),
        None => None,
    };
    stop.wait_reloading(&control).await;
    tracing::info!(
        "stopping: no new connections; waiting up to {}s for requests in progress",
        grace.as_secs()
    );
    if proxy.shutdown(grace).await {
        tracing::info!("stopped");
    } else {
        tracing::warn!(
            "stopped with requests still in progress after {}s",
            grace.as_secs()
        );
    }
    ExitCode::SUCCESS
}

pub(crate) struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub(crate) async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// Waits for SIGTERM or SIGINT, reloading the configuration at each SIGHUP. A
    /// rejected reload has logged its errors; the running configuration stays.
    async fn wait_reloading(mut self, control: &Arc<Control>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // Reading and binding are quick, blocking work: off the async threads.
                    let control = control.clone();
                    let _ = tokio::task::spawn_blocking(move || control.reload()).await;
                }
            }
        }
    }
}
