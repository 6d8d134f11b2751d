//! A walker over toml's spanned document that records every problem it meets instead of
//! stopping at the first, so `sluice check` can list them all with their locations.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::error::{ConfigError, LineIndex};

/// The longest duration accepted anywhere: far beyond any sensible timeout, and small
/// enough that adding it to a clock reading can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Collects errors for one file.
pub(crate) struct Report<'s> {
    file: String,
    index: LineIndex<'s>,
    pub(crate) errors: Vec<ConfigError>,
}

impl<'s> Report<'s> {
    pub(crate) fn new(file: &str, text: &'s str) -> Self {
        Report {
            file: file.to_string(),
            index: LineIndex::new(text),
            errors: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, span: &Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = self.index.locate(span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        });
    }
}

/// A value with its key path and location.
#[derive(Clone)]
pub(crate) struct Field<'a, 'i> {
    pub(crate) path: String,
    pub(crate) value: &'a Spanned<DeValue<'i>>,
}

impl<'a, 'i> Field<'a, 'i> {
    pub(crate) fn span(&self) -> Range<usize> {
        self.value.span()
    }

    pub(crate) fn fail(&self, r: &mut Report, message: impl Into<String>) {
        r.error(&self.span(), &self.path, message);
    }

    fn expected(&self, r: &mut Report, what: &str) {
        let found = self.value.get_ref().type_str();
        self.fail(r, format!("expected {what}, found {found}"));
    }

    pub(crate) fn str(&self, r: &mut Report) -> Option<&'a str> {
        let s = self.value.get_ref().as_str();
        if s.is_none() {
            self.expected(r, "a string");
        }
        s
    }

    pub(crate) fn non_empty_str(&self, r: &mut Report) -> Option<&'a str> {
        let s = self.str(r)?;
        if s.trim().is_empty() {
            self.fail(r, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub(crate) fn bool(&self, r: &mut Report) -> Option<bool> {
        let b = self.value.get_ref().as_bool();
        if b.is_none() {
            self.expected(r, "true or false");
        }
        b
    }

    pub(crate) fn int_in(&self, r: &mut Report, min: i64, max: i64) -> Option<i64> {
        let Some(int) = self.value.get_ref().as_integer() else {
            self.expected(r, "an integer");
            return None;
        };
        match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.fail(r, format!("must be between {min} and {max}"));
                None
            }
        }
    }

    /// A duration with units, `"300s"`, `"1m30s"`, `"250ms"`.
    pub(crate) fn duration(&self, r: &mut Report) -> Option<Duration> {
        let text = self.str(r)?;
        match humantime::parse_duration(text) {
            Ok(d) if d > MAX_DURATION => {
                self.fail(r, "must be at most 365 days");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.fail(
                    r,
                    format!("not a duration ({e}); write e.g. \"30s\", \"5m\", \"250ms\""),
                );
                None
            }
        }
    }

    pub(crate) fn positive_duration(&self, r: &mut Report) -> Option<Duration> {
        let d = self.duration(r)?;
        if d.is_zero() {
            self.fail(r, "must be longer than zero");
            return None;
        }
        Some(d)
    }

    pub(crate) fn table(&self, r: &mut Report) -> Option<Table<'a, 'i>> {
        match self.value.get_ref() {
            DeValue::Table(t) => Some(Table::new(self.path.clone(), t, self.span())),
            _ => {
                self.expected(r, "a table");
                None
            }
        }
    }

    /// The elements of an array, each with its indexed key path.
    pub(crate) fn array(&self, r: &mut Report) -> Option<Vec<(String, &'a Spanned<DeValue<'i>>)>> {
        match self.value.get_ref() {
            DeValue::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{}[{i}]", self.path), v))
                    .collect(),
            ),
            _ => {
                self.expected(r, "an array");
                None
            }
        }
    }

    /// A single string value or each element of a list, with its own key path; an empty
    /// list is reported as missing at least one `what`.
    pub(crate) fn one_or_many(&self, r: &mut Report, what: &str) -> Vec<Field<'a, 'i>> {
        if self.value.get_ref().is_str() {
            return vec![self.clone()];
        }
        let items = self.array(r).unwrap_or_default();
        if items.is_empty() && self.value.get_ref().is_array() {
            self.fail(r, format!("list at least one {what}"));
        }
        items
            .into_iter()
            .map(|(path, value)| Field { path, value })
            .collect()
    }

    /// Each element of an array as a table; elements of another type are reported.
    pub(crate) fn tables(&self, r: &mut Report) -> Vec<Table<'a, 'i>> {
        let Some(items) = self.array(r) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|(path, value)| {
                Field {
                    path: path.clone(),
                    value,
                }
                .table(r)
            })
            .collect()
    }

    /// Each element of an array as a string.
    pub(crate) fn strings(&self, r: &mut Report) -> Vec<(String, Range<usize>, &'a str)> {
        let Some(items) = self.array(r) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|(path, value)| {
                let field = Field {
                    path: path.clone(),
                    value,
                };
                let s = field.str(r)?;
                Some((path.clone(), value.span(), s))
            })
            .collect()
    }

    /// A string that must be one of `choices`.
    pub(crate) fn choice<T: Copy>(&self, r: &mut Report, choices: &[(&str, T)]) -> Option<T> {
        let s = self.str(r)?;
        let found = choices.iter().find(|(name, _)| *name == s).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            self.fail(
                r,
                format!(
                    "unknown value \"{s}\"; expected one of {}",
                    names.join(", ")
                ),
            );
        }
        found
    }
}

