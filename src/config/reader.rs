//! Reading variables: each read either yields a value or records one line naming the variable
//! and what was wrong, so start-up reports every problem at once instead of the first.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

/// Reads variables and collects problems instead of stopping at the first.
pub(super) struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
    /// The value in force of each variable read with a default or a type, written one way:
    /// the default when unset, a number as it prints, a choice by its name, a list by its
    /// entries.
    in_force: RefCell<BTreeMap<String, String>>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
            in_force: RefCell::default(),
        }
    }

    /// The value in force of each variable read with a default or a type, written one way
    /// (so `5`, ` 05` and unset with a default of 5 are one value); a variable read as
    /// written is not among them.
    pub(super) fn in_force(&self) -> BTreeMap<String, String> {
        self.in_force.borrow().clone()
    }

    /// Records the value in force of `name` as it is used, when reading it normalised it
    /// further (a URL's trailing `/`).
    pub(super) fn keep(&self, name: &str, value: impl Display) {
        self.in_force
            .borrow_mut()
            .insert(name.to_owned(), value.to_string());
    }

    /// The trimmed value, unless unset or blank.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn get_or(&self, name: &str, default: &str) -> String {
        let value = self.get(name).unwrap_or_else(|| default.to_owned());
        self.keep(name, &value);
        value
    }

    /// The value; unset in production is a problem, since the development default would be
    /// wrong there.
    pub(super) fn required_in_production(
        &mut self,
        name: &str,
        production: bool,
    ) -> Option<String> {
        let value = self.get(name);
        if production && value.is_none() {
            self.problem(format!("{name}: required when HERALD_ENV=production"));
        }
        value
    }

    /// Records a problem: one line, starting with the variable's name.
    pub(super) fn problem(&mut self, line: impl Into<String>) {
        self.problems.push(line.into());
    }

    pub(super) fn parse<T: FromStr + Display>(
        &mut self,
        name: &str,
        default: T,
        expected: &str,
    ) -> T {
        let value = match self.get(name) {
            None => default,
            Some(raw) => raw.parse().unwrap_or_else(|_| {
                self.problem(format!("{name}: expected {expected}, got '{raw}'"));
                default
            }),
        };
        self.keep(name, &value);
        value
    }

    /// A number from `min` to `max` (a whole number of `unit`).
    pub(super) fn ranged<T>(&mut self, name: &str, default: T, (min, max): (T, T), unit: &str) -> T
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let value = self.parse(name, default, &format!("a whole number of {unit}"));
        if value < min || value > max {
            self.problem(format!("{name}: must be from {min} to {max}"));
        }
        value
    }

    pub(super) fn seconds(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(self.parse(name, default, "whole seconds"))
    }

    pub(super) fn millis(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_millis(self.parse(name, default, "milliseconds"))
    }

    pub(super) fn hours(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(3600 * self.parse(name, default, "whole hours"))
    }

    pub(super) fn days(&mut self, name: &str, default: u64) -> Duration {
        Duration::from_secs(86_400 * self.parse(name, default, "whole days"))
    }

    pub(super) fn choice<T: Copy + PartialEq>(
        &mut self,
        name: &str,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        let Some(raw) = self.get(name) else {
            if let Some((key, _)) = options.iter().find(|(_, value)| *value == default) {
                self.keep(name, key);
            }
            return default;
        };
        match options
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(&raw))
        {
            Some((key, value)) => {
                self.keep(name, key);
                *value
            }
            None => {
                let names: Vec<_> = options.iter().map(|(k, _)| *k).collect();
                self.problem(format!(
                    "{name}: expected one of {}, got '{raw}'",
                    names.join(", ")
                ));
                default
            }
        }
    }

    /// A comma-separated list, blanks dropped.
    pub(super) fn list(&self, name: &str) -> Vec<String> {
        let entries: Vec<String> = self
            .get(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if !entries.is_empty() {
            self.keep(name, entries.join(","));
        }
        entries
    }

    /// Records `name: must be at least 1` when `zero`.
    pub(super) fn nonzero(&mut self, name: &str, zero: bool) {
        if zero {
            self.problem(format!("{name}: must be at least 1"));
        }
    }

    /// Every problem recorded, if any.
    pub(super) fn finish(self) -> Result<(), Vec<String>> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.problems)
        }
    }
}
