//! Command classification: which commands are reads, which are writes.
//!
//! The Gate only ever asks one question of a request, "is this a write?", and
//! this module answers it. The answer comes from a built-in table covering
//! Redis 7 and the Kvrocks-only commands ([`table`]), optionally refined by the
//! write flags the backend reports in its `COMMAND` reply at start-up, and
//! finally by per-command overrides from the config. Unknown commands are
//! treated as writes: when in doubt, fence.

mod table;

/// What kind of request a command is, as far as fencing is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Class {
    /// Reads data or connection state; never fenced (only `CLIENT PAUSE ... ALL` holds it).
    Read,
    /// Mutates the keyspace; forwarded only while the node may accept writes.
    Write,
    /// Handled by leasegate itself and never forwarded (e.g. `CLUSTERX HEARTBEAT`).
    Intercept,
    /// Node administration (CONFIG SET, REPLICAOF, CLUSTERX SETNODES, ...): not a
    /// data write, so never fenced, but observed for role changes.
    Admin,
}

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

pub use crate::resp::name::{Name, NAME_CAP};

mod config;
mod reply_mode;
mod special;
pub use config::{ClassName, CommandsConfig};
pub use reply_mode::{ReplyMode, CLIENT_REPLY_ON};
pub use special::Special;

/// FNV-1a. Hand-written rather than a crate because it runs once per request
/// on the hot path over names of a few bytes, where SipHash costs more than
/// the rest of classification; hash flooding is not a concern for a table
/// whose keys come from the config and the built-in list, never from clients.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<Fnv>>;

/// What the table knows about one command.
#[derive(Debug, Clone)]
struct Entry {
    class: Class,
    /// Present when `commands.deny` lists the command: the complete reply.
    denied: Option<Bytes>,
    special: Special,
    /// Subcommands with a class (or a tag) of their own.
    subcommands: Vec<(Box<[u8]>, Class, Special)>,
}

impl Entry {
    /// The class and tag of subcommand `sub` (any case), if it has its own.
    #[inline(never)]
    fn subcommand(&self, sub: &[u8]) -> Option<(Class, Special)> {
        let sub = Name::new(sub);
        self.subcommands
            .iter()
            .find(|(s, _, _)| **s == *sub.as_bytes())
            .map(|(_, c, t)| (*c, *t))
    }
}

/// The classification of one request.
#[derive(Debug, Clone, Copy)]
pub struct Classified<'t> {
    pub class: Class,
    /// What else the proxy must know about it.
    pub special: Special,
    /// The reply to send instead of forwarding, when the command is denied.
    pub denied: Option<&'t Bytes>,
}

/// The last short name a table was asked about, and its entry (none: an
/// unknown command), for [`CommandTable::classify_after`]. It borrows the
/// table it was filled from, so it cannot outlive a reload of the policy;
/// key 0 is no name (a short key always has a non-zero last byte).
#[derive(Debug, Clone, Copy, Default)]
pub struct LastLookup<'t> {
    key: u64,
    entry: Option<&'t Entry>,
}

/// Command name → class, built from the built-in table, the backend's
/// `COMMAND` flags and the config. Immutable once built; a reload builds a new one.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    /// Names of up to 8 bytes (nearly every command), keyed by the name's
    /// bytes as one integer ([`Name::short_key`]): one multiply for a hash
    /// and one integer compare, where a byte-keyed map hashes byte by byte
    /// and compares with `memcmp` (callgrind put that at a tenth of a
    /// pipelined request's instructions).
    short: HashMap<u64, Entry, BuildHasherDefault<WordHash>>,
    /// Every other name, by its lowercase bytes.
    long: FastMap<Entry>,
}

/// Hashes one `u64` key with a multiply and a fold (keys are short names;
/// hand-written for the same reason as [`Fnv`]).
#[derive(Default)]
struct WordHash(u64);

impl Hasher for WordHash {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Not used for `u64` keys; anything else is hashed as FNV-1a.
    fn write(&mut self, bytes: &[u8]) {
        let mut fnv = Fnv(self.0);
        fnv.write(bytes);
        self.0 = fnv.finish();
    }

