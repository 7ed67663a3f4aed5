//! The documentation cannot drift from the code:
//!
//! * `docs/configuration.md` has one row for every config key
//!   ([`KEYS`]), with the default `src/config/` gives it and the reload
//!   behaviour [`KEYS`] gives it;
//! * every config key the docs mention in a code span (`` `lease.mode` ``)
//!   exists, every repository path they name in one (`` `src/config/` ``)
//!   exists, and every YAML config example in them is accepted by
//!   [`Config::parse`];
//! * every relative link (and its `#anchor`) leads somewhere;
//! * the README stays the front door: at most 300 lines.
//!
//! The documents checked: `README.md`, `ARCHITECTURE.md` and `docs/*.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use leasegate::config::Config;
use leasegate::control::reload::{Apply, KEYS};
use serde_yaml_ng::{Mapping, Value};

const README_MAX_LINES: usize = 300;

/// The one key a config cannot leave out.
const MINIMAL_CONFIG: &str = "backend:\n  addr: 127.0.0.1:6666\n";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The documents: README.md, ARCHITECTURE.md and docs/*.md, as paths
/// relative to the repository root.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            p.strip_prefix(root())
                .expect("under the root")
                .to_path_buf()
        })
        .collect();
    docs.sort();
    out.extend(docs);
    out
}

/// The serialized defaults: a config naming only the one required key.
fn defaults() -> Value {
    let config = Config::parse(MINIMAL_CONFIG, "defaults").expect("minimal config");
    serde_yaml_ng::to_value(&config).expect("serialize defaults")
}

/// The value at `a.b.c` in `v`.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

/// The config's top-level sections (`lease`, `verify`, ...): the keys of
/// the defaults whose values are mappings.
fn sections() -> BTreeSet<String> {
    let defaults = defaults();
    let map = defaults.as_mapping().expect("the config is a mapping");
    map.iter()
        .filter(|(_, v)| v.is_mapping())
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .collect()
}

/// The config's top-level keys, sections and plain keys alike.
fn top_level_keys() -> BTreeSet<String> {
    KEYS.iter()
        .map(|(k, _)| k.split('.').next().unwrap_or(k).to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// A little Markdown: fences, code spans, links, headings.

/// A document's text with its fenced code blocks blanked (lines kept, so
/// line numbers stay right), and the fenced blocks themselves with their
/// info string.
struct Parsed {
    prose: String,
    blocks: Vec<(String, String)>,
}

fn parse(text: &str) -> Parsed {
    let mut prose = String::with_capacity(text.len());
    let mut blocks = Vec::new();
    let mut fence: Option<(String, String, String)> = None; // (marker, info, body)
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut fence {
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                let marker: String = trimmed
                    .chars()
                    .take_while(|c| *c == '`' || *c == '~')
                    .collect();
                let info = trimmed[marker.len()..].trim().to_string();
                fence = Some((marker, info, String::new()));
                prose.push('\n');
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
            Some((marker, _, body)) => {
                if trimmed.starts_with(marker.as_str())
                    && trimmed
                        .trim_start_matches(marker.chars().next().unwrap_or('`'))
                        .trim()
                        .is_empty()
                {
                    let (_, info, body) = fence.take().expect("in a fence");
                    blocks.push((info, body));
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
                prose.push('\n');
            }
        }
    }
    Parsed { prose, blocks }
}

/// The code spans of `prose` (CommonMark: a run of n backticks up to the
/// next run of exactly n, within one paragraph), with the line each starts
/// on; and `prose` with every code span blanked.
fn code_spans(prose: &str) -> (Vec<(usize, String)>, String) {
    let bytes = prose.as_bytes();
    let mut spans = Vec::new();
    let mut blanked = prose.as_bytes().to_vec();
    let run_at = |i: usize| bytes[i..].iter().take_while(|b| **b == b'`').count();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let start = i + n;
        // The closing run: the next run of exactly n backticks, before a
        // blank line.
        let mut j = start;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j..].starts_with(b"\n\n") {
                break;
            }
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                let content = prose[start..end].replace('\n', " ");
                let line = prose[..i].matches('\n').count() + 1;
                spans.push((line, content.trim().to_string()));
                for b in &mut blanked[i..end + n] {
                    if *b != b'\n' {
                        *b = b' ';
                    }
                }
                i = end + n;
            }
            None => i = start,
        }
    }
    let blanked = String::from_utf8(blanked).expect("blanking keeps UTF-8 (ASCII for ASCII)");
    (spans, blanked)
}

/// Inline link and image targets of `text` (code spans already blanked),
/// with their line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(k) = text[from..].find("](") {
        let start = from + k + 2;
        let rest = &text[start..];
        let end = rest
            .find(|c: char| c == ')' || c.is_whitespace())
            .unwrap_or(rest.len());
        let target = rest[..end].trim_start_matches('<').trim_end_matches('>');
        let line = text[..start].matches('\n').count() + 1;
        out.push((line, target.to_string()));
        from = start;
    }
    out
}

/// GitHub's anchor for a heading: the rendered text lowercased, with
/// everything but letters, digits, `-` and `_` dropped and spaces made `-`.
fn slug(heading: &str) -> String {
    // Rendered text: link targets and emphasis markers go.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(k) = rest.find("](") {
        text.push_str(&rest[..k]);
        let after = &rest[k + 2..];
        rest = after.find(')').map_or("", |e| &after[e + 1..]);
    }
    text.push_str(rest);
    text.chars()
        .filter(|c| !matches!(c, '`' | '*' | '['))
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a document's headings (duplicates numbered as GitHub does).
fn anchors(text: &str) -> BTreeSet<String> {
    let parsed = parse(text);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in parsed.prose.lines() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// The configuration reference.

/// Splits a table row into its cells; a `|` inside a code span does not
/// split.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut in_code = false;
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                in_code = !in_code;
                cell.push(c);
            }
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' if !in_code => out.push(std::mem::take(&mut cell).trim().to_string()),
            _ => cell.push(c),
        }
    }
    out.push(cell.trim().to_string());
    out
}

/// The first code span of a cell, if the cell starts with one.
fn leading_span(cell: &str) -> Option<&str> {
    let rest = cell.strip_prefix('`')?;
    rest.find('`').map(|e| &rest[..e])
}

/// The rows of `docs/configuration.md` that document a key: key → cells.
fn configuration_rows() -> BTreeMap<String, Vec<(usize, Vec<String>)>> {
    let text = read(&root().join("docs/configuration.md"));
    let parsed = parse(&text);
    let mut rows: BTreeMap<String, Vec<(usize, Vec<String>)>> = BTreeMap::new();
    for (n, line) in parsed.prose.lines().enumerate() {
        if !line.trim_start().starts_with("| `") {
            continue;
        }
        let cells = cells(line);
        if let Some(key) = cells.first().and_then(|c| leading_span(c)) {
            rows.entry(key.to_string())
                .or_default()
                .push((n + 1, cells.clone()));
        }
    }
    rows
}

/// Whether a config without `key` is refused (the key is required).
fn required(key: &str) -> bool {
    let mut minimal: Value = serde_yaml_ng::from_str(MINIMAL_CONFIG).expect("minimal YAML");
    let (parent, leaf) = match key.rsplit_once('.') {
        Some((p, l)) => (at_mut(&mut minimal, p), l),
        None => (Some(&mut minimal), key),
    };
    if let Some(Value::Mapping(m)) = parent {
        m.remove(leaf);
    }
    let text = serde_yaml_ng::to_string(&minimal).expect("serialize");
    Config::parse(&text, "without the key").is_err()
}

fn at_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(v, |v, key| v.get_mut(key))
}

#[test]
fn the_configuration_reference_documents_every_key_with_its_default_and_reload() {
    let rows = configuration_rows();
    let defaults = defaults();
    let mut problems = Vec::new();
    for (key, apply) in KEYS {
        let Some(found) = rows.get(*key) else {
            problems.push(format!(
                "{key}: no row (| `{key}` | default | reload | meaning |)"
            ));
            continue;
        };
        if found.len() > 1 {
            let lines: Vec<usize> = found.iter().map(|(n, _)| *n).collect();
            problems.push(format!("{key}: {} rows (lines {lines:?})", found.len()));
        }
        let (line, cells) = &found[0];
        if cells.len() < 4 {
            problems.push(format!(
                "{key} (line {line}): want key | default | reload | meaning"
            ));
            continue;
        }
        // The default.
        let default = at(&defaults, key);
        let cell = cells[1].as_str();
        match leading_span(cell) {
            Some(shown) => {
                let shown_value: Result<Value, _> = serde_yaml_ng::from_str(shown);
                match (shown_value, default) {
                    (Ok(s), Some(d)) if &s == d => {}
                    (s, d) => problems.push(format!(
                        "{key} (line {line}): default shown as `{shown}` ({s:?}), \
                         src/config/ has {d:?}"
                    )),
                }
            }
            None if cell.starts_with("required") => {
                if !required(key) {
                    problems.push(format!(
                        "{key} (line {line}): shown as required, but a config without it loads"
                    ));
                }
            }
            None if cell.starts_with("none") => {
                if !default.is_none_or(Value::is_null) {
                    problems.push(format!(
                        "{key} (line {line}): shown as `none`, but its default is {default:?}"
                    ));
                }
            }
            None => problems.push(format!(
                "{key} (line {line}): the default cell must start with the default in \
                 backticks, `none` or `required`: {cell:?}"
            )),
        }
        // The reload behaviour.
        let reload = cells[2].as_str();
        let want = match apply {
            Apply::Live => "live",
            Apply::Restart => "restart",
        };
        if reload.split_whitespace().next() != Some(want) {
            problems.push(format!(
                "{key} (line {line}): reload shown as {reload:?}, KEYS says {want}"
            ));
        }
        if cells[3].is_empty() {
            problems.push(format!("{key} (line {line}): no meaning"));
        }
    }
    for key in rows.keys() {
        if !KEYS.iter().any(|(k, _)| k == key) {
            problems.push(format!(
                "docs/configuration.md has a row for `{key}`, which is not a config key"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md does not match the config:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// What the documents mention.

/// File name endings that make a dotted span a file, not a key
/// (`pause.rs`, `config.example.yaml`).
const FILE_ENDINGS: &[&str] = &[
    ".rs", ".md", ".yaml", ".yml", ".json", ".toml", ".sh", ".svg", ".png", ".conf", ".service",
    ".cc", ".h", ".txt",
];

/// The config key a code span names, if it looks like one: a dotted name
/// whose first segment is a config section (`lease.mode`,
/// `verify.mode: every-write`, `limits.*`).
fn key_in_span(span: &str, sections: &BTreeSet<String>) -> Option<String> {
    let token: String = span
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '.')
        .collect();
    let (first, _) = token.split_once('.')?;
    if !sections.contains(first) || FILE_ENDINGS.iter().any(|e| token.ends_with(e)) {
        return None;
    }
    Some(token.trim_end_matches('.').to_string())
}

fn is_key_or_section(name: &str) -> bool {
    KEYS.iter()
        .any(|(k, _)| *k == name || k.starts_with(&format!("{name}.")))
}

#[test]
fn every_config_key_the_docs_mention_exists() {
    let sections = sections();
    assert!(
        sections.contains("lease") && sections.contains("verify"),
        "sections from the defaults: {sections:?}"
    );
    let mut unknown = Vec::new();
    let mut seen = 0;
    for doc in documents() {
        let (spans, _) = code_spans(&parse(&read(&root().join(&doc))).prose);
        for (line, span) in spans {
            if let Some(key) = key_in_span(&span, &sections) {
                seen += 1;
                if !is_key_or_section(&key) {
                    unknown.push(format!("{}:{line}: `{span}`", doc.display()));
                }
            }
        }
    }
    assert!(seen > 50, "only {seen} config keys found in the docs");
    assert!(
        unknown.is_empty(),
        "the docs mention config keys that do not exist (see src/config/ and \
         leasegate::control::reload::KEYS):\n{}",
        unknown.join("\n")
    );
}

/// The folders of the repository a code span may name a path in.
const REPO_DIRS: &[&str] = &[
    "src/", "tests/", "bench/", "benches/", "deploy/", "docs/", "scripts/", "fuzz/", ".ci/",
];

#[test]
fn every_repository_path_the_docs_name_exists() {
    let mut missing = Vec::new();
    for doc in documents() {
        let (spans, _) = code_spans(&parse(&read(&root().join(&doc))).prose);
        for (line, span) in spans {
            // The path: the span's first word, without a `:line` or `::item`.
            let word = span.split_whitespace().next().unwrap_or("");
            let path = word.split(':').next().unwrap_or("");
            if !REPO_DIRS.iter().any(|d| path.starts_with(d))
                // Written by the benchmarks, not committed.
                || path.starts_with("bench/out/")
                // Patterns, not paths.
                || path.contains(['*', '<', '{', '$'])
            {
                continue;
            }
            if !root().join(path).exists() {
                missing.push(format!("{}:{line}: `{span}`", doc.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_yaml_config_example_in_the_docs_is_a_valid_config() {
    let top = top_level_keys();
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        for (info, body) in parse(&read(&root().join(&doc))).blocks {
            if info != "yaml" {
                continue;
            }
            let value: Value = match serde_yaml_ng::from_str(&body) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{}: a yaml block is not YAML: {e}", doc.display()));
                    continue;
                }
            };
            let Some(map) = value.as_mapping() else {
                continue;
            };
            let names: Vec<&str> = map.keys().filter_map(Value::as_str).collect();
            // Not a leasegate config (a Prometheus rule, say).
            if !names.iter().any(|n| top.contains(*n)) {
                continue;
            }
            // A fragment: completed with the one required key.
            let mut full: Mapping = map.clone();
            if !full.contains_key("backend") {
                let minimal: Value = serde_yaml_ng::from_str(MINIMAL_CONFIG).expect("YAML");
                full.insert("backend".into(), minimal["backend"].clone());
            }
            let text = serde_yaml_ng::to_string(&full).expect("serialize");
            checked += 1;
            if let Err(e) = Config::parse(&text, &doc.display().to_string()) {
                // Certificate paths are the operator's: an example's files
                // need not exist here (everything else must load).
                let text = e.to_string();
                if text.contains("_file: /") && text.contains("No such file or directory") {
                    continue;
                }
                problems.push(format!(
                    "{}: a config example does not load: {e}",
                    doc.display()
                ));
            }
        }
    }
    assert!(checked > 0, "no config example found in the docs");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_relative_link_leads_somewhere() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = read(&root().join(&doc));
        let (_, blanked) = code_spans(&parse(&text).prose);
        let dir = doc.parent().unwrap_or(Path::new(""));
        for (line, target) in links(&blanked) {
            if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                doc.clone()
            } else {
                normalize(&dir.join(file))
            };
            // A link that leaves the repository (../shared/...) depends on
            // the checkout around it: not checked here.
            if resolved.starts_with("..") {
                continue;
            }
            checked += 1;
            let full = root().join(&resolved);
            if !full.exists() {
                broken.push(format!(
                    "{}:{line}: {target} (no {})",
                    doc.display(),
                    resolved.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                if full.extension().is_some_and(|x| x == "md")
                    && !anchors(&read(&full)).contains(anchor)
                {
                    broken.push(format!(
                        "{}:{line}: {target} (no heading #{anchor} in {})",
                        doc.display(),
                        resolved.display()
                    ));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "broken relative links:\n{}",
        broken.join("\n")
    );
}

/// `a/b/../c` → `a/c`, keeping leading `..`.
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if out.last().is_some_and(|l| l != "..") {
                    out.pop();
                } else {
                    out.push("..".into());
                }
            }
            other => out.push(other.as_os_str().to_os_string()),
        }
    }
    out.iter().collect()
}

#[test]
fn the_readme_is_the_front_door() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines (at most {README_MAX_LINES}): move details to docs/"
    );
    // The two set-up commands CI and users rely on.
    for command in ["scripts/demo.sh", "bash .ci/run"] {
        assert!(
            readme.contains(command),
            "README.md lost the set-up command `{command}`"
        );
    }
}

#[test]
fn the_markdown_helpers_read_what_they_should() {
    let (spans, blanked) = code_spans("a `lease.mode` and ``x ` y`` and `open\nover` lines\n");
    let spans: Vec<&str> = spans.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(spans, ["lease.mode", "x ` y", "open over"]);
    assert!(!blanked.contains("lease.mode"));
    assert_eq!(
        links("see [x](docs/a.md#b) and ![i](img.png)\n"),
        [(1, "docs/a.md#b".to_string()), (1, "img.png".to_string())]
    );
    assert_eq!(
        slug("Live reload (`SIGHUP`, `POST /v1/reload`, `leasegate ctl reload`)"),
        "live-reload-sighup-post-v1reload-leasegate-ctl-reload"
    );
    assert_eq!(
        slug("Choosing `verify.max_in_flight`"),
        "choosing-verifymax_in_flight"
    );
    assert_eq!(
        slug("4. Passwords and who is the controller"),
        "4-passwords-and-who-is-the-controller"
    );
    let sections = sections();
    assert_eq!(
        key_in_span("lease.mode: block-write", &sections).as_deref(),
        Some("lease.mode")
    );
    assert_eq!(
        key_in_span("limits.*", &sections).as_deref(),
        Some("limits")
    );
    assert_eq!(key_in_span("config.example.yaml", &sections), None);
    assert_eq!(key_in_span("pause.rs", &sections), None);
    assert_eq!(key_in_span("leasegate_lease_valid", &sections), None);
    assert!(is_key_or_section("verify") && is_key_or_section("verify.hold"));
    assert!(!is_key_or_section("verify.hol") && !is_key_or_section("lease.ttl_ms"));
    assert_eq!(
        cells("| `a` | `x | y` | live | z \\| w |"),
        ["`a`", "`x | y`", "live", "z | w"]
    );
    let parsed = parse("text\n```yaml\nlease:\n  mode: off\n```\nafter\n");
    assert_eq!(
        parsed.blocks,
        [("yaml".to_string(), "lease:\n  mode: off\n".to_string())]
    );
    assert_eq!(parsed.prose.lines().count(), 6);
}
