//! Images before they are flattened: references, OCI layouts and archives,
//! tar layers, and the flattener that turns layers into one squashfs.
