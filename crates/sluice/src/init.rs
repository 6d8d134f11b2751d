//! `sluice init exchange`: writes a working configuration for an Exchange array.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use sluice_exchange::{mail_on, render, ProbeTiming, Scenario, Template, Version};

/// Microsoft's load balancing designs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Design {
    /// TLS terminated at sluice; a route, pool and health check per workload.
    L7,
    /// TLS passed through: one server-wide check, or per-workload namespaces routed by SNI
    /// (`--workload-namespace`); mail services included.
    L4,
}

#[derive(Args)]
pub struct ExchangeArgs {
    /// The name clients use, e.g. mail.example.com.
    #[arg(long)]
    namespace: String,
    /// A Client Access server as NAME=ADDRESS (port 443 unless given); repeat for each.
    #[arg(long = "server", value_name = "NAME=ADDRESS", required = true, value_parser = parse_server)]
    servers: Vec<(String, SocketAddr)>,
    /// Exchange version: 2010, 2013, 2016 or 2019.
    #[arg(long, default_value = "2019")]
    version: Version,
    /// Certificate (PEM) clients are shown; without it a self-signed one is written next
    /// to the output, to be replaced.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// SHA-256 fingerprint of a server certificate to pin (repeatable); without any, the
    /// servers' chain is verified against the system roots.
    #[arg(long = "fingerprint", value_name = "HEX")]
    fingerprints: Vec<String>,
    /// Where the HTTPS service listens.
    #[arg(long, default_value = "0.0.0.0:443")]
    https_listen: SocketAddr,
    /// Where the HTTP-to-HTTPS redirector listens.
    #[arg(long, default_value = "0.0.0.0:80")]
    http_listen: SocketAddr,
    /// A network allowed to read health pages through sluice (repeatable).
    #[arg(
        long = "monitoring",
        value_name = "CIDR",
        default_values = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"]
    )]
    monitoring: Vec<String>,
    /// The design: l7 (default) or l4.
    #[arg(long, value_enum, default_value = "l7")]
    scenario: Design,
    /// With --scenario l4: a workload's own namespace as WORKLOAD=HOST (e.g.
    /// activesync=eas.example.com), routed by the TLS server name; repeat for each.
    #[arg(long = "workload-namespace", value_name = "WORKLOAD=HOST", value_parser = parse_namespace)]
    workload_namespaces: Vec<(String, String)>,
    /// Also balance SMTP, IMAP4 and POP3 (always with --scenario l4), on the HTTPS
    /// listener's address at their standard ports.
    #[arg(long)]
    mail: bool,
    /// Write the configuration here instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn parse_server(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, address) = s
        .split_once('=')
        .ok_or_else(|| format!("\"{s}\": expected NAME=ADDRESS, e.g. cas1=10.0.0.11"))?;
    let address = address
        .parse::<SocketAddr>()
        .or_else(|_| {
            address
                .parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 443))
        })
        .map_err(|_| format!("\"{address}\" is not an IP address (with optional :port)"))?;
    Ok((name.to_string(), address))
}

fn parse_namespace(s: &str) -> Result<(String, String), String> {
    let (workload, host) = s
        .split_once('=')
        .ok_or_else(|| format!("\"{s}\": expected WORKLOAD=HOST, e.g. ews=ews.example.com"))?;
    Ok((workload.to_ascii_lowercase(), host.to_string()))
}

pub fn exchange(args: ExchangeArgs) -> ExitCode {
    match write_exchange(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice init exchange: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_exchange(args: ExchangeArgs) -> Result<(), String> {
    let dir = args
        .output
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let scenario = match args.scenario {
        Design::L7 if !args.workload_namespaces.is_empty() => {
            return Err("--workload-namespace needs --scenario l4".into())
        }
        Design::L7 => Scenario::Layer7,
        Design::L4 => Scenario::Layer4 {
            namespaces: args.workload_namespaces,
        },
    };
    let (cert, key) = match (args.cert, args.key) {
        (Some(c), Some(k)) => (absolute(c)?, absolute(k)?),
        // Passed through, TLS needs no certificate at sluice.
        _ if args.scenario == Design::L4 => (PathBuf::new(), PathBuf::new()),
        _ => placeholder_certificate(&dir, &args.namespace)?,
    };
    let mail = if args.mail || args.scenario == Design::L4 {
        mail_on(args.https_listen.ip())
    } else {
        Vec::new()
    };
    let template = Template {
        namespace: args.namespace,
        servers: args.servers,
        version: args.version,
        cert,
        key,
        fingerprints: args.fingerprints,
        https_listen: args.https_listen,
        http_listen: args.http_listen,
        monitoring: args.monitoring,
        probe: ProbeTiming::default(),
        admin_listen: sluice_exchange::ADMIN_LISTEN,
        admin_token_file: None,
        scenario,
        mail,
    };
    let text = render(&template).map_err(|e| e.to_string())?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {}; check it with: sluice check --config {}",
                path.display(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn absolute(path: PathBuf) -> Result<PathBuf, String> {
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A self-signed certificate for the namespace, so the configuration runs at once.
fn placeholder_certificate(dir: &Path, namespace: &str) -> Result<(PathBuf, PathBuf), String> {
    let certified = rcgen::generate_simple_self_signed(vec![namespace.to_string()])
        .map_err(|e| format!("cannot make a certificate for {namespace}: {e}"))?;
    let cert = absolute(dir.join(format!("{namespace}.pem")))?;
    let key = absolute(dir.join(format!("{namespace}.key")))?;
    for (path, pem) in [
        (&cert, certified.cert.pem()),
        (&key, certified.signing_key.serialize_pem()),
    ] {
        std::fs::write(path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!(
        "wrote a self-signed certificate for {namespace} to {}: replace it with the certificate your Exchange servers present",
        cert.display()
    );
    Ok((cert, key))
}
