//! The crate's layering (HOUSE-STYLE "Direction"): `cli` -> `run` ->
//! (`config`, `ns`, `mount`, `image`) -> `squashfs` -> `sys`, with what
//! several layers share at the bottom (`spec`, `error`, `sync`). `run` is
//! the top of the library: nothing below it may name it. This test reads
//! every file under `src/` and fails on a path into `run` outside `src/run/`,
//! `src/cli/`, `src/lib.rs` and `src/main.rs`, listing each as file:line.

use std::path::{Path, PathBuf};

/// Files allowed to name `run`: `run` itself and what sits above it.
fn may_use_run(relative: &Path) -> bool {
    relative.starts_with("run")
        || relative.starts_with("cli")
        || relative == Path::new("lib.rs")
        || relative == Path::new("main.rs")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("read src directory");
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `line` names the `run` module: `crate::run`, `super::run`
/// (at any depth: outside `src/run/` every one of them climbs to the crate
/// root's `run` or past it), `cairn::run`, or `run` inside a grouped
/// `crate::{...}` import.
fn names_run(line: &str) -> bool {
    let path_into_run = |prefix: &str| {
        line.match_indices(prefix).any(|(at, _)| {
            let rest = &line[at + prefix.len()..];
            rest.strip_prefix("run")
                .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        })
    };
    if path_into_run("crate::") || path_into_run("super::") || path_into_run("cairn::") {
        return true;
    }
    line.match_indices("crate::{").any(|(at, _)| {
        let group = &line[at + "crate::{".len()..];
        let group = group.split('}').next().unwrap_or(group);
        group.split([',', '{']).any(|item| {
            let item = item.trim();
            item == "run"
                || item.starts_with("run::")
                || item.starts_with("run ")
                || item.starts_with("self::run")
        })
    })
}

/// `src/` and every `.rs` file under it, sorted.
fn source_files() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn nothing_below_run_imports_run() {
    let (src, files) = source_files();
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let mut offenders = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        if may_use_run(relative) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source file");
        for (number, line) in text.lines().enumerate() {
            if names_run(line) {
                offenders.push(format!(
                    "src/{}:{}: {}",
                    relative.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "lower layers must not import `run` (move what they share to `spec`, `error` or `sync`):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_recognises_every_spelling() {
    for line in [
        "use crate::run::binds::parse_bind;",
        "    crate::run::launch::error_chain(err)",
        "use super::super::run::env;",
        "use crate::{config, run::edits};",
        "use crate::{run, sys};",
        "/// found as [`crate::run::launch`]'s",
    ] {
        assert!(names_run(line), "{line}");
    }
    for line in [
        "use crate::runtime::x;",
        "use crate::spec::bind::parse_bind;",
        "use crate::{config, spec::edits};",
        "let run = 3;",
        "use super::runner;",
    ] {
        assert!(!names_run(line), "{line}");
    }
}

/// HOUSE-STYLE: no function outside tests over 120 lines, except one flat
/// `match` over an enum's variants (the executor's `apply_step`, one arm
/// per mount step). rustfmt's layout makes the end of a function the first
/// line after it that holds only its indentation and `}`.
const MAX_FUNCTION_LINES: usize = 120;
const FLAT_MATCHES: [&str; 1] = ["src/mount/executor.rs: apply_step"];

/// (first line, name, length) of each `fn` outside `#[cfg(test)]` items.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end_of = |at: usize, indent: &str| {
        let closing = format!("{indent}}}");
        lines[at + 1..]
            .iter()
            .position(|l| l.trim_end() == closing)
            .map_or(lines.len(), |p| at + 1 + p)
    };
    let mut found = Vec::new();
    let mut skip_to = 0;
    for (at, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        if at < skip_to {
            continue;
        }
        if body == "#[cfg(test)]" {
            // The item it marks (a test module, a test-only helper).
            skip_to = end_of(at, indent) + 1;
            continue;
        }
        let signature = ["pub fn ", "pub(crate) fn ", "fn ", "pub(super) fn "]
            .iter()
            .find_map(|p| body.strip_prefix(p));
        let Some(rest) = signature else { continue };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let length = end_of(at, indent) - at + 1;
        if length > MAX_FUNCTION_LINES {
            found.push((at + 1, name, length));
        }
    }
    found
}

#[test]
fn no_function_over_120_lines() {
    let (src, files) = source_files();
    let mut offenders = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let text = std::fs::read_to_string(file).expect("read source file");
        for (line, name, length) in long_functions(&text) {
            let key = format!("src/{}: {name}", relative.display());
            if !FLAT_MATCHES.contains(&key.as_str()) {
                offenders.push(format!("{key} (line {line}): {length} lines"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named phases):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_length_scan_measures_a_function() {
    let mut text = String::from("fn short() {\n}\n    pub fn long(x: u8) {\n");
    text.push_str(&"        x;\n".repeat(MAX_FUNCTION_LINES));
    text.push_str("    }\nfn declared();\n#[cfg(test)]\nfn in_tests() {\n");
    text.push_str(&"x;\n".repeat(200));
    text.push_str("}\nfn after_tests() {\n");
    text.push_str(&"x;\n".repeat(200));
    text.push_str("}\n");
    assert_eq!(
        long_functions(&text),
        [
            (3, "long".to_owned(), MAX_FUNCTION_LINES + 2),
            (329, "after_tests".to_owned(), 202)
        ]
    );
}
