//! `sluice init exchange`: a complete, commented configuration for an Exchange array,
//! built from the catalogue.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::catalogue::{Affinity, MailService, Version, Workload, WORKLOADS};

/// What the administrator told `sluice init exchange`.
#[derive(Debug, Clone)]
pub struct Template {
    /// The one name clients use, e.g. `mail.example.com`.
    pub namespace: String,
    /// Client Access servers by name.
    pub servers: Vec<(String, SocketAddr)>,
    pub version: Version,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 fingerprints of the servers' certificates (hex); empty means verify the
    /// chain against the system roots and the namespace instead.
    pub fingerprints: Vec<String>,
    pub https_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Networks allowed to read the health pages through sluice.
    pub monitoring: Vec<String>,
    pub probe: ProbeTiming,
    /// Where the admin API, metrics and dashboard listen.
    pub admin_listen: SocketAddr,
    /// The admin token's file; without one the configuration says how to add it.
    pub admin_token_file: Option<PathBuf>,
    pub scenario: Scenario,
    /// Mail services to balance, each with where it listens.
    pub mail: Vec<(MailService, SocketAddr)>,
}

/// Which of Microsoft's load balancing designs the configuration follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// TLS terminated at sluice; a route, pool and health check per workload.
    Layer7,
    /// TLS passed through untouched. With no namespaces, one server-wide health check
    /// (Microsoft's single-namespace layer 4); with namespaces (workload name, host), one
    /// route by TLS server name, pool and workload check each, all on one address.
    Layer4 { namespaces: Vec<(String, String)> },
}

/// The admin listener `sluice init exchange` writes: loopback only.
pub const ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9900);

/// How often each workload's health page is read, and how long an answer may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for ProbeTiming {
    /// 5 s and 3 s: a failed component is out within about 15 s (3 failures).
    fn default() -> Self {
        ProbeTiming {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("give at least one server")]
    NoServers,
    #[error("\"{0}\" is not a host name")]
    Namespace(String),
    #[error("server name \"{0}\" may hold letters, digits, '-', '_' and '.' only")]
    ServerName(String),
    #[error("server name \"{0}\" is given twice")]
    Duplicate(String),
    #[error("no workload \"{0}\" in Exchange {1} (one of {2})")]
    Workload(String, Version, String),
    #[error("workload \"{0}\" is given two namespaces")]
    DuplicateWorkload(String),
}

/// The configuration text for `t`.
pub fn render(t: &Template) -> Result<String, TemplateError> {
    validate(t)?;
    let mut out = String::new();
    header(&mut out, t);
    redirector(&mut out, t);
    match &t.scenario {
        Scenario::Layer7 => {
            service(&mut out, t);
            for w in workloads(t.version) {
                route(&mut out, &w);
            }
            for w in workloads(t.version) {
                pool(&mut out, t, &w);
            }
        }
        Scenario::Layer4 { namespaces } => {
            let namespaces = crate::layer4::resolve(t.version, namespaces)?;
            crate::layer4::render(&mut out, t, &namespaces);
        }
    }
    crate::layer4::mail(&mut out, t);
    Ok(out)
}

/// The workloads a version has.
pub(crate) fn workloads(version: Version) -> impl Iterator<Item = Workload> {
    WORKLOADS.into_iter().filter(move |w| w.since <= version)
}

/// A plausible host name.
pub(crate) fn check_host(host: &str) -> Result<(), TemplateError> {
    let host_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || !host.chars().all(host_char) {
        return Err(TemplateError::Namespace(host.to_string()));
    }
    Ok(())
}

fn validate(t: &Template) -> Result<(), TemplateError> {
    let host_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    check_host(&t.namespace)?;
    if t.servers.is_empty() {
        return Err(TemplateError::NoServers);
    }
    for (i, (name, _)) in t.servers.iter().enumerate() {
        if name.is_empty() || !name.chars().all(|c| host_char(c) || c == '_') {
            return Err(TemplateError::ServerName(name.clone()));
        }
        if t.servers[..i].iter().any(|(n, _)| n == name) {
            return Err(TemplateError::Duplicate(name.clone()));
        }
    }
    Ok(())
}

