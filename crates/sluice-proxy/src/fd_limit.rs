//! The open-files limit, which bounds how many connections sluice can hold.

#[cfg(target_os = "linux")]
use rustix::process::{getrlimit, setrlimit, Resource};

/// Listeners, probes, the admin API and log files need some descriptors of their own.
const RESERVED_FDS: u64 = 128;

/// Raises the soft open-files limit to the hard one, as a server that holds thousands of
/// connections must (the usual soft default is 1,024).
#[cfg(target_os = "linux")]
pub fn raise() {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-files limit: {e}");
        }
    }
}

/// The default process-wide connection limit: each client connection may hold a server
/// connection too, so half of the open-files limit, less a reserve. Past it new
/// connections are closed on accept instead of failing later for want of a descriptor.
pub(crate) fn connections_allowed() -> usize {
    #[cfg(target_os = "linux")]
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    #[cfg(not(target_os = "linux"))]
    let limit = 1024;
    (limit.saturating_sub(RESERVED_FDS) / 2).max(1) as usize
}

#[cfg(not(target_os = "linux"))]
pub fn raise() {}
