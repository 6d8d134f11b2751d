//! What sluice knows about Microsoft Exchange: the workload catalogue (where each
//! workload lives, how its health is read, how long its requests may idle, what
//! persistence each version needs) and the configuration template built from it.

mod catalogue;
mod layer4;
mod template;

pub use catalogue::{Affinity, MailService, Version, Workload, MAIL_SERVICES, WORKLOADS};
pub use layer4::mail_on;
pub use template::{
    quote as toml_string, render, ProbeTiming, Scenario, Template, TemplateError, ADMIN_LISTEN,
    LOGIN_COOKIE,
};
