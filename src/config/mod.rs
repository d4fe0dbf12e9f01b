//! Site configuration: the TOML schema of `/etc/cairn/cairn.toml` (or
//! `$CAIRN_CONFIG`) and of the user's `~/.config/cairn/config.toml`, the
//! errors of loading and resolving them, and where each effective value came
//! from ([`Origin`]).
//!
//! `[defaults]` a user may override (user file, environment, command line);
//! `[policy]` and `[hooks.*]` only the site sets. Every table rejects
//! unknown keys, so a typo in a site file is an error naming the key and the
//! file, never a silently ignored setting.
//!
//! Submodules: [`load`] reads the files (the only one touching the file
//! system), [`resolve`] merges files + environment + command line into an
//! [`resolve::Effective`] config (pure), [`hooks`] turns hooks and env tables
//! into `run::edits` (pure), [`duration`] reads durations such as
//! `warm_linger` (pure).

pub mod duration;
pub mod fuzz;
pub mod hooks;
pub mod load;
pub mod resolve;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::bind::BindError;

/// The site file's default location.
pub const SITE_FILE: &str = "/etc/cairn/cairn.toml";
/// Points at another site file (tests, sites that keep it elsewhere).
pub const SITE_FILE_ENV: &str = "CAIRN_CONFIG";
/// Overrides the image cache directory.
pub const CACHE_ENV: &str = "CAIRN_CACHE";
/// Overrides `block_cache`: a directory, or `off`.
pub const BLOCK_CACHE_ENV: &str = "CAIRN_BLOCK_CACHE";

/// Default time a `--join` supervisor waits for late ranks after the last
/// exit.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(3);
/// Environment variable overriding the linger (milliseconds), for tests.
pub const LINGER_ENV: &str = "CAIRN_JOIN_LINGER_MS";

/// Default time a squashfs image stays mounted after its last job, for the
/// next run of it (a warm run): long enough for the next step of a batch
/// script or a sweep, short enough that nothing stays for long.
pub const DEFAULT_WARM_LINGER: Duration = Duration::from_secs(30);
/// Overrides `warm_linger` (a duration, see [`duration::parse_duration`]).
pub const WARM_LINGER_ENV: &str = "CAIRN_WARM_LINGER";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: cannot read it")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{which} config {path} is invalid")]
    Parse {
        which: &'static str,
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error(
        "user config {path}: [{table}] is not allowed there: users cannot set policy or hooks, only [defaults] (the site sets them in {site})"
    )]
    UserSetsPolicy {
        path: PathBuf,
        table: String,
        site: String,
    },
    #[error("{origin}: hook {name:?} is not defined by the site config ({defined})")]
    UnknownHook {
        origin: String,
        name: String,
        defined: String,
    },
    #[error("{origin}: bind {spec:?} is invalid")]
    Bind {
        origin: String,
        spec: String,
        #[source]
        source: BindError,
    },
    #[error("{origin}: bind {spec:?}: the source must be an absolute host path")]
    RelativeBindSource { origin: String, spec: String },
    #[error("{origin}: device {spec:?}: expected HOST[:CONTAINER], both absolute paths")]
    Device { origin: String, spec: String },
    #[error("{origin}: {key} = {value:?}: {reason}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// How a squashfs image is mounted: `auto`, `kernel` or `fuse`. The one
/// spelling of the config's `mount` key (serde), of `--mount` (clap) and of
/// the mode a run asks for (`run::request`). `auto`: the kernel when allowed
/// (root, no user namespace needed), else FUSE.
// The variants carry no `///` docs on purpose: clap would print them in
// `--help` next to each value.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    Deserialize,
    Serialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    #[default]
    Auto,
    Kernel,
    Fuse,
}

impl MountMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MountMode::Auto => "auto",
            MountMode::Kernel => "kernel",
            MountMode::Fuse => "fuse",
        }
    }
}

/// The whole site file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SiteFile {
    pub defaults: Defaults,
    pub policy: Policy,
    /// Named bundles of binds, environment and device nodes.
    pub hooks: BTreeMap<String, Hook>,
}

/// The user's file: `[defaults]` only.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UserFile {
    pub defaults: Defaults,
}

/// What a user may override. Every field is optional so that a later
/// layer (user file, environment, command line) overrides only what it sets.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Image cache directory (`~`, `$HOME` and `$USER` expand).
    pub cache_dir: Option<String>,
    /// `auto`, `kernel` or `fuse`.
    pub mount: Option<MountMode>,
    /// Worker threads of the FUSE server.
    pub fuse_threads: Option<usize>,
    /// Where the FUSE server keeps decompressed blocks between runs
    /// (`off`: nowhere).
    pub block_cache: Option<String>,
    /// The block cache's budget, MiB (0: off).
    pub block_cache_mib: Option<u64>,
    /// Binds every run gets, `SRC[:DST[:ro]]`.
    pub binds: Option<Vec<String>>,
    /// Hooks switched on for every run unless the user's defaults say otherwise.
    pub hooks: Option<Vec<String>>,
    /// CDI spec directories searched by `--device`.
    pub cdi_spec_dirs: Option<Vec<String>>,
    /// How long a squashfs image stays mounted after its last job, for the
    /// next run of it (`0`: warm runs off).
    pub warm_linger: Option<duration::DurationText>,
    /// Changes to the job's environment.
    pub env: Option<EnvTable>,
    /// `--join` behaviour.
    pub join: Option<JoinDefaults>,
}

/// `[defaults.join]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JoinDefaults {
    /// Join automatically when a launcher's job/step ids are present.
    pub auto: Option<bool>,
    /// How long the namespace outlives its last rank, milliseconds.
    pub linger_ms: Option<u64>,
}

/// Environment changes, applied in this order: unset, set, prepend, append.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Where images may live (whole path components: `/scratch` allows
    /// `/scratch/x.sqfs`, not `/scratch2/x.sqfs`); empty: anywhere. The
    /// user's image cache is not implicitly allowed: list it.
    pub image_paths: Vec<String>,
    /// Mount modes users may ask for (`kernel`, `fuse`); empty: all.
    pub mount_modes: Vec<MountMode>,
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
    /// The site file this policy came from (for error messages); not a key.
    #[serde(skip)]
    pub site_file: Option<PathBuf>,
}

impl Policy {
    /// "the site config FILE" or "the built-in defaults", for messages.
    pub fn source(&self) -> String {
        match &self.site_file {
            Some(p) => format!("site config {}", p.display()),
            None => "the built-in defaults".to_owned(),
        }
    }
}

/// `[hooks.NAME]`: a named bundle switched on by `--hook NAME` or by the site.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Hook {
    pub description: Option<String>,
    /// `SRC[:DST[:ro]]`; a missing destination is created as a mount point.
    pub binds: Vec<String>,
    /// Host device nodes made available (`HOST[:CONTAINER]`).
    pub devices: Vec<String>,
    pub env: EnvTable,
}

/// Where an effective value came from (`cairn config show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    Site(PathBuf),
    User(PathBuf),
    /// The variable's name.
    Environment(String),
    CommandLine,
}

impl Origin {
    /// One word: default, site, user, environment, command-line.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::Site(_) => "site",
            Origin::User(_) => "user",
            Origin::Environment(_) => "environment",
            Origin::CommandLine => "command-line",
        }
    }

    /// The file or variable, if any.
    pub fn detail(&self) -> Option<String> {
        match self {
            Origin::Site(p) | Origin::User(p) => Some(p.display().to_string()),
            Origin::Environment(v) => Some(v.clone()),
            Origin::Default | Origin::CommandLine => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detail() {
            Some(d) => write!(f, "{} {d}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}
