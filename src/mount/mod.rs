//! Mounts: a pure planner that turns a run request into mount steps, and the
//! executors (bind mounts, kernel squashfs, the in-process FUSE server).

pub mod executor;
pub mod fuse;
pub mod plan;
