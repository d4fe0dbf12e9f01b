//! `cairn build`: a Dockerfile to one squashfs image, as an ordinary user.
//!
//! The front end is pure: the Dockerfile parsed into plain stages and
//! instructions (`dockerfile`), Docker's variable substitution (`expand`)
//! and `.dockerignore` matching (`ignore`). The builder (`engine`) runs the
//! stages: COPY and ADD (`copy`), RUN through cairn's run path, each
//! instruction's changes as a layer (`snapshot`), kept in the build cache
//! (`store`), the final stage flattened by the import path.

pub mod copy;
pub mod dockerfile;
pub mod engine;
pub mod expand;
pub mod fuzz;
pub mod ignore;
mod output;
pub mod snapshot;
pub mod store;
pub mod view;

use std::path::{Path, PathBuf};

/// A file operation of the builder that failed: what it was doing, on
/// which path. Every error type of the builder holds it as its `Io`
/// variant, so that `.map_err(io_err("creating", &path))?` reads the same
/// everywhere.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}")]
pub struct IoFailure {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

pub(crate) fn io_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IoFailure {
    let path = path.to_path_buf();
    move |source| IoFailure { step, path, source }
}
