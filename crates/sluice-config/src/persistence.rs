//! `[pool.persistence]` and `hash_on`: what keeps a client on one server.

use std::time::Duration;

use crate::model::*;
use crate::reader::{Field, Report, Table};
use crate::rules::{header_name, http_token};

/// The keys each kind reads, so a key given for another kind is named as such.
const COOKIE_KEYS: [&str; 7] = [
    "cookie",
    "cookie_path",
    "cookie_domain",
    "cookie_max_age",
    "secure",
    "http_only",
    "same_site",
];
const SOURCE_KEYS: [&str; 2] = ["source_prefix_v4", "source_prefix_v6"];
const HEADER_KEYS: [&str; 1] = ["header"];

pub(crate) fn parse(mut t: Table, r: &mut Report) -> Persistence {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Cookie,
        Source,
        Header,
    }
    let kind_field = t.require(r, "kind");
    let kind = kind_field.as_ref().and_then(|f| {
        f.choice(
            r,
            &[
                ("cookie", Kind::Cookie),
                ("source", Kind::Source),
                ("header", Kind::Header),
            ],
        )
    });
    let own: &[&str] = match kind {
        Some(Kind::Cookie) => &COOKIE_KEYS,
        Some(Kind::Source) => &SOURCE_KEYS,
        Some(Kind::Header) => &HEADER_KEYS,
        None => &[],
    };
    if kind.is_some() {
        for key in COOKIE_KEYS.iter().chain(&SOURCE_KEYS).chain(&HEADER_KEYS) {
            if !own.contains(key) {
                if let Some(f) = t.get(key) {
                    f.fail(r, "does not apply to this kind of persistence");
                }
            }
        }
    }
    let persistence_kind = match kind {
        Some(Kind::Cookie) => PersistenceKind::Cookie(cookie(&mut t, r)),
        Some(Kind::Source) => PersistenceKind::Source {
            prefix_v4: t
                .get("source_prefix_v4")
                .and_then(|f| f.int_in(r, 0, 32))
                .unwrap_or(32) as u8,
            prefix_v6: t
                .get("source_prefix_v6")
                .and_then(|f| f.int_in(r, 0, 128))
                .unwrap_or(64) as u8,
        },
        Some(Kind::Header) => PersistenceKind::Header(
            t.require(r, "header")
                .and_then(|f| header_name(&f, r))
                .unwrap_or_default(),
        ),
        None => PersistenceKind::Source {
            prefix_v4: 32,
            prefix_v6: 64,
        },
    };
    let persistence = Persistence {
        kind: persistence_kind,
        idle_timeout: t
            .get("idle_timeout")
            .and_then(|f| f.positive_duration(r))
            .unwrap_or(Duration::from_secs(30 * 60)),
        max_entries: t
            .get("max_entries")
            .and_then(|f| f.int_in(r, 1, 100_000_000))
            .unwrap_or(100_000) as usize,
        on_server_down: t
            .get("on_server_down")
            .and_then(|f| {
                f.choice(
                    r,
                    &[
                        ("redispatch", OnServerDown::Redispatch),
                        ("fail", OnServerDown::Fail),
                    ],
                )
            })
            .unwrap_or(OnServerDown::Redispatch),
    };
    t.finish(r);
    persistence
}

fn cookie(t: &mut Table, r: &mut Report) -> PersistCookie {
    let name = t
        .get("cookie")
        .and_then(|f| {
            let name = f.non_empty_str(r)?;
            if !http_token(name) {
                f.fail(r, format!("\"{name}\" is not a valid cookie name"));
                return None;
            }
            Some(name.to_string())
        })
        .unwrap_or_else(|| "SLUICE".into());
    PersistCookie {
        name,
        path: t
            .get("cookie_path")
            .and_then(|f| cookie_attribute(&f, r))
            .unwrap_or_else(|| "/".into()),
        domain: t.get("cookie_domain").and_then(|f| cookie_attribute(&f, r)),
        max_age: t.get("cookie_max_age").and_then(|f| f.positive_duration(r)),
        secure: t.get("secure").and_then(|f| f.bool(r)).unwrap_or(false),
        http_only: t.get("http_only").and_then(|f| f.bool(r)).unwrap_or(true),
        same_site: t.get("same_site").and_then(|f| {
            f.choice(
                r,
                &[
                    ("strict", SameSite::Strict),
                    ("lax", SameSite::Lax),
                    ("none", SameSite::None),
                ],
            )
        }),
    }
}

/// A cookie attribute value: visible characters without `;`.
fn cookie_attribute(f: &Field, r: &mut Report) -> Option<String> {
    let v = f.non_empty_str(r)?;
    if v.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b';') {
        Some(v.to_string())
    } else {
        f.fail(r, "may hold visible characters other than ';' only");
        None
    }
}

/// `hash_on = "source"` or `hash_on = { header = "X-AnchorMailbox" }`.
pub(crate) fn hash_on(f: &Field, r: &mut Report) -> HashOn {
    if f.value.get_ref().is_table() {
        if let Some(mut t) = f.table(r) {
            let header = t.require(r, "header").and_then(|h| header_name(&h, r));
            t.finish(r);
            return header.map_or(HashOn::Source, HashOn::Header);
        }
        return HashOn::Source;
    }
    f.choice(r, &[("source", ())]);
    HashOn::Source
}
