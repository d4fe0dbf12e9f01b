//! cairn: run HPC jobs in flattened squashfs container images, unprivileged,
//! with almost no overhead.
//!
//! The crate is organised along the data path of `DESIGN.md`:
//! `image` (import, flatten) -> `squashfs` (writer, reader) -> `mount` and
//! `ns` (namespaces, mounts) -> `run` (binds, environment, exec). `cli` holds
//! one file per subcommand and is the only place that uses `anyhow`; `sys` is
//! the only module allowed to contain `unsafe` code.
//!
//! A lower module never imports a higher one (`tests/layering.rs` checks
//! that nothing below `run` names it): what several layers share sits at
//! the bottom, in `spec` (bind specs, container edits, environments as
//! pairs), `error` (printing an error chain) and `sync` (locks).
//!
//! `build` is `cairn build`: its front end (Dockerfile parsing, Docker's
//! variable expansion, `.dockerignore`) is pure functions of strings; its
//! builder sits beside `run`, on `image` and `squashfs`, and runs a RUN
//! through the `cairn run` binary, not the `run` module.

pub mod build;
pub mod cli;
pub mod config;
pub mod error;
pub mod image;
pub mod mount;
pub mod ns;
pub mod run;
pub mod spec;
pub mod squashfs;
pub mod sync;
pub mod sys;
pub mod trust;
