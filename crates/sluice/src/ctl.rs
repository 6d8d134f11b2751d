//! `sluice ctl`: the admin API from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_lab::client::{full, BoxError};
use sluice_lab::Client;

#[derive(Args)]
pub struct CtlArgs {
    /// Take the admin address and token file from this configuration's `[admin]`.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The admin API's address [default: 127.0.0.1:9900, or the configuration's].
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// A file holding the admin token (or set SLUICE_ADMIN_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON answer as it is.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Services, pools and every server's state, health and counters.
    Status,
    /// No new clients for SERVER; persisted sessions and open connections go on.
    Drain(StateArgs),
    /// Back into rotation once its health checks pass.
    Ready(StateArgs),
    /// Nothing new at all for SERVER.
    Maint(StateArgs),
    /// Set a server's weight in one pool (until the file changes it).
    Weight {
        pool: String,
        server: String,
        weight: u32,
    },
    /// Read the configuration file again and apply it.
    Reload,
}

#[derive(Args)]
struct StateArgs {
    /// The server's name, as in the configuration.
    server: String,
    /// Only in this pool [default: every pool holding the server].
    #[arg(long)]
    pool: Option<String>,
    /// Close what remains after this long draining (e.g. 10m), overriding drain_timeout.
    #[arg(long)]
    timeout: Option<String>,
}

pub fn ctl(args: CtlArgs) -> ExitCode {
    let (admin, token) = match endpoint(&args) {
        Ok(e) => e,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let (method, path, body) = request_of(&args.action);
    let runtime = match crate::runtime(None, std::time::Duration::ZERO) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let answer = runtime.block_on(call(admin, method, &path, token.as_deref(), body));
    let (status, value) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cannot reach the admin API at {admin}: {e}");
            return ExitCode::from(2);
        }
    };
    if !status.is_success() {
        eprintln!("{} {}", status.as_u16(), describe_error(&value));
        return ExitCode::FAILURE;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print_answer(&args.action, &value);
    }
    ExitCode::SUCCESS
}

/// The admin address and token, from the flags, the configuration or the defaults.
fn endpoint(args: &CtlArgs) -> Result<(SocketAddr, Option<String>), String> {
    let admin_cfg = match &args.config {
        Some(path) => sluice_config::load(path)
            .map_err(|e| format!("{e}"))?
            .admin
            .ok_or_else(|| format!("{} has no [admin] table", path.display()))
            .map(Some)?,
        None => None,
    };
    let addr = args
        .admin
        .or(admin_cfg.as_ref().map(|a| a.listen))
        .unwrap_or_else(|| sluice_config::Admin::default().listen);
    let token = match &args.token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("SLUICE_ADMIN_TOKEN")
            .ok()
            .or_else(|| admin_cfg.and_then(|a| a.token).map(|t| t.secret)),
    };
    Ok((addr, token))
}

fn request_of(action: &Action) -> (&'static str, String, Option<Value>) {
    let state = |s: &StateArgs, name: &str| {
        let path = match &s.pool {
            Some(pool) => format!("/api/v1/pools/{pool}/servers/{}/state", s.server),
            None => format!("/api/v1/servers/{}/state", s.server),
        };
        let body = match &s.timeout {
            Some(t) => json!({ "state": name, "timeout": t }),
            None => json!({ "state": name }),
        };
        ("POST", path, Some(body))
    };
    match action {
        Action::Status => ("GET", "/api/v1/status".into(), None),
        Action::Drain(s) => state(s, "drain"),
        Action::Ready(s) => state(s, "ready"),
        Action::Maint(s) => state(s, "maint"),
        Action::Weight {
            pool,
            server,
            weight,
        } => (
            "POST",
            format!("/api/v1/pools/{pool}/servers/{server}/weight"),
            Some(json!({ "weight": weight })),
        ),
        Action::Reload => ("POST", "/api/v1/reload".into(), None),
    }
}

async fn call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(http::StatusCode, Value), BoxError> {
    let mut client = Client::connect(admin).await?;
    let mut req = client
        .request(method, path)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let reply = client.send(req.body(full(body))?).await?;
    let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Ok((reply.status, value))
}

fn describe_error(value: &Value) -> String {
    if let Some(errors) = value["errors"].as_array() {
        let lines: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
        return format!("rejected:\n{}", lines.join("\n"));
    }
    value["error"]
        .as_str()
        .unwrap_or("(no explanation)")
        .to_string()
}

fn print_answer(action: &Action, value: &Value) {
    match action {
        Action::Status => print_status(value),
        Action::Reload => {
            for change in value["changes"].as_array().into_iter().flatten() {
                println!("{}", change.as_str().unwrap_or_default());
            }
        }
        _ => {
            for server in value.as_array().into_iter().flatten() {
                println!("{}", server_line(server));
            }
        }
    }
}

fn print_status(status: &Value) {
    let reloads = &status["reloads"];
    println!(
        "connections {}  reloads {} ok, {} rejected",
        status["connections"], reloads["succeeded"], reloads["failed"]
    );
    for pool in status["pools"].as_array().into_iter().flatten() {
        println!("pool {}", pool["name"].as_str().unwrap_or_default());
        for server in pool["servers"].as_array().into_iter().flatten() {
            println!("  {}", server_line(server));
        }
    }
}

/// `owa/cas1 10.0.0.11:443 drain up weight 1 active 2 pinned 0 requests 40`
fn server_line(s: &Value) -> String {
    let text = |key: &str| s[key].as_str().unwrap_or_default().to_string();
    let health = if s["up"].as_bool() == Some(true) {
        "up".to_string()
    } else {
        format!("DOWN ({})", text("last_failure"))
    };
    format!(
        "{}/{} {} {} {} weight {} active {} pinned {} requests {}",
        text("pool"),
        text("server"),
        text("address"),
        text("state"),
        health,
        s["weight"],
        s["active"],
        s["pinned"],
        s["requests"]
    )
}
