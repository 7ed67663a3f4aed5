//! The folders of `src/` are layers, and imports point downward only: a
//! module may use its own layer and those below it, never one above. This
//! test reads every source file and fails on an upward `crate::` path, so a
//! new upward import (and with it a module cycle) cannot land unnoticed.

use std::path::{Path, PathBuf};

/// Lowest first. `main.rs` and `lib.rs` wire everything and are not checked.
const LAYERS: &[&[&str]] = &[
    &["resp"],
    &["command"],
    &["kvrocks"],
    &["guard"],
    &["proxy"],
    &["config"],
    &["control"],
    &["server", "logging"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/guard/gate/mod.rs` → `guard`).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Every `crate::<top>` named in `text`, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(grouped) = rest.strip_prefix('{') {
                // `use crate::{a, b::c}`: every group member names a top module.
                let group = grouped.split('}').next().unwrap_or("");
                for item in group.split(',') {
                    let top: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !top.is_empty() {
                        out.push((n + 1, top));
                    }
                }
                continue;
            }
            let top: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((n + 1, top));
        }
    }
    out
}

#[test]
fn imports_point_downward_only() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let top = top_module(&src, file);
        if top == "main" || top == "lib" {
            continue;
        }
        let Some(own) = layer_of(&top) else {
            violations.push(format!(
                "{}: module `{top}` is in no layer of tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, used) in crate_paths(&text) {
            match layer_of(&used) {
                Some(layer) if layer <= own => {}
                Some(_) => violations.push(format!(
                    "{}:{line}: `{top}` uses `crate::{used}`, a layer above it",
                    file.display()
                )),
                None => violations.push(format!(
                    "{}:{line}: `crate::{used}` is in no layer",
                    file.display()
                )),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_paths() {
    let paths = crate_paths(
        "use crate::{guard::gate, resp};\nlet x = crate::control::admin::run(); // crate::server",
    );
    let tops: Vec<&str> = paths.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(tops, ["guard", "resp", "control"]);
}
