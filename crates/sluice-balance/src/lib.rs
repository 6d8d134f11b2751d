//! Pure server selection: no I/O, no clock. The proxy says which servers may take a request
//! (up, not draining, under their connection limit, primary or backup) and these functions
//! choose among them.

mod least_conn;
mod round_robin;

pub use least_conn::least_connections;
pub use round_robin::SmoothWeighted;
