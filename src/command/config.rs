//! The `commands:` section of the config: the deny list, class overrides and
//! whether to learn write flags from the node. It lives beside the table it
//! shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Class;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandsConfig {
    /// Commands answered with `-ERR command '<name>' is disabled by leasegate`.
    pub deny: Vec<String>,
    /// Per-command class overrides, e.g. `{ mymodule.set: write }`.
    pub classes: BTreeMap<String, ClassName>,
    /// Ask the backend for `COMMAND` at start-up and treat every command it
    /// flags `write` as a write (adds module and newer commands to the table).
    pub learn_from_backend: bool,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            classes: BTreeMap::new(),
            learn_from_backend: true,
        }
    }
}

/// A command class as spelled in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassName {
    Read,
    Write,
    Admin,
}

impl From<ClassName> for Class {
    fn from(c: ClassName) -> Class {
        match c {
            ClassName::Read => Class::Read,
            ClassName::Write => Class::Write,
            ClassName::Admin => Class::Admin,
        }
    }
}