    #[inline]
    fn write_u64(&mut self, key: u64) {
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

/// Whether `name` (any case) is in the built-in table.
pub fn is_builtin(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    table::COMMANDS.iter().any(|(n, _)| *n == lower)
}

impl CommandTable {
    /// The built-in table alone.
    pub fn builtin() -> CommandTable {
        CommandTable::indexed(CommandTable::builtin_entries())
    }

    /// [`CommandTable::builtin`]'s entries, by lowercase name.
    fn builtin_entries() -> FastMap<Entry> {
        let mut entries = FastMap::default();
        for (name, class) in table::COMMANDS {
            entries.insert(
                Box::from(name.as_bytes()),
                Entry {
                    class: *class,
                    denied: None,
                    special: Special::None,
                    subcommands: Vec::new(),
                },
            );
        }
        for (name, sub, class) in table::SUBCOMMANDS {
            if let Some(entry) = entries.get_mut(name.as_bytes()) {
                entry
                    .subcommands
                    .push((Box::from(sub.as_bytes()), *class, Special::None));
            }
        }
        for (name, sub, special) in special::SPECIALS {
            let Some(entry) = entries.get_mut(name.as_bytes()) else {
                continue;
            };
            match sub {
                None => entry.special = *special,
                Some(sub) => match entry
                    .subcommands
                    .iter_mut()
                    .find(|s| *s.0 == *sub.as_bytes())
                {
                    Some(known) => known.2 = *special,
                    None => {
                        let class = entry.class;
                        entry
                            .subcommands
                            .push((Box::from(sub.as_bytes()), class, *special));
                    }
                },
            }
        }
        entries
    }

    /// The table leasegate runs with: built-in, then `learned` (commands the
    /// backend flags `write`, and commands it knows that the table does not),
    /// then the config's class overrides and deny list.
    pub fn build(config: &CommandsConfig, learned: &[LearnedCommand]) -> CommandTable {
        let mut entries = CommandTable::builtin_entries();
        for l in learned {
            let key = l.name.to_ascii_lowercase().into_bytes().into_boxed_slice();
            match entries.get_mut(&key) {
                Some(entry) if l.class == Class::Write && entry.class == Class::Read => {
                    entry.class = Class::Write;
                }
                Some(_) => {}
                None => {
                    entries.insert(
                        key,
                        Entry {
                            class: l.class,
                            denied: None,
                            special: Special::None,
                            subcommands: Vec::new(),
                        },
                    );
                }
            }
        }
        for (name, class) in &config.classes {
            let key = name.to_ascii_lowercase().into_bytes().into_boxed_slice();
            let entry = entries.entry(key).or_insert(Entry {
                class: Class::Write,
                denied: None,
                special: Special::None,
                subcommands: Vec::new(),
            });
            // The override applies to every subcommand; their tags stay.
            entry.class = (*class).into();
            for sub in &mut entry.subcommands {
                sub.1 = entry.class;
            }
        }
        for name in &config.deny {
            let lower = name.to_ascii_lowercase();
            let reply = Bytes::from(format!(
                "-ERR command '{lower}' is disabled by leasegate\r\n"
            ));
            let entry = entries
                .entry(lower.into_bytes().into_boxed_slice())
                .or_insert(Entry {
                    class: Class::Write,
                    denied: None,
                    special: Special::None,
                    subcommands: Vec::new(),
                });
            entry.denied = Some(reply);
        }
        CommandTable::indexed(entries)
    }

    /// The table, each name in the map it is looked up in.
    fn indexed(entries: FastMap<Entry>) -> CommandTable {
        let mut table = CommandTable::default();
        for (name, entry) in entries {
            match Name::new(&name).short_key() {
                Some(key) => table.short.insert(key, entry),
                None => table.long.insert(name, entry),
            };
        }
        table
    }

    /// Classifies a request by its command name and first argument, as the
    /// client sent them (any case: the table is keyed by lowercase names,
    /// and `name` and `sub` are read as `Name::new` lowercases them).
    /// Unknown commands are writes. Measured hot path: a name of up to 8
    /// bytes is keyed straight from the request's bytes
    /// ([`Name::short_key_of`]), and the first argument is only read for a
    /// command with subcommands.
    #[inline]
    pub fn classify(&self, name: &[u8], sub: &[u8]) -> Classified<'_> {
        self.classify_after(name, sub, &mut LastLookup::default())
    }

    /// [`CommandTable::classify`], remembering the last short name looked
    /// up in `last`: the requests of one read are mostly one command (a
    /// pipeline of SETs), and a name like the one before is not looked up
    /// again (measured hot path: the map lookup was half of classifying).
    #[inline]
    pub fn classify_after<'t>(
        &'t self,
        name: &[u8],
        sub: &[u8],
        last: &mut LastLookup<'t>,
    ) -> Classified<'t> {
        let entry = match Name::short_key_of(name) {
            Some(key) if key == last.key => last.entry,
            Some(key) => {
                let entry = self.short.get(&key);
                *last = LastLookup { key, entry };
                entry
            }
            None => self.long_entry(name),
        };
        match entry {
            None => Classified {
                class: Class::Write,
                special: Special::None,
                denied: None,
            },
            Some(entry) => {
                let (mut class, mut special) = (entry.class, entry.special);
                if !entry.subcommands.is_empty() {
                    if let Some((c, t)) = entry.subcommand(sub) {
                        (class, special) = (c, t);
                    }
                }
                Classified {
                    class,
                    special,
                    denied: entry.denied.as_ref(),
                }
            }
        }
    }

    /// The entry of a name longer than 8 bytes (or ending in a zero byte),
    /// looked up by its lowercased bytes. Out of line, so that the hot
    /// path keeps no name buffer on its stack.
    #[inline(never)]
    fn long_entry(&self, name: &[u8]) -> Option<&Entry> {
        self.long.get(Name::new(name).as_bytes())
    }
}