/// A table being read: remembers which keys were used so the rest can be reported as unknown.
pub(crate) struct Table<'a, 'i> {
    pub(crate) path: String,
    table: &'a DeTable<'i>,
    pub(crate) span: Range<usize>,
    used: Vec<&'static str>,
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn new(path: String, table: &'a DeTable<'i>, span: Range<usize>) -> Self {
        Table {
            path,
            table,
            span,
            used: Vec::new(),
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An optional key.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<Field<'a, 'i>> {
        self.used.push(key);
        let value = self.table.get(key)?;
        Some(Field {
            path: self.child_path(key),
            value,
        })
    }

    /// A key that must be present; its absence is reported at the table.
    pub(crate) fn require(&mut self, r: &mut Report, key: &'static str) -> Option<Field<'a, 'i>> {
        if !self.table.contains_key(key) {
            let path = self.child_path(key);
            r.error(&self.span, &path, "is required");
            self.used.push(key);
            return None;
        }
        self.get(key)
    }

    /// An optional sub-table, read by `parse`.
    pub(crate) fn section<T>(
        &mut self,
        r: &mut Report,
        key: &'static str,
        parse: impl FnOnce(Table<'a, 'i>, &mut Report) -> T,
    ) -> Option<T> {
        let table = self.get(key)?.table(r)?;
        Some(parse(table, r))
    }

    /// An optional positive duration, else `default`.
    pub(crate) fn duration_or(
        &mut self,
        r: &mut Report,
        key: &'static str,
        default: Duration,
    ) -> Duration {
        self.get(key)
            .and_then(|f| f.positive_duration(r))
            .unwrap_or(default)
    }

    /// Reports every key that no reader asked for.
    pub(crate) fn finish(self, r: &mut Report) {
        for (key, _) in self.table.iter() {
            let name: &str = key.get_ref();
            if !self.used.contains(&name) {
                let path = self.child_path(name);
                let hint = closest(name, &self.used)
                    .map(|c| format!("; did you mean \"{c}\"?"))
                    .unwrap_or_default();
                r.error(&key.span(), &path, format!("unknown key{hint}"));
            }
        }
    }
}

/// The known key nearest to a misspelt one, when it is close enough to be a likely typo.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("pool", "pool"), 0);
        assert_eq!(edit_distance("pol", "pool"), 1);
        assert_eq!(edit_distance("algoritm", "algorithm"), 1);
        assert_eq!(closest("listn", &["listen", "name"]), Some("listen"));
        assert_eq!(closest("zzzzzz", &["listen", "name"]), None);
    }
}
