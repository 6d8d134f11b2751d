//! The layer 4 variants of the template (TLS passed through to the servers) and the
//! mail services, which are layer 4 in every design.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::catalogue::{Affinity, MailService, Version, Workload, MAIL_SERVICES};
use crate::template::{check_host, millis, pool_head, quote, workloads, Template, TemplateError};

/// Every mail service, listening on `ip` at its standard port.
pub fn mail_on(ip: IpAddr) -> Vec<(MailService, SocketAddr)> {
    MAIL_SERVICES
        .into_iter()
        .map(|m| (m, SocketAddr::new(ip, m.port)))
        .collect()
}

/// The workload and host of each namespace, checked against the version's catalogue.
pub(crate) fn resolve(
    version: Version,
    namespaces: &[(String, String)],
) -> Result<Vec<(Workload, String)>, TemplateError> {
    let known: Vec<Workload> = workloads(version).collect();
    let mut resolved: Vec<(Workload, String)> = Vec::new();
    for (name, host) in namespaces {
        let workload = known.iter().find(|w| w.name == name).ok_or_else(|| {
            let names: Vec<&str> = known.iter().map(|w| w.name).collect();
            TemplateError::Workload(name.clone(), version, names.join(", "))
        })?;
        check_host(host)?;
        if resolved.iter().any(|(w, _)| w.name == workload.name) {
            return Err(TemplateError::DuplicateWorkload(name.clone()));
        }
        resolved.push((*workload, host.to_ascii_lowercase()));
    }
    Ok(resolved)
}

/// The passthrough HTTPS service and its pools: one server-wide pool when `namespaces`
/// is empty, else a route and pool per namespace.
pub(crate) fn render(out: &mut String, t: &Template, namespaces: &[(Workload, String)]) {
    // The longest idle any workload ships with (ActiveSync's hour-long long polls).
    let idle = workloads(t.version)
        .map(|w| w.idle_secs)
        .max()
        .unwrap_or(3600);
    let default = namespaces.first().map_or("exchange", |(w, _)| w.name);
    let _ = writeln!(
        out,
        "# HTTPS passes through: the servers present their own certificate and see the\n\
         # client's TLS (Extended Protection and client certificates keep working).\n\
         [[service]]\nname = \"exchange\"\nmode = \"tcp\"\nlisten = {listen}\ndefault_pool = {default}\n\n\
         # A connection silent this long is closed (ActiveSync long polls last up to an hour).\n\
         [service.timeouts]\nidle = \"{idle}s\"\n",
        listen = quote(&t.https_listen.to_string()),
        default = quote(default),
    );
    if namespaces.is_empty() {
        server_wide_pool(out, t);
        return;
    }
    let _ = writeln!(
        out,
        "# Clients that send no server name (connecting by address) go to the {default} pool."
    );
    for (w, host) in namespaces {
        let _ = writeln!(
            out,
            "# {} at {host}\n[[service.route]]\nname = {name}\nmatch = {{ sni = {host_q} }}\npool = {name}\n",
            w.title,
            name = quote(w.name),
            host_q = quote(host),
        );
    }
    for (w, host) in namespaces {
        pool_head(out, w.name, &t.servers, None);
        persistence(out, t.version);
        health(out, t, w, host);
    }
}

fn server_wide_pool(out: &mut String, t: &Template) {
    pool_head(out, "exchange", &t.servers, None);
    persistence(out, t.version);
    let owa = workloads(t.version)
        .find(|w| w.name == "owa")
        .unwrap_or(crate::catalogue::WORKLOADS[0]);
    let _ = writeln!(
        out,
        "# One check stands for every workload: a server whose OWA fails is out for all of them,\n\
         # and one whose EWS fails alone stays in. Per-workload checks need one namespace per\n\
         # workload (`--workload-namespace`) or layer 7."
    );
    health(out, t, &owa, &t.namespace);
}

/// Exchange 2010 ties sessions to servers (forms login, EWS subscriptions); at layer 4
/// only the client's address can keep them there.
fn persistence(out: &mut String, version: Version) {
    let needs = crate::catalogue::WORKLOADS
        .iter()
        .any(|w| w.affinity(version) != Affinity::None);
    if needs {
        let _ = writeln!(
            out,
            "# Exchange 2010 keeps sessions on the server that began them; at layer 4 the\n\
             # client's address is what can hold them there.\n\
             [pool.persistence]\nkind = \"source\"\nidle_timeout = \"45m\"\n"
        );
    }
}

/// The workload's Managed Availability page over TLS, or (2010) a TLS handshake.
fn health(out: &mut String, t: &Template, w: &Workload, host: &str) {
    let timing = format!(
        "interval = {}\ntimeout = {}\nrise = 2\nfall = 3",
        quote(&millis(t.probe.interval)),
        quote(&millis(t.probe.timeout))
    );
    if !t.version.has_health_pages() {
        let _ = writeln!(
            out,
            "# Exchange 2010 has no health pages: the check completes a TLS handshake.\n\
             [pool.health]\nkind = \"tcp\"\ntls = true\nsni = {}\n{timing}\n",
            quote(host)
        );
        return;
    }
    let _ = writeln!(
        out,
        "# Managed Availability over TLS: 200 with a body starting \"200 OK\". The check does\n\
         # not verify the certificate (clients do, end to end).\n\
         [pool.health]\nkind = \"http\"\ntls = true\nsni = {host}\npath = {path}\nhost = {host}\n\
         expect_status = 200\nexpect_body = \"200 OK\"\n{timing}\n",
        host = quote(host),
        path = quote(w.health_path),
    );
}

/// A tcp service and pool per mail protocol, each checked by its greeting.
pub(crate) fn mail(out: &mut String, t: &Template) {
    if t.mail.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# Mail protocols, always layer 4. Exchange's IMAP4 and POP3 services are off until\n\
         # enabled: remove the ones not in use."
    );
    for (m, listen) in &t.mail {
        let _ = writeln!(
            out,
            "# {} ({})\n[[service]]\nname = {name}\nmode = \"tcp\"\nlisten = {listen}\ndefault_pool = {name}\n",
            m.title,
            m.port,
            name = quote(m.name),
            listen = quote(&listen.to_string()),
        );
        pool_head(out, m.name, &t.servers, Some(m.port));
        let tls = if m.implicit_tls {
            format!("tls = true\nsni = {}\n", quote(&t.namespace))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "[pool.health]\nkind = \"{}\"\n{tls}interval = {}\ntimeout = {}\n",
            m.check,
            quote(&millis(t.probe.interval)),
            quote(&millis(t.probe.timeout)),
        );
    }
}
