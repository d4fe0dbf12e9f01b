//! Running a job: environment composition and bind parsing (pure), then the
//! sequence that sets up the container and execs the job.

pub mod binds;
pub mod cdi;
pub mod edits;
pub mod env;
pub mod facts;
pub mod fakeroot;
pub mod fuzz;
pub mod identity;
pub mod image_config;
pub mod launch;
pub mod policy;
pub mod request;
pub mod timings;
pub mod tree;
