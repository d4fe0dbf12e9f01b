//! Resolution: the parsed files, the environment and the command line in,
//! the effective configuration out, every value with its [`Origin`]. Pure
//! (no file system, no process state), so every precedence rule is unit
//! tested here: built-in default < site `[defaults]` < user `[defaults]` <
//! environment < command line; `[policy]` and `[hooks]` come from the site
//! only.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::duration::parse_duration;
use crate::config::hooks::{check_unset_globs, edit_bind, env_edits, hook_edits};
use crate::config::load::Files;
use crate::config::{
    BLOCK_CACHE_ENV, CACHE_ENV, ConfigError, DEFAULT_LINGER, DEFAULT_WARM_LINGER, Defaults,
    EnvTable, Hook, LINGER_ENV, MountMode, Origin, Policy, WARM_LINGER_ENV,
};
use crate::mount::fuse::MAX_THREADS;
use crate::spec::bind::{normalize_absolute, parse_bind};
use crate::spec::edits::{ContainerEdits, NamedEdits};
use crate::spec::env::lookup;

/// Where CDI specs are searched by default (the CDI spec's own defaults).
pub const DEFAULT_CDI_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Overrides `cdi_spec_dirs` (`:`-separated).
pub const CDI_DIRS_ENV: &str = "CAIRN_CDI_DIRS";

/// The block cache's default place: node-local, per user, kept across
/// reboots (a cache, so any local disk will do).
pub const DEFAULT_BLOCK_CACHE: &str = "/var/tmp/cairn-$USER/blocks";
/// Its default budget, MiB.
pub const DEFAULT_BLOCK_CACHE_MIB: u64 = 1024;

/// The `NamedEdits` origins this module produces.
pub const SITE_DEFAULTS: &str = "site defaults";
pub const USER_DEFAULTS: &str = "user defaults";
pub const REQUIRED_BINDS: &str = "site policy required_binds";

/// One effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Setting<T> {
    fn new(value: T, origin: Origin) -> Self {
        Setting { value, origin }
    }
}

/// `fuse_threads` (or `--fuse-threads`) within 1..=[`MAX_THREADS`]: a
/// server asked for more workers than it can start would fail at run time,
/// after the mount, where the reason is much further from the typo.
fn check_fuse_threads(threads: &Setting<Option<usize>>) -> Result<(), ConfigError> {
    let reason = match threads.value {
        Some(0) => "must be at least 1",
        Some(n) if n > MAX_THREADS => FUSE_THREADS_TOO_MANY,
        _ => return Ok(()),
    };
    let key = match threads.origin {
        Origin::CommandLine => "--fuse-threads",
        _ => "fuse_threads",
    };
    Err(ConfigError::BadValue {
        origin: threads.origin.to_string(),
        key: key.to_owned(),
        value: threads.value.unwrap_or_default().to_string(),
        reason,
    })
}

/// The reason for a `fuse_threads` above [`MAX_THREADS`] (a literal: the
/// error's reason is static; a test pins it to the constant).
const FUSE_THREADS_TOO_MANY: &str =
    "must be at most 256 (each FUSE worker takes a thread, a 16 MiB buffer and an fd)";

/// What the command line says about the defaults (`None`/empty: nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine {
    pub mount: Option<MountMode>,
    pub fuse_threads: Option<usize>,
    /// `--hook NAME`, in order.
    pub hooks: Vec<String>,
    /// `--warm-linger DUR` (clap has parsed it).
    pub warm_linger: Option<Duration>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// `None` when there is no cache location at all (no HOME, nothing set).
    pub cache_dir: Setting<Option<PathBuf>>,
    pub mount: Setting<MountMode>,
    /// `None`: the FUSE server's own default.
    pub fuse_threads: Setting<Option<usize>>,
    /// Default binds: the site's (become edits, destinations created), then
    /// the user's (become plain `-b` binds, checked like them).
    pub binds: Vec<Setting<Vec<String>>>,
    /// Environment tables: the site's, then the user's.
    pub env: Vec<Setting<EnvTable>>,
    /// Hooks switched on by default.
    pub hooks: Setting<Vec<String>>,
    pub cdi_spec_dirs: Setting<Vec<PathBuf>>,
    pub join_auto: Setting<bool>,
    pub join_linger_ms: Setting<u64>,
    /// The FUSE server's block cache directory; `None`: off.
    pub block_cache: Setting<Option<PathBuf>>,
    pub block_cache_mib: Setting<u64>,
    /// How long a squashfs image stays mounted after its last job, for the
    /// next run of it; zero: warm runs off.
    pub warm_linger: Setting<Duration>,
    /// Site only (paths expanded); `policy.site_file` names the file.
    pub policy: Policy,
    pub policy_origin: Origin,
    /// The hooks the site defines.
    pub hook_defs: BTreeMap<String, Hook>,
    /// `--hook NAME`s, checked against `hook_defs`.
    pub command_line_hooks: Vec<String>,
}

impl Effective {
    /// CDI spec directories, in search order.
    pub fn cdi_spec_dirs(&self) -> &[PathBuf] {
        &self.cdi_spec_dirs.value
    }

    /// The user's default binds: `-b` binds placed before the command
    /// line's own.
    pub fn user_binds(&self) -> Vec<String> {
        self.binds
            .iter()
            .filter(|s| matches!(s.origin, Origin::User(_)))
            .flat_map(|s| s.value.iter().cloned())
            .collect()
    }

