//! Emulated Microsoft Exchange Client Access servers, on loopback, for sluice's lab and
//! end-to-end tests.
//!
//! Each [`ExchangeServer`] has a name and a version and behaves, where a load balancer can
//! notice, as `EXCHANGE.md` and `EXCHANGE-WIRE.md` describe:
//!
//! - `/<vdir>/healthcheck.htm` per workload while that component is active (2013 and later);
//!   components are switched per workload at run time ([`ExchangeServer::set_active`], or
//!   the server's admin endpoint, see [`admin`]);
//! - `/` redirects to `/owa/` (2013 CU6 and later);
//! - OWA and ECP forms login with session cookies sealed by a per-server key: a server that
//!   cannot open a cookie answers `440 Login Timeout` ([`owa`]);
//! - NTLM-like connection-bound authentication on EWS, MAPI and RPC, `Persistent-Auth` on
//!   Negotiate ([`sluice_lab::conn_auth`]);
//! - Outlook Anywhere channels, MAPI long polls with `PENDING` chunks, ActiveSync `Ping`
//!   held for its heartbeat, EWS honouring `Expect: 100-continue`, and Exchange 2010 EWS
//!   subscriptions that only their own server knows;
//! - per-workload counters of what it served ([`Counts`]).

pub mod activesync;
pub mod admin;
mod array;
mod auth;
mod autodiscover;
pub mod ews;
pub mod mapi;
pub mod owa;
mod reply;
pub mod rpc;
mod seal;
mod server;
mod state;

pub use array::{Array, ArrayOptions};
pub use seal::SealKey;
pub use server::{ExchangeServer, ServerSpec, Timings};
pub use sluice_exchange::Version;
pub use state::{Counts, Mailboxes};
