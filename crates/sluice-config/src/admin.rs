//! `[admin]`: where the admin API listens and the token every change must carry.

use std::path::Path;

use crate::model::{Admin, AdminToken};
use crate::pool::{existing_file, socket_addr};
use crate::reader::{Report, Table};

/// Shorter tokens are refused: they would be guessable over a network.
const MIN_TOKEN_LEN: usize = 16;

pub(crate) fn parse(mut t: Table, r: &mut Report, base: &Path) -> Admin {
    let listen = t
        .get("listen")
        .and_then(|f| socket_addr(&f, r))
        .unwrap_or_else(|| Admin::default().listen);
    let token = t.get("token_file").and_then(|f| {
        let file = existing_file(&f, r, base)?;
        match std::fs::read_to_string(&file) {
            Ok(text) if text.trim().len() >= MIN_TOKEN_LEN => Some(AdminToken {
                file,
                secret: text.trim().to_string(),
            }),
            Ok(_) => {
                f.fail(
                    r,
                    format!(
                        "the token in {} must be at least {MIN_TOKEN_LEN} characters",
                        file.display()
                    ),
                );
                None
            }
            Err(e) => {
                f.fail(r, format!("cannot read {}: {e}", file.display()));
                None
            }
        }
    });
    t.finish(r);
    Admin { listen, token }
}
