//! Site configuration: the TOML schema of `/etc/cairn/cairn.toml` (or
//! `$CAIRN_CONFIG`) and of the user's `~/.config/cairn/config.toml`, its
//! loading and merging, and where each effective value came from.
//!
//! `[defaults]` a user may override (user file, environment, command line);
//! `[policy]` and `[hooks.*]` only the site sets. Every table rejects
//! unknown keys, so a typo in a site file is an error naming the key and the
//! file, never a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole site file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SiteFile {
    pub defaults: Defaults,
    pub policy: Policy,
    /// Named bundles of binds, environment and device nodes.
    pub hooks: BTreeMap<String, Hook>,
}

/// The user's file: `[defaults]` only.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UserFile {
    pub defaults: Defaults,
}

/// What a user may override. Every field is optional so that a later
/// layer (user file, environment, command line) overrides only what it sets.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Image cache directory (`~` expands to the caller's home).
    pub cache_dir: Option<String>,
    /// `auto`, `kernel` or `fuse`.
    pub mount: Option<String>,
    /// Worker threads of the FUSE server.
    pub fuse_threads: Option<usize>,
    /// Binds every run gets, `SRC[:DST[:ro]]`.
    pub binds: Option<Vec<String>>,
    /// Hooks switched on for every run unless the user's defaults say otherwise.
    pub hooks: Option<Vec<String>>,
    /// CDI spec directories searched by `--device`.
    pub cdi_spec_dirs: Option<Vec<String>>,
    /// Changes to the job's environment.
    pub env: Option<EnvTable>,
    /// `--join` behaviour.
    pub join: Option<JoinDefaults>,
}

/// `[defaults.join]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JoinDefaults {
    /// Join automatically when a launcher's job/step ids are present.
    pub auto: Option<bool>,
    /// How long the namespace outlives its last rank, milliseconds.
    pub linger_ms: Option<u64>,
}

/// Environment changes, applied in this order: unset, set, prepend, append.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EnvTable {
    pub set: BTreeMap<String, String>,
    /// Prepended with a `:` separator (set when absent).
    pub prepend: BTreeMap<String, String>,
    /// Appended with a `:` separator (set when absent).
    pub append: BTreeMap<String, String>,
    /// Globs of names to remove.
    pub unset: Vec<String>,
}

/// What users cannot override.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Where images may live (whole path components: `/scratch` allows
    /// `/scratch/x.sqfs`, not `/scratch2/x.sqfs`); empty: anywhere.
    pub image_paths: Vec<String>,
    /// Mount modes users may ask for; empty: all.
    pub mount_modes: Vec<String>,
    /// Host paths that may not be bound (whole components).
    pub forbidden_bind_sources: Vec<String>,
    /// Container paths that may not be bind targets (whole components).
    pub forbidden_bind_destinations: Vec<String>,
    /// Binds every run gets, whatever the user says.
    pub required_binds: Vec<String>,
    /// Hooks every run gets.
    pub required_hooks: Vec<String>,
    /// Registries (`host[:port]`) reachable over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificate (PEM) trusted for registries.
    pub ca_file: Option<String>,
}

/// `[hooks.NAME]`: a named bundle switched on by `--hook NAME` or by the site.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Hook {
    pub description: Option<String>,
    /// `SRC[:DST[:ro]]`; a missing destination is created as a mount point.
    pub binds: Vec<String>,
    /// Host device nodes made available at the same path (`HOST[:CONTAINER]`).
    pub devices: Vec<String>,
    pub env: EnvTable,
}

/// Where an effective value came from (`cairn config show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    Site(PathBuf),
    User(PathBuf),
    Environment(String),
    CommandLine,
}