    /// Every hook a run switches on, in order (required, default,
    /// command line), each once.
    pub fn active_hooks(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in self
            .policy
            .required_hooks
            .iter()
            .chain(&self.hooks.value)
            .chain(&self.command_line_hooks)
        {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// The edits of a run, in order: site default env and binds, the
    /// policy's required binds, user default env, required hooks, default
    /// hooks, `--hook`s. (CDI devices are appended after these by the caller.)
    pub fn run_edits(&self) -> Result<Vec<NamedEdits>, ConfigError> {
        let mut out = Vec::new();
        let mut push = |named: NamedEdits| {
            if named.edits != ContainerEdits::default() {
                out.push(named);
            }
        };
        for (label, wanted) in [(SITE_DEFAULTS, true), (USER_DEFAULTS, false)] {
            let site = |o: &Origin| matches!(o, Origin::Site(_));
            let env = self
                .env
                .iter()
                .filter(|s| site(&s.origin) == wanted)
                .flat_map(|s| env_edits(&s.value))
                .collect();
            let binds = if wanted {
                self.binds
                    .iter()
                    .filter(|s| site(&s.origin))
                    .flat_map(|s| s.value.iter())
                    .map(|b| edit_bind(label, b))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                Vec::new()
            };
            push(NamedEdits {
                origin: label.to_owned(),
                edits: ContainerEdits {
                    binds,
                    env,
                    devices: Vec::new(),
                },
            });
            if wanted {
                let binds = self
                    .policy
                    .required_binds
                    .iter()
                    .map(|b| edit_bind(REQUIRED_BINDS, b))
                    .collect::<Result<Vec<_>, _>>()?;
                push(NamedEdits {
                    origin: REQUIRED_BINDS.to_owned(),
                    edits: ContainerEdits {
                        binds,
                        ..ContainerEdits::default()
                    },
                });
            }
        }
        for name in self.active_hooks() {
            // Checked in `resolve`; a missing one here is still an error.
            let hook = self
                .hook_defs
                .get(&name)
                .ok_or_else(|| ConfigError::UnknownHook {
                    origin: "run".to_owned(),
                    name: name.clone(),
                    defined: defined_list(&self.hook_defs),
                })?;
            push(hook_edits(&name, hook)?);
        }
        Ok(out)
    }
}

fn defined_list(hooks: &BTreeMap<String, Hook>) -> String {
    if hooks.is_empty() {
        "it defines none".to_owned()
    } else {
        let names: Vec<&str> = hooks.keys().map(String::as_str).collect();
        format!("defined: {}", names.join(", "))
    }
}

/// Expand `~` (leading), `$HOME`/`${HOME}` and `$USER`/`${USER}` in a
/// path-valued setting; the result must be absolute.
pub fn expand_path(
    raw: &str,
    key: &str,
    origin: &Origin,
    env: &[(OsString, OsString)],
) -> Result<PathBuf, ConfigError> {
    let bad = |reason| ConfigError::BadValue {
        origin: origin.to_string(),
        key: key.to_owned(),
        value: raw.to_owned(),
        reason,
    };
    let var = |k: &str| {
        lookup(env, k)
            .filter(|v| !v.is_empty())
            .map(|v| v.to_string_lossy().into_owned())
    };
    let mut text = raw.to_owned();
    if text == "~" || text.starts_with("~/") {
        let home = var("HOME").ok_or_else(|| bad("~ needs $HOME, which is not set"))?;
        text = format!("{home}{}", &text[1..]);
    }
    for name in ["HOME", "USER"] {
        for pattern in [format!("${{{name}}}"), format!("${name}")] {
            if text.contains(&pattern) {
                let value = var(name).ok_or_else(|| {
                    bad(if name == "HOME" {
                        "$HOME is not set"
                    } else {
                        "$USER is not set"
                    })
                })?;
                text = text.replace(&pattern, &value);
            }
        }
    }
    let path = PathBuf::from(&text);
    if !path.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    normalize_absolute(&path).ok_or_else(|| bad("escapes / with '..'"))
}

/// The value of the last layer (site, then user defaults) that sets a
/// field, with where it came from.
fn pick<'a, T: 'a>(
    layers: &[(&'a Defaults, &Origin)],
    get: impl Fn(&'a Defaults) -> Option<T>,
) -> Option<(T, Origin)> {
    layers
        .iter()
        .rev()
        .find_map(|(d, o)| get(d).map(|v| (v, (*o).clone())))
}

/// `block_cache`: `$CAIRN_BLOCK_CACHE`, else the files', else the default
/// (off when it needs a `$USER` that is not set); `off` switches it off.
fn block_cache(
    layers: &Layers<'_>,
    env: &[(OsString, OsString)],
) -> Result<Setting<Option<PathBuf>>, ConfigError> {
    let (raw, origin) = match lookup(env, BLOCK_CACHE_ENV).filter(|v| !v.is_empty()) {
        Some(v) => (
            v.to_string_lossy().into_owned(),
            Origin::Environment(BLOCK_CACHE_ENV.to_owned()),
        ),
        None => match pick(layers, |d| d.block_cache.clone()) {
            Some(found) => found,
            None => {
                let dir = expand_path(DEFAULT_BLOCK_CACHE, "block_cache", &Origin::Default, env);
                return Ok(Setting::new(dir.ok(), Origin::Default));
            }
        },
    };
    if raw == "off" {
        return Ok(Setting::new(None, origin));
    }
    let dir = expand_path(&raw, "block_cache", &origin, env)?;
    Ok(Setting::new(Some(dir), origin))
}

fn expand_all(
    list: &[String],
    key: &str,
    origin: &Origin,
    env: &[(OsString, OsString)],
) -> Result<Vec<String>, ConfigError> {
    list.iter()
        .map(|p| expand_path(p, key, origin, env).map(|p| p.to_string_lossy().into_owned()))
        .collect()
}

/// The `[defaults]` tables in precedence order (site, then user), each with
/// where it came from.
type Layers<'a> = [(&'a Defaults, &'a Origin); 2];

/// The value of the last layer that sets a field, else `default` (with
/// [`Origin::Default`]).
fn pick_or<'a, T: 'a>(
    layers: &Layers<'a>,
    get: impl Fn(&'a Defaults) -> Option<T>,
    default: impl FnOnce() -> T,
) -> Setting<T> {
    pick(layers, get)
        .map(|(v, o)| Setting::new(v, o))
        .unwrap_or_else(|| Setting::new(default(), Origin::Default))
}

/// Merge files, environment and command line (pure).
pub fn resolve(
    files: &Files,
    env: &[(OsString, OsString)],
    cli: &CommandLine,
) -> Result<Effective, ConfigError> {
    let empty = Defaults::default();
    let (site_defaults, site_origin) = match &files.site {
        Some(s) => (&s.file.defaults, Origin::Site(s.path.clone())),
        None => (&empty, Origin::Default),
    };
    let (user_defaults, user_origin) = match &files.user {
        Some(u) => (&u.file.defaults, Origin::User(u.path.clone())),
        None => (&empty, Origin::Default),
    };
    let layers = [(site_defaults, &site_origin), (user_defaults, &user_origin)];

    // In this order, so that of several mistakes the same one is reported
    // first, whatever the phases below become.
    let cache_dir = cache_dir(&layers, env)?;
    let mount = match cli.mount {
        Some(m) => Setting::new(m, Origin::CommandLine),
        None => pick_or(&layers, |d| d.mount, || MountMode::Auto),
    };
    let fuse_threads = match cli.fuse_threads {
        Some(n) => Setting::new(Some(n), Origin::CommandLine),
        None => pick_or(&layers, |d| d.fuse_threads.map(Some), || None),
    };
    check_fuse_threads(&fuse_threads)?;
    let DefaultLists { binds, env_tables } = default_binds_and_env(&layers)?;
    let hook_defs = site_hooks(files, &site_origin)?;
    let hooks = pick_or(&layers, |d| d.hooks.clone(), Vec::new);
    check_hook_names(
        &hook_defs,
        &hooks.value,
        format!("{} defaults.hooks", hooks.origin),
    )?;
    check_hook_names(&hook_defs, &cli.hooks, "--hook".to_owned())?;
    let cdi_spec_dirs = cdi_spec_dirs(&layers, env)?;
    let block_cache = block_cache(&layers, env)?;
    let warm_linger = warm_linger(&layers, env, cli.warm_linger)?;
    let policy = site_policy(files, &site_origin, env, &hook_defs)?;

    Ok(Effective {
        cache_dir,
        mount,
        fuse_threads,
        binds,
        env: env_tables,
        hooks,
        cdi_spec_dirs,
        join_auto: pick_or(&layers, |d| d.join.as_ref().and_then(|j| j.auto), || false),
        join_linger_ms: join_linger_ms(&layers, env),
        block_cache,
        block_cache_mib: pick_or(&layers, |d| d.block_cache_mib, || DEFAULT_BLOCK_CACHE_MIB),
        warm_linger,
        policy,
        policy_origin: site_origin,
        hook_defs,
        command_line_hooks: cli.hooks.clone(),
    })
}

/// `cache_dir`: `$CAIRN_CACHE`, else the files', else `~/.cache/cairn`
/// (`None` without a `$HOME`).
fn cache_dir(
    layers: &Layers<'_>,
    env: &[(OsString, OsString)],
) -> Result<Setting<Option<PathBuf>>, ConfigError> {
    if let Some(dir) = lookup(env, CACHE_ENV).filter(|v| !v.is_empty()) {
        return Ok(Setting::new(
            Some(PathBuf::from(dir)),
            Origin::Environment(CACHE_ENV.to_owned()),
        ));
    }
    Ok(match pick(layers, |d| d.cache_dir.as_ref()) {
        Some((raw, origin)) => {
            Setting::new(Some(expand_path(raw, "cache_dir", &origin, env)?), origin)
        }
        None => Setting::new(
            lookup(env, "HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(h).join(".cache/cairn")),
            Origin::Default,
        ),
    })
}

/// The default binds and environment tables of each layer that has them,
/// checked: the site's binds become edits (checked as such), the user's
/// become plain `-b` binds.
fn default_binds_and_env(layers: &Layers<'_>) -> Result<DefaultLists, ConfigError> {
    let mut binds = Vec::new();
    let mut env_tables = Vec::new();
    for &(defaults, origin) in layers {
        if let Some(list) = defaults.binds.as_ref().filter(|l| !l.is_empty()) {
            for spec in list {
                if matches!(origin, Origin::Site(_)) {
                    edit_bind(&format!("{origin} defaults.binds"), spec)?;
                } else {
                    parse_bind(spec).map_err(|source| ConfigError::Bind {
                        origin: format!("{origin} defaults.binds"),
                        spec: spec.clone(),
                        source,
                    })?;
                }
            }
            binds.push(Setting::new(list.clone(), origin.clone()));
        }
        if let Some(table) = defaults.env.as_ref().filter(|t| **t != EnvTable::default()) {
            check_unset_globs(&origin.to_string(), "defaults.env.unset", table)?;
            env_tables.push(Setting::new(table.clone(), origin.clone()));
        }
    }
    Ok(DefaultLists { binds, env_tables })
}

/// The lists each `[defaults]` layer adds to (rather than overrides).
struct DefaultLists {
    binds: Vec<Setting<Vec<String>>>,
    env_tables: Vec<Setting<EnvTable>>,
}

/// The hooks the site file defines, each checked as the edits it makes.
fn site_hooks(files: &Files, site_origin: &Origin) -> Result<BTreeMap<String, Hook>, ConfigError> {
    let hook_defs = files
        .site
        .as_ref()
        .map(|s| s.file.hooks.clone())
        .unwrap_or_default();
    for (name, hook) in &hook_defs {
        hook_edits(name, hook).map_err(|e| match e {
            // Name the file too: the hook is only in the site file.
            ConfigError::Bind {
                origin,
                spec,
                source,
            } => ConfigError::Bind {
                origin: format!("{site_origin} {origin}"),
                spec,
                source,
            },
            ConfigError::BadValue {
                origin,
                key,
                value,
                reason,
            } => ConfigError::BadValue {
                origin: format!("{site_origin} {origin}"),
                key,
                value,
                reason,
            },
            other => other,
        })?;
    }
    Ok(hook_defs)
}

/// Every name in `names` is a hook the site defines.
fn check_hook_names(
    hook_defs: &BTreeMap<String, Hook>,
    names: &[String],
    origin: String,
) -> Result<(), ConfigError> {
    match names.iter().find(|name| !hook_defs.contains_key(*name)) {
        Some(name) => Err(ConfigError::UnknownHook {
            origin,
            name: name.clone(),
            defined: defined_list(hook_defs),
        }),
        None => Ok(()),
    }
}

/// `cdi_spec_dirs`: `$CAIRN_CDI_DIRS` (`:`-separated), else the files',
/// else the CDI spec's defaults.
fn cdi_spec_dirs(
    layers: &Layers<'_>,
    env: &[(OsString, OsString)],
) -> Result<Setting<Vec<PathBuf>>, ConfigError> {
    if let Some(list) = lookup(env, CDI_DIRS_ENV).filter(|v| !v.is_empty()) {
        return Ok(Setting::new(
            std::env::split_paths(list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            Origin::Environment(CDI_DIRS_ENV.to_owned()),
        ));
    }
    Ok(match pick(layers, |d| d.cdi_spec_dirs.as_ref()) {
        Some((dirs, origin)) => Setting::new(
            dirs.iter()
                .map(|d| expand_path(d, "cdi_spec_dirs", &origin, env))
                .collect::<Result<Vec<_>, _>>()?,
            origin,
        ),
        None => Setting::new(
            DEFAULT_CDI_SPEC_DIRS.iter().map(PathBuf::from).collect(),
            Origin::Default,
        ),
    })
}

/// `join.linger_ms`: `$CAIRN_JOIN_LINGER_MS` when it is a number, else the
/// files', else [`DEFAULT_LINGER`].
fn join_linger_ms(layers: &Layers<'_>, env: &[(OsString, OsString)]) -> Setting<u64> {
    match lookup(env, LINGER_ENV).and_then(|v| v.to_str()?.parse::<u64>().ok()) {
        Some(ms) => Setting::new(ms, Origin::Environment(LINGER_ENV.to_owned())),
        None => pick_or(
            layers,
            |d| d.join.as_ref().and_then(|j| j.linger_ms),
            || u64::try_from(DEFAULT_LINGER.as_millis()).unwrap_or(u64::MAX),
        ),
    }
}

/// `warm_linger`: `--warm-linger`, else `$CAIRN_WARM_LINGER`, else the
/// files', else [`DEFAULT_WARM_LINGER`]. A bad value is an error naming
/// where it came from, unlike `$CAIRN_JOIN_LINGER_MS` (a knob for tests):
/// a user who sets this one means it, and a typo silently turning into 30 s
/// (or into "off") would be found only by timing runs.
fn warm_linger(
    layers: &Layers<'_>,
    env: &[(OsString, OsString)],
    cli: Option<Duration>,
) -> Result<Setting<Duration>, ConfigError> {
    if let Some(d) = cli {
        return Ok(Setting::new(d, Origin::CommandLine));
    }
    let (raw, origin) = match lookup(env, WARM_LINGER_ENV).filter(|v| !v.is_empty()) {
        Some(v) => (
            v.to_string_lossy().into_owned(),
            Origin::Environment(WARM_LINGER_ENV.to_owned()),
        ),
        None => match pick(layers, |d| d.warm_linger.as_ref()) {
            Some((text, origin)) => (text.as_str().to_owned(), origin),
            None => return Ok(Setting::new(DEFAULT_WARM_LINGER, Origin::Default)),
        },
    };
    // A variable that is not UTF-8 became U+FFFD above: refused too.
    match parse_duration(&raw) {
        Ok(d) => Ok(Setting::new(d, origin)),
        Err(reason) => Err(ConfigError::BadValue {
            origin: origin.to_string(),
            key: "warm_linger".to_owned(),
            value: raw,
            reason,
        }),
    }
}

/// The site's `[policy]`, its paths expanded and its required binds and
/// hooks checked.
fn site_policy(
    files: &Files,
    site_origin: &Origin,
    env: &[(OsString, OsString)],
    hook_defs: &BTreeMap<String, Hook>,
) -> Result<Policy, ConfigError> {
    let mut policy = files
        .site
        .as_ref()
        .map(|s| s.file.policy.clone())
        .unwrap_or_default();
    if policy.mount_modes.contains(&MountMode::Auto) {
        return Err(ConfigError::BadValue {
            origin: site_origin.to_string(),
            key: "policy.mount_modes".to_owned(),
            value: "auto".to_owned(),
            reason: "list the modes allowed: kernel, fuse (auto picks among them)",
        });
    }
    let expand = |list: &[String], key| expand_all(list, key, site_origin, env);
    policy.image_paths = expand(&policy.image_paths, "policy.image_paths")?;
    policy.forbidden_bind_sources = expand(
        &policy.forbidden_bind_sources,
        "policy.forbidden_bind_sources",
    )?;
    policy.forbidden_bind_destinations = expand(
        &policy.forbidden_bind_destinations,
        "policy.forbidden_bind_destinations",
    )?;
    if let Some(ca) = &policy.ca_file {
        let path = expand_path(ca, "policy.ca_file", site_origin, env)?;
        policy.ca_file = Some(path.to_string_lossy().into_owned());
    }
    for spec in &policy.required_binds {
        edit_bind(&format!("{site_origin} policy.required_binds"), spec)?;
    }
    check_hook_names(
        hook_defs,
        &policy.required_hooks,
        format!("{site_origin} policy.required_hooks"),
    )?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::Loaded;
    use crate::config::{JoinDefaults, SiteFile, UserFile};
    use crate::spec::edits::EnvEdit;
    use crate::spec::env::from_pairs as env;

    fn site(
        defaults: Defaults,
        policy: Policy,
        hooks: &[(&str, Hook)],
    ) -> Option<Loaded<SiteFile>> {
        Some(Loaded {
            path: PathBuf::from("/etc/cairn/cairn.toml"),
            file: SiteFile {
                defaults,
                policy,
                hooks: hooks
                    .iter()
                    .map(|(n, h)| ((*n).to_owned(), h.clone()))
                    .collect(),
            },
        })
    }

    fn user(defaults: Defaults) -> Option<Loaded<UserFile>> {
        Some(Loaded {
            path: PathBuf::from("/home/a/.config/cairn/config.toml"),
            file: UserFile { defaults },
        })
    }

    fn site_o() -> Origin {
        Origin::Site("/etc/cairn/cairn.toml".into())
    }
    fn user_o() -> Origin {
        Origin::User("/home/a/.config/cairn/config.toml".into())
    }

    fn hook(bind: &str, prepend: (&str, &str)) -> Hook {
        Hook {
            binds: vec![bind.to_owned()],
            env: EnvTable {
                prepend: BTreeMap::from([(prepend.0.to_owned(), prepend.1.to_owned())]),
                ..EnvTable::default()
            },
            ..Hook::default()
        }
    }

    #[test]
    fn the_block_cache_from_default_files_and_environment() {
        let none = CommandLine::default();
        let eff = resolve(&Files::default(), &env(&[("USER", "ann")]), &none).expect("resolve");
        assert_eq!(
            eff.block_cache,
            Setting::new(
                Some(PathBuf::from("/var/tmp/cairn-ann/blocks")),
                Origin::Default
            )
        );
        let files = Files {
            site: site(
                Defaults {
                    block_cache: Some("/local/$USER/cairn-blocks".into()),
                    block_cache_mib: Some(64),
                    ..Defaults::default()
                },
                Policy::default(),
                &[],
            ),
            user: None,
        };
        let eff = resolve(&files, &env(&[("USER", "ann")]), &none).expect("resolve");
        assert_eq!(
            eff.block_cache,
            Setting::new(Some(PathBuf::from("/local/ann/cairn-blocks")), site_o())
        );
        assert_eq!(eff.block_cache_mib, Setting::new(64, site_o()));
        let off = env(&[("USER", "ann"), ("CAIRN_BLOCK_CACHE", "off")]);
        let eff = resolve(&files, &off, &none).expect("resolve");
        assert_eq!(
            eff.block_cache,
            Setting::new(None, Origin::Environment("CAIRN_BLOCK_CACHE".into()))
        );
        let relative = env(&[("CAIRN_BLOCK_CACHE", "blocks")]);
        let err = resolve(&files, &relative, &none).expect_err("relative");
        assert!(err.to_string().contains("block_cache"), "{err}");
    }

    #[test]
    fn nothing_gives_the_built_in_defaults() {
        let eff = resolve(
            &Files::default(),
            &env(&[("HOME", "/home/a")]),
            &CommandLine::default(),
        )
        .expect("resolve");
        assert_eq!(
            eff.cache_dir,
            Setting::new(Some(PathBuf::from("/home/a/.cache/cairn")), Origin::Default)
        );
        assert_eq!(eff.mount, Setting::new(MountMode::Auto, Origin::Default));
        assert_eq!(eff.fuse_threads, Setting::new(None, Origin::Default));
        assert!(eff.binds.is_empty() && eff.env.is_empty());
        assert_eq!(eff.hooks.value, Vec::<String>::new());
        assert_eq!(
            eff.cdi_spec_dirs(),
            &[PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
        );
        assert_eq!(eff.join_auto, Setting::new(false, Origin::Default));
        assert_eq!(eff.join_linger_ms, Setting::new(3000, Origin::Default));
        // No $USER: no default block cache.
        assert_eq!(eff.block_cache, Setting::new(None, Origin::Default));
        assert_eq!(eff.block_cache_mib, Setting::new(1024, Origin::Default));
        assert_eq!(
            eff.warm_linger,
            Setting::new(Duration::from_secs(30), Origin::Default)
        );
        assert_eq!(eff.policy, Policy::default());
        assert_eq!(eff.policy_origin, Origin::Default);
        assert!(eff.run_edits().expect("edits").is_empty());
        // No HOME, no CAIRN_CACHE, nothing set: no cache location.
        let none = resolve(&Files::default(), &[], &CommandLine::default()).expect("resolve");
        assert_eq!(none.cache_dir.value, None);
    }

    #[test]
    fn each_layer_overrides_the_one_before() {
        let site_d = Defaults {
            cache_dir: Some("/scratch/$USER/cairn".into()),
            mount: Some(MountMode::Kernel),
            fuse_threads: Some(4),
            cdi_spec_dirs: Some(vec!["/site/cdi".into()]),
            join: Some(JoinDefaults {
                auto: Some(true),
                linger_ms: Some(100),
            }),
            ..Defaults::default()
        };
        let user_d = Defaults {
            cache_dir: Some("~/my-cache".into()),
            mount: Some(MountMode::Fuse),
            join: Some(JoinDefaults {
                auto: None,
                linger_ms: Some(200),
            }),
            ..Defaults::default()
        };
        let vars = env(&[("HOME", "/home/a"), ("USER", "a")]);
        let only_site = Files {
            site: site(site_d.clone(), Policy::default(), &[]),
            user: None,
        };
        let eff = resolve(&only_site, &vars, &CommandLine::default()).expect("site");
        assert_eq!(
            eff.cache_dir,
            Setting::new(Some(PathBuf::from("/scratch/a/cairn")), site_o())
        );
        assert_eq!(eff.mount, Setting::new(MountMode::Kernel, site_o()));
        assert_eq!(eff.fuse_threads, Setting::new(Some(4), site_o()));
        assert_eq!(eff.cdi_spec_dirs.origin, site_o());
        assert_eq!(eff.join_auto, Setting::new(true, site_o()));
        assert_eq!(eff.join_linger_ms, Setting::new(100, site_o()));

        let both = Files {
            site: site(site_d, Policy::default(), &[]),
            user: user(user_d),
        };
        let eff = resolve(&both, &vars, &CommandLine::default()).expect("user");
        assert_eq!(
            eff.cache_dir,
            Setting::new(Some(PathBuf::from("/home/a/my-cache")), user_o())
        );
        assert_eq!(eff.mount, Setting::new(MountMode::Fuse, user_o()));
        // Unset in the user file: the site's value stays.
        assert_eq!(eff.fuse_threads, Setting::new(Some(4), site_o()));
        assert_eq!(eff.join_auto, Setting::new(true, site_o()));
        assert_eq!(eff.join_linger_ms, Setting::new(200, user_o()));

        let mut vars = vars;
        vars.push(("CAIRN_CACHE".into(), "/env/cache".into()));
        vars.push(("CAIRN_CDI_DIRS".into(), "/a/cdi::/b/cdi".into()));
        vars.push(("CAIRN_JOIN_LINGER_MS".into(), "7".into()));
        let eff = resolve(&both, &vars, &CommandLine::default()).expect("env");
        assert_eq!(
            eff.cache_dir,
            Setting::new(
                Some(PathBuf::from("/env/cache")),
                Origin::Environment("CAIRN_CACHE".into())
            )
        );
        assert_eq!(
            eff.join_linger_ms,
            Setting::new(7, Origin::Environment("CAIRN_JOIN_LINGER_MS".into()))
        );
        assert_eq!(
            eff.cdi_spec_dirs,
            Setting::new(
                vec![PathBuf::from("/a/cdi"), PathBuf::from("/b/cdi")],
                Origin::Environment("CAIRN_CDI_DIRS".into())
            )
        );

        let cli = CommandLine {
            mount: Some(MountMode::Auto),
            fuse_threads: Some(2),
            hooks: Vec::new(),
            warm_linger: None,
        };
        let eff = resolve(&both, &vars, &cli).expect("cli");
        assert_eq!(
            eff.mount,
            Setting::new(MountMode::Auto, Origin::CommandLine)
        );
        assert_eq!(eff.fuse_threads, Setting::new(Some(2), Origin::CommandLine));
    }

    #[test]
    fn bad_values_name_the_key_and_the_origin() {
        let files = Files {
            site: None,
            user: user(Defaults {
                cache_dir: Some("relative/dir".into()),
                ..Defaults::default()
            }),
        };
        let err = resolve(&files, &env(&[("HOME", "/h")]), &CommandLine::default())
            .expect_err("relative");
        let msg = err.to_string();
        assert!(
            msg.contains("cache_dir") && msg.contains("config.toml"),
            "{msg}"
        );
        let files = Files {
            site: site(
                Defaults {
                    cache_dir: Some("~/c".into()),
                    ..Defaults::default()
                },
                Policy::default(),
                &[],
            ),
            user: None,
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("no home");
        assert!(err.to_string().contains("$HOME"), "{err}");
        let cli = CommandLine {
            fuse_threads: Some(0),
            ..CommandLine::default()
        };
        let err = resolve(&Files::default(), &[], &cli).expect_err("zero");
        assert!(err.to_string().contains("--fuse-threads"), "{err}");
        let files = Files {
            site: site(
                Defaults::default(),
                Policy {
                    mount_modes: vec![MountMode::Auto],
                    ..Policy::default()
                },
                &[],
            ),
            user: None,
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("auto");
        assert!(err.to_string().contains("policy.mount_modes"), "{err}");
    }

    #[test]
    fn warm_linger_follows_the_precedence_of_every_default() {
        let none = CommandLine::default();
        let eff = resolve(&Files::default(), &[], &none).expect("default");
        assert_eq!(
            eff.warm_linger,
            Setting::new(Duration::from_secs(30), Origin::Default)
        );
        let linger = |text: &str| Defaults {
            warm_linger: Some(text.into()),
            ..Defaults::default()
        };
        let only_site = Files {
            site: site(linger("2m"), Policy::default(), &[]),
            user: None,
        };
        let eff = resolve(&only_site, &[], &none).expect("site");
        assert_eq!(
            eff.warm_linger,
            Setting::new(Duration::from_secs(120), site_o())
        );
        let both = Files {
            site: site(linger("2m"), Policy::default(), &[]),
            user: user(linger("0")),
        };
        let eff = resolve(&both, &[], &none).expect("user");
        assert_eq!(eff.warm_linger, Setting::new(Duration::ZERO, user_o()));
        // Unset in the user file: the site's stays.
        let user_without = Files {
            site: site(linger("2m"), Policy::default(), &[]),
            user: user(Defaults::default()),
        };
        let eff = resolve(&user_without, &[], &none).expect("user unset");
        assert_eq!(eff.warm_linger.origin, site_o());
        let vars = env(&[("CAIRN_WARM_LINGER", "500ms")]);
        let eff = resolve(&both, &vars, &none).expect("env");
        assert_eq!(
            eff.warm_linger,
            Setting::new(
                Duration::from_millis(500),
                Origin::Environment("CAIRN_WARM_LINGER".into())
            )
        );
        // Empty is unset, as for the other variables.
        let empty = env(&[("CAIRN_WARM_LINGER", "")]);
        let eff = resolve(&both, &empty, &none).expect("empty env");
        assert_eq!(eff.warm_linger.origin, user_o());
        let cli = CommandLine {
            warm_linger: Some(Duration::from_secs(5)),
            ..CommandLine::default()
        };
        let eff = resolve(&both, &vars, &cli).expect("cli");
        assert_eq!(
            eff.warm_linger,
            Setting::new(Duration::from_secs(5), Origin::CommandLine)
        );
        // The command line wins even over a bad variable: that one is not
        // used, so it is not checked.
        let bad = env(&[("CAIRN_WARM_LINGER", "soon")]);
        assert!(resolve(&both, &bad, &cli).is_ok());
    }

    #[test]
    fn a_bad_warm_linger_names_its_source_and_value() {
        let none = CommandLine::default();
        let vars = env(&[("CAIRN_WARM_LINGER", "30sec")]);
        let err = resolve(&Files::default(), &vars, &none).expect_err("env");
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("environment CAIRN_WARM_LINGER")
                && msg.contains("\"30sec\"")
                && msg.contains("500ms"),
            "{msg}"
        );
        let bad = |text: &str| Defaults {
            warm_linger: Some(text.into()),
            ..Defaults::default()
        };
        let files = Files {
            site: None,
            user: user(bad("-1")),
        };
        let msg = resolve(&files, &[], &none).expect_err("user").to_string();
        assert!(
            msg.contains("config.toml")
                && msg.contains("warm_linger")
                && msg.contains("\"-1\"")
                && msg.contains("negative"),
            "{msg}"
        );
        let files = Files {
            site: site(bad("1h"), Policy::default(), &[]),
            user: None,
        };
        let msg = resolve(&files, &[], &none).expect_err("site").to_string();
        assert!(
            msg.contains("/etc/cairn/cairn.toml") && msg.contains("\"1h\""),
            "{msg}"
        );
    }

    #[test]
    fn fuse_threads_are_bounded_naming_the_option_or_the_key() {
        let cli = |n| CommandLine {
            fuse_threads: Some(n),
            ..CommandLine::default()
        };
        let eff = resolve(&Files::default(), &[], &cli(MAX_THREADS)).expect("the bound");
        assert_eq!(eff.fuse_threads.value, Some(MAX_THREADS));
        let err = resolve(&Files::default(), &[], &cli(20000)).expect_err("too many");
        let msg = err.to_string();
        assert!(
            msg.contains("--fuse-threads") && msg.contains("20000"),
            "{msg}"
        );
        // The static reason says the constant's value.
        assert!(msg.contains(&format!("at most {MAX_THREADS} ")), "{msg}");
        let files = Files {
            site: site(
                Defaults {
                    fuse_threads: Some(MAX_THREADS + 1),
                    ..Defaults::default()
                },
                Policy::default(),
                &[],
            ),
            user: None,
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("site");
        let msg = err.to_string();
        assert!(
            msg.contains("fuse_threads") && !msg.contains("--fuse-threads"),
            "{msg}"
        );
        assert!(msg.contains("/etc/cairn/cairn.toml"), "{msg}");
    }

    #[test]
    fn expansion_rules() {
        let vars = env(&[("HOME", "/home/a"), ("USER", "a")]);
        let o = Origin::Default;
        let ex = |s: &str| expand_path(s, "k", &o, &vars);
        assert_eq!(ex("~").expect("~"), PathBuf::from("/home/a"));
        assert_eq!(ex("~/x").expect("~/x"), PathBuf::from("/home/a/x"));
        assert_eq!(ex("/s/${USER}/x").expect("{}"), PathBuf::from("/s/a/x"));
        assert_eq!(ex("$HOME/../b").expect("home"), PathBuf::from("/home/b"));
        assert!(ex("~user/x").is_err(), "only the caller's own ~");
        assert!(ex("x").is_err());
        assert!(ex("/../..").is_err());
        assert!(expand_path("/s/$USER", "k", &o, &[]).is_err());
    }

    #[test]
    fn bad_unset_globs_in_env_tables_are_refused() {
        let bad_table = EnvTable {
            unset: vec!["[".into()],
            ..EnvTable::default()
        };
        let files = Files {
            site: None,
            user: user(Defaults {
                env: Some(bad_table.clone()),
                ..Defaults::default()
            }),
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("user [");
        let msg = err.to_string();
        assert!(
            msg.contains("defaults.env.unset")
                && msg.contains("\"[\"")
                && msg.contains("config.toml"),
            "{msg}"
        );
        let hook = Hook {
            env: bad_table,
            ..Hook::default()
        };
        let files = Files {
            site: site(Defaults::default(), Policy::default(), &[("mpi", hook)]),
            user: None,
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("hook [");
        let msg = err.to_string();
        assert!(
            msg.contains("hook mpi") && msg.contains("env.unset") && msg.contains("cairn.toml"),
            "{msg}"
        );
    }

    #[test]
    fn binds_and_env_accumulate_site_then_user() {
        let site_d = Defaults {
            binds: Some(vec!["/site/data:/data:ro".into()]),
            env: Some(EnvTable {
                prepend: BTreeMap::from([("PATH".into(), "/site/bin".into())]),
                ..EnvTable::default()
            }),
            ..Defaults::default()
        };
        let user_d = Defaults {
            binds: Some(vec!["/home/a/x:/x".into()]),
            env: Some(EnvTable {
                set: BTreeMap::from([("EDITOR".into(), "vi".into())]),
                ..EnvTable::default()
            }),
            ..Defaults::default()
        };
        let files = Files {
            site: site(
                site_d,
                Policy {
                    required_binds: vec!["/etc/site-certs:/etc/ssl/site:ro".into()],
                    ..Policy::default()
                },
                &[],
            ),
            user: user(user_d),
        };
        let eff = resolve(&files, &[], &CommandLine::default()).expect("resolve");
        assert_eq!(eff.binds.len(), 2);
        assert_eq!(eff.user_binds(), vec!["/home/a/x:/x".to_owned()]);
        let edits = eff.run_edits().expect("edits");
        let origins: Vec<&str> = edits.iter().map(|e| e.origin.as_str()).collect();
        assert_eq!(origins, vec![SITE_DEFAULTS, REQUIRED_BINDS, USER_DEFAULTS]);
        assert_eq!(edits[0].edits.binds[0].dst, PathBuf::from("/data"));
        assert!(edits[0].edits.binds[0].read_only);
        assert_eq!(
            edits[0].edits.env,
            vec![EnvEdit::Prepend("PATH".into(), "/site/bin".into())]
        );
        assert_eq!(edits[1].edits.binds[0].dst, PathBuf::from("/etc/ssl/site"));
        // The user's binds are `-b` binds, not edits.
        assert!(edits[2].edits.binds.is_empty());
        assert_eq!(
            edits[2].edits.env,
            vec![EnvEdit::Set("EDITOR".into(), "vi".into())]
        );
    }

    #[test]
    fn site_binds_need_absolute_sources_user_binds_need_valid_specs() {
        let files = Files {
            site: site(
                Defaults {
                    binds: Some(vec!["rel:/x".into()]),
                    ..Defaults::default()
                },
                Policy::default(),
                &[],
            ),
            user: None,
        };
        assert!(matches!(
            resolve(&files, &[], &CommandLine::default()),
            Err(ConfigError::RelativeBindSource { .. })
        ));
        let files = Files {
            site: None,
            user: user(Defaults {
                binds: Some(vec!["/a:/b:bogus".into()]),
                ..Defaults::default()
            }),
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("bad");
        assert!(err.to_string().contains("config.toml"), "{err}");
    }

    #[test]
    fn hooks_order_and_user_choice() {
        let hooks = [
            (
                "mpi",
                hook(
                    "/usr/lib/openmpi:/opt/host-mpi/lib:ro",
                    ("LD_LIBRARY_PATH", "/opt/host-mpi/lib"),
                ),
            ),
            (
                "gpu",
                hook(
                    "/usr/lib/nvidia:/opt/gpu/lib:ro",
                    ("LD_LIBRARY_PATH", "/opt/gpu/lib"),
                ),
            ),
            ("audit", hook("/var/log/audit:/audit", ("AUDIT", "1"))),
        ];
        let site_d = Defaults {
            hooks: Some(vec!["gpu".into()]),
            ..Defaults::default()
        };
        let policy = Policy {
            required_hooks: vec!["audit".into()],
            ..Policy::default()
        };
        let files = Files {
            site: site(site_d.clone(), policy.clone(), &hooks),
            user: None,
        };
        let cli = CommandLine {
            hooks: vec!["mpi".into(), "gpu".into()],
            ..CommandLine::default()
        };
        let eff = resolve(&files, &[], &cli).expect("resolve");
        assert_eq!(eff.hooks, Setting::new(vec!["gpu".to_owned()], site_o()));
        assert_eq!(eff.active_hooks(), vec!["audit", "gpu", "mpi"]);
        let origins: Vec<String> = eff
            .run_edits()
            .expect("edits")
            .into_iter()
            .map(|e| e.origin)
            .collect();
        assert_eq!(origins, vec!["hook audit", "hook gpu", "hook mpi"]);

        // The user switches the default hooks off; the required one stays.
        let files = Files {
            site: site(site_d, policy, &hooks),
            user: user(Defaults {
                hooks: Some(Vec::new()),
                ..Defaults::default()
            }),
        };
        let eff = resolve(&files, &[], &CommandLine::default()).expect("resolve");
        assert_eq!(eff.hooks.origin, user_o());
        assert_eq!(eff.active_hooks(), vec!["audit"]);
    }

    #[test]
    fn unknown_hooks_list_the_defined_ones() {
        let hooks = [("mpi", hook("/a:/b", ("X", "1")))];
        let files = Files {
            site: site(Defaults::default(), Policy::default(), &hooks),
            user: None,
        };
        let cli = CommandLine {
            hooks: vec!["gpu".into()],
            ..CommandLine::default()
        };
        let err = resolve(&files, &[], &cli).expect_err("unknown");
        let msg = err.to_string();
        assert!(
            msg.contains("\"gpu\"") && msg.contains("defined: mpi"),
            "{msg}"
        );
        let err = resolve(&Files::default(), &[], &cli).expect_err("none defined");
        assert!(err.to_string().contains("defines none"), "{err}");
        let files = Files {
            site: site(
                Defaults::default(),
                Policy {
                    required_hooks: vec!["nope".into()],
                    ..Policy::default()
                },
                &hooks,
            ),
            user: None,
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("required");
        assert!(err.to_string().contains("required_hooks"), "{err}");
        let files = Files {
            site: site(Defaults::default(), Policy::default(), &hooks),
            user: user(Defaults {
                hooks: Some(vec!["nope".into()]),
                ..Defaults::default()
            }),
        };
        let err = resolve(&files, &[], &CommandLine::default()).expect_err("user");
        assert!(err.to_string().contains("config.toml"), "{err}");
        let broken = [("bad", hook("rel:/b", ("X", "1")))];
        let files = Files {
            site: site(Defaults::default(), Policy::default(), &broken),
            user: None,
        };
        assert!(resolve(&files, &[], &CommandLine::default()).is_err());
    }

    #[test]
    fn policy_comes_from_the_site_with_paths_expanded() {
        let files = Files {
            site: site(
                Defaults::default(),
                Policy {
                    image_paths: vec!["/scratch/$USER".into(), "~/images".into()],
                    forbidden_bind_sources: vec!["/etc/../etc/shadow".into()],
                    mount_modes: vec![MountMode::Fuse],
                    ca_file: Some("/etc/ssl/site.pem".into()),
                    ..Policy::default()
                },
                &[],
            ),
            user: None,
        };
        let vars = env(&[("HOME", "/home/a"), ("USER", "a")]);
        let eff = resolve(&files, &vars, &CommandLine::default()).expect("resolve");
        assert_eq!(eff.policy_origin, site_o());
        assert_eq!(eff.policy.image_paths, vec!["/scratch/a", "/home/a/images"]);
        assert_eq!(eff.policy.forbidden_bind_sources, vec!["/etc/shadow"]);
        assert_eq!(
            eff.policy.site_file, None,
            "set by load::parse_site, not here"
        );
        assert_eq!(eff.policy.ca_file.as_deref(), Some("/etc/ssl/site.pem"));
    }
}