/// `s` as a TOML basic string, quoted and escaped.
pub fn quote(s: &str) -> String {
    let mut q = String::from('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

pub(crate) fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn header(out: &mut String, t: &Template) {
    let design = match &t.scenario {
        Scenario::Layer7 => {
            "# One HTTPS service carries every workload. Each workload has its own route, pool and\n\
             # health check, so a workload Exchange takes out on one server (a failed component,\n\
             # maintenance) removes only that workload of that server."
        }
        Scenario::Layer4 { namespaces } if namespaces.is_empty() => {
            "# Layer 4, one namespace: TLS passes through untouched and one health check decides\n\
             # for the whole server (Microsoft's simplest design)."
        }
        Scenario::Layer4 { .. } => {
            "# Layer 4, one namespace per workload: TLS passes through untouched, and sluice reads\n\
             # the server name of each TLS ClientHello (without decrypting) to give every\n\
             # namespace its own pool and workload health check, all on one address."
        }
    };
    let _ = writeln!(
        out,
        "# sluice configuration for Microsoft Exchange {}, namespace {}.\n\
         # Written by `sluice init exchange`; validate changes with `sluice check --config FILE`.\n\
         #\n{design}\n\
         \n[global]\nshutdown_timeout = \"30s\"\n",
        t.version, t.namespace
    );
    let token = match &t.admin_token_file {
        Some(file) => format!("token_file = {}", quote(&file.to_string_lossy())),
        None => "# token_file = \"/etc/sluice/admin.token\"  # at least 16 characters".into(),
    };
    let _ = writeln!(
        out,
        "# The admin API (`sluice ctl`), Prometheus metrics at /metrics and the dashboard at /.\n\
         # Keep it on loopback or a management network: reads are open to loopback clients;\n\
         # drain, ready, weight and reload need the token.\n\
         [admin]\nlisten = {}\n{token}\n",
        quote(&t.admin_listen.to_string())
    );
}

fn redirector(out: &mut String, t: &Template) {
    // Clients must land on the HTTPS service's port when it is not the standard one.
    let port = match t.https_listen.port() {
        0 | 443 => String::new(),
        p => format!(", port = {p}"),
    };
    let _ = writeln!(
        out,
        "# Plain HTTP: everything is redirected to HTTPS, keeping the path and query.\n\
         [[service]]\nname = \"http\"\nlisten = {}\n\n[[service.rule]]\n\
         redirect = {{ status = 301, scheme = \"https\"{port} }}\n",
        quote(&t.http_listen.to_string())
    );
}

fn service(out: &mut String, t: &Template) {
    let _ = writeln!(
        out,
        "[[service]]\nname = \"exchange\"\nlisten = {listen}\n\n\
         # The certificate clients see. With Extended Protection (on by default from Exchange\n\
         # 2019 CU14) it must be the same certificate the Exchange servers present.\n\
         [service.tls]\ncertificates = [{{ cert = {cert}, key = {key} }}]\n\n\
         # Keep-alive connections idle this long are closed; routes below allow longer pauses\n\
         # inside requests where a workload needs them.\n\
         [service.timeouts]\nclient_idle = \"300s\"\n\n\
         # `/` goes to Outlook on the web (what Exchange itself answers since 2013 CU6).\n\
         [[service.rule]]\nwhen = {{ path = \"/\" }}\nredirect = {{ status = 302, location = \"/owa/\" }}\n\n\
         # Health pages are for the monitoring network only (adjust `source`).\n\
         [[service.rule]]\nwhen = {{ path_suffix = \"/healthcheck.htm\"{outside} }}\n\
         deny = {{ status = 403 }}\n",
        listen = quote(&t.https_listen.to_string()),
        cert = quote(&t.cert.to_string_lossy()),
        key = quote(&t.key.to_string_lossy()),
        // No monitoring network: the pages are refused to every client.
        outside = if t.monitoring.is_empty() {
            String::new()
        } else {
            format!(", not = {{ source = {} }}", list(&t.monitoring))
        },
    );
}

fn route(out: &mut String, w: &Workload) {
    let idle = format!("{}s", w.idle_secs);
    let _ = writeln!(out, "# {} ({})", w.title, w.prefix);
    if w.streams {
        let _ = writeln!(
            out,
            "# Long-lived requests: pauses up to {idle} inside a request or response are normal."
        );
    }
    let _ = writeln!(
        out,
        "[[service.route]]\nname = {name}\nmatch = {{ path_regex = {re} }}\npool = {name}\n\
         timeouts = {{ client_idle = {idle}, server = {idle} }}\n",
        name = quote(w.name),
        re = quote(&w.path_regex()),
        idle = quote(&idle),
    );
}

fn pool(out: &mut String, t: &Template, w: &Workload) {
    pool_head(out, w.name, &t.servers, None);
    persistence(out, t.version, w);
    health(out, t, w);
    upstream_tls(out, t);
}

/// `[[pool]]` with its name and servers; `port` replaces the servers' port (mail).
pub(crate) fn pool_head(
    out: &mut String,
    name: &str,
    servers: &[(String, SocketAddr)],
    port: Option<u16>,
) {
    let _ = writeln!(out, "[[pool]]\nname = {}\nservers = [", quote(name));
    for (server, addr) in servers {
        let addr = SocketAddr::new(addr.ip(), port.unwrap_or(addr.port()));
        let _ = writeln!(
            out,
            "  {{ name = {}, address = {} }},",
            quote(server),
            quote(&addr.to_string())
        );
    }
    let _ = writeln!(out, "]\n");
}

/// The cookie OWA and ECP share, so a user's forms login stays on the server that can
/// read it.
pub const LOGIN_COOKIE: &str = "SLUICE_OWA";

fn persistence(out: &mut String, version: Version, w: &Workload) {
    if w.affinity_2010 == Affinity::SharedLoginCookie {
        let why = if version == Version::V2010 {
            "# Exchange 2010: the forms-login cookie can be read only by the server that issued\n\
             # it, so OWA and ECP must keep each user on one server, both pools sharing one cookie."
        } else {
            "# OWA and ECP keep each user on one server, both pools sharing one cookie. Exchange\n\
             # 2013 and later do not need it when every server has the same certificate and\n\
             # version, but during a migration (2013 beside 2016, a certificate being replaced)\n\
             # a login cookie one server cannot read sends users around a 440 login loop."
        };
        let _ = writeln!(
            out,
            "{why}\n[pool.persistence]\nkind = \"cookie\"\ncookie = {}\nsecure = true\n",
            quote(LOGIN_COOKIE)
        );
    }
    if let Affinity::SourceMinutes(minutes) = w.affinity(version) {
        let _ = writeln!(
            out,
            "# Exchange 2010: EWS notification subscriptions live on the server that created\n\
             # them; each client stays on one server until it has been idle {minutes} minutes.\n\
             [pool.persistence]\nkind = \"source\"\nidle_timeout = \"{minutes}m\"\n"
        );
    }
}

fn health(out: &mut String, t: &Template, w: &Workload) {
    if !t.version.has_health_pages() {
        let _ = writeln!(
            out,
            "# Exchange 2010 has no per-workload health pages (Managed Availability came with\n\
             # 2013): the check connects and completes the TLS handshake.\n\
             [pool.health]\nkind = \"tcp\"\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "# Managed Availability: healthy is 200 with a body starting \"200 OK\". Never probe `/`,\n\
         # which redirects to /owa/ since 2013 CU6.\n\
         [pool.health]\npath = {}\nhost = {}\nexpect_status = 200\nexpect_body = \"200 OK\"\n\
         interval = {}\ntimeout = {}\nrise = 2\nfall = 3\n",
        quote(w.health_path),
        quote(&t.namespace),
        quote(&millis(t.probe.interval)),
        quote(&millis(t.probe.timeout)),
    );
}

/// A duration as sluice reads it: whole seconds when it is, else milliseconds.
pub(crate) fn millis(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn upstream_tls(out: &mut String, t: &Template) {
    let _ = writeln!(
        out,
        "# Re-encrypted to the servers over HTTP/1.1 (NTLM and Negotiate need it). Read a\n\
         # server's fingerprint with:\n\
         #   openssl s_client -connect SERVER:443 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256\n\
         [pool.tls]"
    );
    if t.fingerprints.is_empty() {
        let _ = writeln!(
            out,
            "# The servers' chain is verified against the system roots for the namespace; to pin\n\
             # their certificates instead, set verify = \"fingerprint\" and list fingerprints.\n\
             verify = \"full\"\nsni = {}\n",
            quote(&t.namespace)
        );
    } else {
        let _ = writeln!(
            out,
            "verify = \"fingerprint\"\nfingerprints = {}\nsni = {}\n",
            list(&t.fingerprints),
            quote(&t.namespace)
        );
    }
}
