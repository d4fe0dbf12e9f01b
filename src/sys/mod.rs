//! The only module with `unsafe` code. Each wrapper is named after the man
//! page of the call it wraps and carries a `// SAFETY:` note saying why the
//! call is sound. Everything else in the crate is `#![deny(unsafe_code)]`.
#![allow(unsafe_code)]

pub mod anchor;
pub mod fuse;
pub mod loopdev;
pub mod malloc;
pub mod mmap;
pub mod mount;
pub mod net;
pub mod pidfd;
pub mod poll;
pub mod process;
pub mod seccomp;
pub mod setns;
pub mod socket;
pub mod user_namespaces;
