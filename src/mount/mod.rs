//! Mounts: a pure planner that turns a run request into mount steps, the
//! executor, the FUSE filesystem and the FUSE server process of a run.

mod ahead;
pub mod executor;
pub mod fuse;
pub mod plan;
pub mod server;
