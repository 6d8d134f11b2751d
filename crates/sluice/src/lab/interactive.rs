//! `sluice lab` without a scenario: the array and sluice run until Ctrl-C, with the
//! addresses and commands to try printed first and what each server served printed last.

use std::process::ExitCode;

use sluice_emulator::{Array, ArrayOptions, Timings};
use sluice_exchange::ProbeTiming;
use sluice_proxy::AccessLog;

use super::setup::{Lab, Ports, NAMESPACE};
use super::LabArgs;
use crate::StopSignals;

pub async fn run(args: &LabArgs) -> ExitCode {
    let stop = match StopSignals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lab = match start(args).await {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("sluice lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", banner(&lab));
    stop.wait().await;
    println!("\nWhat each server served:\n{}", served(&lab.array));
    lab.proxy.shutdown(std::time::Duration::from_secs(5)).await;
    ExitCode::SUCCESS
}

async fn start(args: &LabArgs) -> Result<Lab, String> {
    let mut options = ArrayOptions::new(&args.servers);
    options.timings = Timings::lab();
    options.first_port = (args.server_port != 0).then_some(args.server_port);
    let array = Array::start(&options).map_err(|e| {
        format!(
            "cannot start the emulated servers on ports from {}: {e} (choose others with --server-port)",
            args.server_port
        )
    })?;
    let log = AccessLog::stdout(65_536);
    match &args.config {
        Some(path) => Lab::with_file(array, path, log).await,
        None => {
            let probe = ProbeTiming {
                interval: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_secs(1),
            };
            let ports = Ports {
                https: args.port,
                http: args.http_port,
                admin: args.admin_port,
            };
            Lab::start(array, ports, |s| s.default_config(probe), log).await
        }
    }
}

fn banner(lab: &Lab) -> String {
    let mut out = format!(
        "sluice lab: {} emulated Exchange servers behind sluice\n\n",
        lab.array.servers.len()
    );
    for s in &lab.array.servers {
        out.push_str(&format!(
            "  {:<4} Exchange {}  https://{}  admin http://{}\n",
            s.name(),
            s.version(),
            s.addr,
            s.admin_addr
        ));
    }
    out.push_str(&format!("\nconfiguration: {}\n", lab.config_path.display()));
    if let Some((cert, _)) = &lab.cert {
        out.push_str(&format!("certificate:   {}\n", cert.display()));
    }
    for service in &lab.services {
        for addr in lab.proxy.local_addrs(service) {
            out.push_str(&format!("service {service:<8} {addr}\n"));
        }
    }
    if let Some(admin) = &lab.admin {
        out.push_str(&operate_lines(admin.addr(), lab));
    }
    if let Some(addr) = lab.addr("exchange").filter(|_| lab.cert.is_some()) {
        out.push_str(&try_lines(
            &format!("https://{NAMESPACE}:{}", addr.port()),
            lab,
        ));
    }
    out.push_str(
        "\nReplay the known incidents: sluice lab --scenario all (names: --scenario list)\n\
         Ctrl-C stops. The access log follows.\n\n",
    );
    out
}

fn operate_lines(admin: std::net::SocketAddr, lab: &Lab) -> String {
    let token = lab
        .files_path("admin.token")
        .map(|p| format!(" --token-file {}", p.display()))
        .unwrap_or_default();
    let first = lab.array.servers[0].name();
    format!(
        "\ndashboard:     http://{admin}/   (metrics: http://{admin}/metrics)\n\
         \x20 sluice ctl --admin {admin} status\n\
         \x20 sluice ctl --admin {admin}{token} drain {first}    # then: ready {first}\n"
    )
}

fn try_lines(base: &str, lab: &Lab) -> String {
    let admin = lab.array.servers[0].admin_addr;
    let first = lab.array.servers[0].name();
    format!(
        "\nTry (-k: the lab's certificate is self-signed):\n\
         \x20 curl -k -i {base}/                                      # 302 to /owa/\n\
         \x20 curl -k {base}/owa/healthcheck.htm                      # Managed Availability page\n\
         \x20 curl -k -i -d 'username=alice&password=x' {base}/owa/auth.owa   # forms login\n\
         \x20 curl -k -H 'Authorization: Negotiate alice' -d '<GetFolder/>' {base}/EWS/Exchange.asmx\n\
         \x20 curl -k -N -H 'Authorization: Negotiate alice' -H 'X-RequestType: NotificationWait' -d x {base}/mapi/emsmdb/\n\
         \x20 curl -k -i -X OPTIONS {base}/Microsoft-Server-ActiveSync\n\
         \x20 curl -X POST http://{admin}/components/owa/inactive       # take OWA out on {first}\n\
         \x20 curl http://{admin}/counts                                # what {first} served\n"
    )
}

/// One line per server: requests per workload.
fn served(array: &Array) -> String {
    array
        .servers
        .iter()
        .map(|s| {
            let counts = s.counts();
            let per: Vec<String> = counts
                .served
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(w, n)| format!("{w}={n}"))
                .collect();
            format!(
                "  {:<4} {:>6} requests  {}\n",
                s.name(),
                counts.total(),
                per.join(" ")
            )
        })
        .collect()
}
