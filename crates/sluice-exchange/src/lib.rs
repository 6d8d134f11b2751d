//! What sluice knows about Microsoft Exchange: the workload catalogue (where each
//! workload lives, how its health is read, how long its requests may idle, what
//! persistence each version needs) and the configuration template built from it.

mod catalogue;
mod template;

pub use catalogue::{Affinity, Version, Workload, WORKLOADS};
pub use template::{
    quote as toml_string, render, ProbeTiming, Template, TemplateError, ADMIN_LISTEN, LOGIN_COOKIE,
};
