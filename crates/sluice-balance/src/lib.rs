//! Pure server selection: no I/O, no clock of its own. The proxy says which servers may
//! take a request (up, not draining, under their connection limit, primary or backup) and
//! these functions choose among them; the stick table remembers choices, with time passed in.

mod least_conn;
mod rendezvous;
mod round_robin;
pub mod slow_start;
mod stick;

pub use least_conn::least_connections;
pub use rendezvous::rendezvous;
pub use round_robin::SmoothWeighted;
pub use stick::StickTable;
