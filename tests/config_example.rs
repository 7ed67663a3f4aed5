//! `config.example.yaml` documents every config key with its default: a key
//! the config gains must be added there (with its default), or this fails.

use leasegate::config::Config;
use leasegate::control::reload::KEYS;
use serde_yaml_ng::Value;

/// The value at `a.b.c` in `v`.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

fn example() -> (String, Value) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
    let text = std::fs::read_to_string(path).expect("read config.example.yaml");
    let value = serde_yaml_ng::from_str(&text).expect("config.example.yaml is YAML");
    (text, value)
}

/// Whether `key` (`section.leaf`) appears as a commented-out line, for
/// optional keys without a default (`# password: secret`).
fn commented(text: &str, key: &str) -> bool {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .any(|l| l.trim_start().starts_with(&format!("# {leaf}:")))
}

#[test]
fn the_example_is_a_valid_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
    Config::load(std::path::Path::new(path)).expect("config.example.yaml loads");
}

#[test]
fn every_key_is_in_the_example_with_its_default() {
    let (text, example) = example();
    // The defaults: a config naming only the one required key.
    let defaults =
        Config::parse("backend:\n  addr: 127.0.0.1:6666\n", "defaults").expect("minimal config");
    let defaults = serde_yaml_ng::to_value(&defaults).expect("serialize defaults");
    let mut missing = Vec::new();
    let mut not_default = Vec::new();
    for (key, _) in KEYS {
        match (at(&example, key), at(&defaults, key)) {
            (Some(shown), Some(default)) if shown != default => {
                not_default.push(format!("{key}: example {shown:?}, default {default:?}"))
            }
            (Some(_), _) => {}
            (None, default) => {
                // Optional keys with no default are shown commented out.
                let optional = default.is_none_or_null();
                if !(optional && commented(&text, key)) {
                    missing.push(key.to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config.example.yaml lacks {missing:?} (add each with its default and a comment)"
    );
    assert!(
        not_default.is_empty(),
        "config.example.yaml shows values that are not the defaults: {not_default:#?}"
    );
}

trait NoneOrNull {
    fn is_none_or_null(&self) -> bool;
}

impl NoneOrNull for Option<&Value> {
    fn is_none_or_null(&self) -> bool {
        self.is_none_or(Value::is_null)
    }
}
