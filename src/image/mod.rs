//! Images before they are flattened: source references, OCI layouts and
//! archives (read in place, never extracted), tar layers with their
//! whiteouts, the top-down flattener that turns layers into one tree fed to
//! the squashfs writer, and the image metadata stored inside the squashfs;
//! and back: a flattened image pushed to a registry as one layer.

pub mod archive;
pub mod bottom;
pub mod cache;
pub mod digest;
pub mod entry;
pub mod export;
pub mod flatten;
pub mod fuzz;
pub mod hostdir;
pub mod import;
pub mod layer;
pub mod locate;
pub mod meta;
pub mod oci;
pub mod pargz;
pub mod pull;
pub mod push;
pub mod registry;
pub mod sink;
pub mod source;
pub mod sparse;
pub mod spec;
pub mod tarstream;
pub(crate) mod tarwrite;
