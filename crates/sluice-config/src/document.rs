//! The whole file: syntax errors, top-level tables, names that must be unique and
//! references that must resolve.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;

use crate::error::ConfigErrors;
use crate::model::{Config, Global, LogFormat};
use crate::reader::{Report, Table};
use crate::{pool, service};

/// A name as written, with where it was written, for reporting duplicates and references.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) span: Range<usize>,
}

/// Parses configuration text. `file` names it in errors; relative paths in it are
/// resolved against `base_dir`.
pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut r = Report::new(file, text);
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    for e in &syntax_errors {
        let span = e.span().unwrap_or(0..0);
        r.error(&span, "", e.message().trim_end());
    }
    if !r.errors.is_empty() {
        return Err(ConfigErrors(r.errors));
    }
    let mut root = Table::new(String::new(), doc.get_ref(), doc.span());
    let global = root
        .section(&mut r, "global", parse_global)
        .unwrap_or_default();
    let admin = root.section(&mut r, "admin", |t, r| crate::admin::parse(t, r, base_dir));
    let pool_tables = root
        .get("pool")
        .map(|f| f.tables(&mut r))
        .unwrap_or_default();
    let pools = pool::parse_all(pool_tables, &mut r, base_dir);
    let pool_index: service::PoolIndex = pools
        .iter()
        .enumerate()
        .map(|(i, p)| (&*p.name, (i, p)))
        .collect();
    let service_tables = match root.get("service") {
        Some(f) => f.tables(&mut r),
        None => {
            r.error(&(0..0), "service", "at least one [[service]] is required");
            Vec::new()
        }
    };
    let services = service::parse_all(service_tables, &mut r, base_dir, &pool_index);
    drop(pool_index);
    root.finish(&mut r);
    if r.errors.is_empty() {
        Ok(Config {
            global,
            admin,
            services,
            pools,
        })
    } else {
        r.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(r.errors))
    }
}

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![crate::ConfigError {
            file: file.clone(),
            line: 1,
            column: 1,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, &file, base)
}

/// A longer watch would spend a core on waiting rather than save it a wake-up.
const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

fn parse_global(mut t: Table, r: &mut Report) -> Global {
    let d = Global::default();
    let g = Global {
        shutdown_timeout: t.duration_or(r, "shutdown_timeout", d.shutdown_timeout),
        access_log: t
            .get("access_log")
            .and_then(|f| f.bool(r))
            .unwrap_or(d.access_log),
        access_log_format: t
            .get("access_log_format")
            .and_then(|f| {
                f.choice(
                    r,
                    &[("logfmt", LogFormat::Logfmt), ("json", LogFormat::Json)],
                )
            })
            .unwrap_or(d.access_log_format),
        persistence_secret: t.get("persistence_secret").and_then(|f| {
            let secret = f.non_empty_str(r)?;
            if secret.len() < 16 {
                f.fail(r, "use at least 16 characters");
            }
            Some(secret.to_string())
        }),
        workers: t
            .get("workers")
            .and_then(|f| f.int_in(r, 1, 1024))
            .map(|n| n as usize),
        busy_poll: t
            .get("busy_poll")
            .and_then(|f| {
                let d = f.duration(r)?;
                if d > MAX_BUSY_POLL {
                    f.fail(r, "must be at most 1ms");
                    return None;
                }
                Some(d)
            })
            .unwrap_or(d.busy_poll),
        max_connections: t
            .get("max_connections")
            .and_then(|f| f.int_in(r, 1, 10_000_000))
            .map(|n| n as u32),
        preserve_header_case: t
            .get("preserve_header_case")
            .and_then(|f| f.bool(r))
            .unwrap_or(d.preserve_header_case),
    };
    t.finish(r);
    g
}

/// Reports the second and later uses of each name.
pub(crate) fn report_duplicates(names: &[Named], what: &str, r: &mut Report) {
    let mut seen: HashMap<&str, &Named> = HashMap::new();
    for n in names {
        if let Some(first) = seen.get(n.name.as_str()) {
            let msg = format!(
                "duplicate {what} \"{}\" (first used at {})",
                n.name, first.path
            );
            r.error(&n.span, &n.path, msg);
        } else {
            seen.insert(&n.name, n);
        }
    }
}

/// Resolves a path from the file against the file's directory.
pub(crate) fn resolve(base: &Path, p: &str) -> std::path::PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
