//! Server health: the rise/fall state machine (pure, tested without a clock) and the
//! loop that probes one server on its own schedule. How a probe talks to a server is
//! injected, so the loop knows nothing of HTTP or TLS.

mod machine;
mod schedule;

pub use machine::{Machine, Transition};
pub use schedule::{run_probes, Checked, Probe, ServerHealth};
