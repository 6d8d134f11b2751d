//! The Exchange workloads and their facts (path, health page, idle timeout to ship,
//! streaming, affinity by version), from Microsoft's load balancing guidance.

use std::fmt;
use std::str::FromStr;

/// An Exchange Server version, as far as a load balancer must tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V2010,
    V2013,
    V2016,
    V2019,
}

impl Version {
    pub const ALL: [Version; 4] = [
        Version::V2010,
        Version::V2013,
        Version::V2016,
        Version::V2019,
    ];

    /// Managed Availability (`healthcheck.htm` per workload) exists from 2013.
    pub fn has_health_pages(self) -> bool {
        self >= Version::V2013
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let year = match self {
            Version::V2010 => 2010,
            Version::V2013 => 2013,
            Version::V2016 => 2016,
            Version::V2019 => 2019,
        };
        write!(f, "{year}")
    }
}

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Version::ALL
            .into_iter()
            .find(|v| v.to_string() == s.trim())
            .ok_or_else(|| format!("unknown Exchange version \"{s}\" (2010, 2013, 2016 or 2019)"))
    }
}

/// The persistence a workload needs on a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    /// Every request may go to any server (2013 and later re-authenticate each one).
    None,
    /// The forms-login cookie must keep reaching one server; OWA and ECP share it.
    SharedLoginCookie,
    /// Notification subscriptions live on the server that made them: keep each client on
    /// one server for this many minutes of inactivity.
    SourceMinutes(u32),
}

/// One Exchange workload (virtual directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Short name used for the route and pool.
    pub name: &'static str,
    pub title: &'static str,
    /// First path segment (matched case-insensitively).
    pub prefix: &'static str,
    /// Managed Availability page (2013 and later).
    pub health_path: &'static str,
    /// Minimum idle timeout to ship, in seconds.
    pub idle_secs: u64,
    /// Long-lived requests or bodies that must stream.
    pub streams: bool,
    /// The first version that has this workload.
    pub since: Version,
    /// What Exchange 2010 needs (later versions need none).
    pub affinity_2010: Affinity,
}

impl Workload {
    pub fn affinity(&self, version: Version) -> Affinity {
        match version {
            Version::V2010 => self.affinity_2010,
            _ => Affinity::None,
        }
    }

    /// A path regex matching the prefix as a whole segment (`/owa`, `/owa/...`).
    pub fn path_regex(&self) -> String {
        format!("^{}(/|$)", self.prefix)
    }
}

const fn workload(
    name: &'static str,
    title: &'static str,
    prefix: &'static str,
    health_path: &'static str,
    idle_secs: u64,
    streams: bool,
) -> Workload {
    Workload {
        name,
        title,
        prefix,
        health_path,
        idle_secs,
        streams,
        since: Version::V2010,
        affinity_2010: Affinity::None,
    }
}

/// Every HTTP workload, in routing order.
pub const WORKLOADS: [Workload; 9] = [
    Workload {
        affinity_2010: Affinity::SharedLoginCookie,
        ..workload(
            "owa",
            "Outlook on the web",
            "/owa",
            "/owa/healthcheck.htm",
            300,
            false,
        )
    },
    Workload {
        affinity_2010: Affinity::SharedLoginCookie,
        ..workload(
            "ecp",
            "Exchange admin center",
            "/ecp",
            "/ecp/healthcheck.htm",
            300,
            false,
        )
    },
    Workload {
        affinity_2010: Affinity::SourceMinutes(45),
        ..workload(
            "ews",
            "Exchange Web Services",
            "/ews",
            "/ews/healthcheck.htm",
            1900,
            true,
        )
    },
    workload(
        "activesync",
        "Exchange ActiveSync",
        "/microsoft-server-activesync",
        "/microsoft-server-activesync/healthcheck.htm",
        3600,
        true,
    ),
    workload(
        "autodiscover",
        "Autodiscover",
        "/autodiscover",
        "/autodiscover/healthcheck.htm",
        120,
        false,
    ),
    Workload {
        since: Version::V2013,
        ..workload(
            "mapi",
            "MAPI over HTTP",
            "/mapi",
            "/mapi/healthcheck.htm",
            600,
            true,
        )
    },
    workload(
        "rpc",
        "Outlook Anywhere (RPC over HTTP)",
        "/rpc",
        "/rpc/healthcheck.htm",
        1200,
        true,
    ),
    workload(
        "oab",
        "Offline address book",
        "/oab",
        "/oab/healthcheck.htm",
        120,
        false,
    ),
    workload(
        "powershell",
        "Remote PowerShell",
        "/powershell",
        "/powershell/healthcheck.htm",
        120,
        false,
    ),
];

/// A mail protocol endpoint of the Client Access role, always balanced at layer 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailService {
    /// Service and pool name.
    pub name: &'static str,
    pub title: &'static str,
    pub port: u16,
    /// The health check kind that greets it: `smtp`, `imap` or `pop`.
    pub check: &'static str,
    /// TLS from the first byte (993, 995): the check completes a handshake first.
    pub implicit_tls: bool,
}

const fn mail(
    name: &'static str,
    title: &'static str,
    port: u16,
    check: &'static str,
    implicit_tls: bool,
) -> MailService {
    MailService {
        name,
        title,
        port,
        check,
        implicit_tls,
    }
}

/// SMTP (front-end transport and client submission), IMAP4 and POP3, plain and TLS.
pub const MAIL_SERVICES: [MailService; 6] = [
    mail("smtp", "SMTP, front-end transport", 25, "smtp", false),
    mail("submission", "SMTP client submission", 587, "smtp", false),
    mail("imap", "IMAP4", 143, "imap", false),
    mail("imaps", "IMAP4 over TLS", 993, "imap", true),
    mail("pop", "POP3", 110, "pop", false),
    mail("pops", "POP3 over TLS", 995, "pop", true),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_carries_the_shipped_idle_timeouts() {
        let idle = |n: &str| WORKLOADS.iter().find(|w| w.name == n).unwrap().idle_secs;
        assert!(idle("activesync") >= 3600, "Ping heartbeat up to 3,540 s");
        assert!(idle("ews") >= 1900, "streaming notifications up to 30 min");
        assert!(idle("rpc") >= 1200);
        assert!(idle("mapi") >= 600);
    }

    #[test]
    fn only_2010_needs_affinity() {
        let owa = WORKLOADS[0];
        assert_eq!(owa.affinity(Version::V2010), Affinity::SharedLoginCookie);
        assert_eq!(owa.affinity(Version::V2016), Affinity::None);
        assert_eq!(
            WORKLOADS[2].affinity(Version::V2010),
            Affinity::SourceMinutes(45)
        );
    }

    #[test]
    fn versions_read_and_print() {
        assert_eq!("2016".parse::<Version>(), Ok(Version::V2016));
        assert!("2007".parse::<Version>().is_err());
        assert!(!Version::V2010.has_health_pages());
    }

    #[test]
    fn health_pages_sit_under_their_prefix() {
        for w in WORKLOADS {
            assert!(
                w.health_path.starts_with(&format!("{}/", w.prefix)),
                "{}",
                w.name
            );
            assert!(w.prefix.chars().all(|c| !c.is_ascii_uppercase()));
        }
    }
}
