//! Container edits as data: what a site default, a hook (`--hook NAME`) or
//! a CDI device (`--device vendor.com/class=name`) adds to a run: binds,
//! environment changes and device nodes. The site config and CDI both
//! produce this one shape; the run checks and applies it (`run::edits`).

use std::path::PathBuf;

/// A bind a hook or a device asks for. Unlike `-b`, a destination missing
/// in a read-only image is created (as a mount point in a read-only layer
/// under the image), because library directories injected by a site rarely
/// exist in the images users bring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditBind {
    /// Absolute host path.
    pub src: PathBuf,
    /// Absolute path inside the container.
    pub dst: PathBuf,
    pub read_only: bool,
}

/// One environment change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEdit {
    Set(String, String),
    /// Prepend with `:` (set when absent).
    Prepend(String, String),
    /// Append with `:` (set when absent).
    Append(String, String),
    /// Remove the variables whose names match this glob.
    Unset(String),
}

/// A host device node made available inside (bound, since an unprivileged
/// user namespace cannot mknod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub host_path: PathBuf,
    /// Path inside the container (usually the same).
    pub path: PathBuf,
}

/// Binds, environment and device nodes from one origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEdits {
    pub binds: Vec<EditBind>,
    pub env: Vec<EnvEdit>,
    pub devices: Vec<DeviceNode>,
}

/// Edits and where they came from ("hook mpi", "device vendor.com/gpu=0",
/// "site defaults"), so errors can name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamedEdits {
    pub origin: String,
    pub edits: ContainerEdits,
}