/// A command as the backend describes it in its `COMMAND` reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LearnedCommand {
    pub name: String,
    /// `Write` when flagged `write`, `Admin` when flagged `admin`, else `Read`.
    pub class: Class,
}

/// Extracts names and flags from a decoded RESP2 `COMMAND` reply
/// (`[[name, arity, [flags...], ...], ...]`).
pub fn learn_from_command_reply(
    reply: &redis_protocol::resp2::types::OwnedFrame,
) -> Vec<LearnedCommand> {
    use redis_protocol::resp2::types::OwnedFrame as F;
    fn text(f: &F) -> Option<String> {
        match f {
            F::BulkString(data) | F::SimpleString(data) => {
                Some(String::from_utf8_lossy(data).to_ascii_lowercase())
            }
            _ => None,
        }
    }
    let F::Array(commands) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for cmd in commands {
        let F::Array(fields) = cmd else { continue };
        let Some(name) = fields.first().and_then(text) else {
            continue;
        };
        let flags: Vec<String> = match fields.get(2) {
            Some(F::Array(data)) => data.iter().filter_map(text).collect(),
            _ => Vec::new(),
        };
        let class = if flags.iter().any(|f| f == "write") {
            Class::Write
        } else if flags.iter().any(|f| f == "admin") {
            Class::Admin
        } else {
            Class::Read
        };
        out.push(LearnedCommand { name, class });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(table: &CommandTable, name: &[u8]) -> Class {
        table.classify(name, b"").class
    }

    /// Classifying a sequence of requests with the last lookup remembered
    /// gives what classifying each on its own gives: across a change of
    /// command, of case, to and from unknown names, long names and
    /// subcommands, and with a deny list.
    #[test]
    fn remembering_the_last_lookup_changes_no_classification() {
        let config = CommandsConfig {
            deny: vec!["flushall".into()],
            ..CommandsConfig::default()
        };
        let table = CommandTable::build(&config, &[]);
        let requests: [(&[u8], &[u8]); 14] = [
            (b"SET", b"k"),
            (b"set", b"k"),
            (b"GET", b"k"),
            (b"GET", b"k"),
            (b"nosuchcm", b""),
            (b"nosuchcm", b""),
            (b"client", b"pause"),
            (b"CLIENT", b"list"),
            (b"flushall", b""),
            (b"FLUSHALL", b""),
            (b"clusterx", b"heartbeat"),
            (b"clusterx", b"setnodes"),
            (b"zrangebyscore", b"k"),
            (b"set", b"k"),
        ];
        let mut last = LastLookup::default();
        for (name, sub) in requests {
            let alone = table.classify(name, sub);
            let after = table.classify_after(name, sub, &mut last);
            let what = String::from_utf8_lossy(name);
            assert_eq!(alone.class, after.class, "{what}");
            assert_eq!(alone.special, after.special, "{what}");
            assert_eq!(alone.denied, after.denied, "{what}");
        }
        assert!(table.classify(b"FLUSHALL", b"").denied.is_some());
    }

    /// Short names are found through their integer key in any case, long
    /// ones through their bytes, and a name that differs from a known one
    /// only by trailing zero bytes is not taken for it.
    #[test]
    fn short_and_long_names_are_found_and_zero_padding_is_not_a_match() {
        let table = CommandTable::builtin();
        assert_eq!(class_of(&table, b"GET"), Class::Read);
        assert_eq!(class_of(&table, b"get"), Class::Read);
        assert_eq!(class_of(&table, b"ZRANGEBYSCORE"), Class::Read);
        assert_eq!(class_of(&table, b"smembers"), Class::Read, "8 bytes");
        assert_eq!(class_of(&table, b"get\0"), Class::Write, "unknown: a write");
        assert_eq!(class_of(&table, b"get\0\0\0\0\0"), Class::Write);
        for (name, class) in table::COMMANDS {
            assert_eq!(class_of(&table, name.as_bytes()), *class, "{name}");
        }
    }
}
