//! sluice's data plane end to end: a real proxy on ephemeral loopback ports in front of
//! real servers from the lab.

mod balancing;
mod errors;
mod expect;
mod fuzz_corpus;
mod harness;
mod health;
mod http2;
mod keepalive;
mod layer4;
mod limits;
mod operations;
mod persistence;
mod pinning;
mod routing;
mod rules;
mod slow;
mod smuggling;
mod streaming;
mod tls;
mod tls_policy;
mod wire;
