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
pub mod snapshot;
pub mod store;
pub mod view;
