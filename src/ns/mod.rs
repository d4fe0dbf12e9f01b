//! Namespaces: id maps (pure), the user and mount namespaces, and joining the
//! namespaces of other ranks of the same job.

pub mod idmap;
pub mod join;
pub mod probe;
pub mod userns;
pub mod warm;
