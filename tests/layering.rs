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

#[test]
fn nothing_below_run_imports_run() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
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
