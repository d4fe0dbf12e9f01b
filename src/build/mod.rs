//! `cairn build`: a Dockerfile to a squashfs image, as an ordinary user.

pub mod copy;
pub mod dockerfile;
pub mod engine;
pub mod expand;
pub mod ignore;
pub mod snapshot;
pub mod store;
