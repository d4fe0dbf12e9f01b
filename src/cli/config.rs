//! `cairn config show [--json]`: every effective setting with where it came
//! from, the site's policy (site-only) and hooks. Also the one place the
//! other subcommands load the configuration from ([`effective`],
//! [`cache`]).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::settings::HostEnv;
use crate::config::duration::{format_duration, parse_duration};
use crate::config::load::{self, Files};
use crate::config::resolve::{CommandLine, Effective, Setting, resolve};
use crate::config::{MountMode, Origin};
use crate::image::cache::Cache;
use crate::mount::fuse::ServeOptions;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print each effective setting and where it came from.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// As `cairn run --mount` would set it.
    #[arg(long, value_enum)]
    pub mount: Option<MountMode>,
    /// As `cairn run --fuse-threads` would set it.
    #[arg(long, value_name = "N")]
    pub fuse_threads: Option<usize>,
    /// As `cairn run --hook` would switch it on.
    #[arg(long = "hook", value_name = "NAME")]
    pub hook: Vec<String>,
    /// As `cairn run --warm-linger` would set it.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub warm_linger: Option<Duration>,
}

/// The files and the effective configuration for this process's
/// environment and the given command-line values.
pub fn effective_with_files(
    env: &[(OsString, OsString)],
    cli: &CommandLine,
) -> anyhow::Result<(Files, Effective)> {
    let files = load::load(env)?;
    // `$USER` in a path value: cron and some launchers do not set USER,
    // the user database still knows the name.
    let mut env = env.to_vec();
    if crate::run::env::lookup(&env, "USER").is_none_or(|u| u.is_empty())
        && let Some((name, _, _)) = crate::sys::process::getpwuid(crate::sys::process::geteuid())
    {
        env.push(("USER".into(), name.into()));
    }
    let mut effective = resolve(&files, &env, cli)?;
    load::canonicalize_policy_paths(&mut effective.policy);
    Ok((files, effective))
}

/// The effective configuration (files + this process's environment + `cli`).
pub fn effective(env: &HostEnv, cli: &CommandLine) -> anyhow::Result<Effective> {
    effective_with_files(env.vars(), cli).map(|(_, e)| e)
}

/// The image cache the configuration names.
/// The image cache, as configured and checked ([`Cache::verify`]): its
/// directories exist and nobody but the caller can write to them.
pub fn cache_of(effective: &Effective) -> anyhow::Result<Cache> {
    let cache = match &effective.cache_dir.value {
        Some(dir) => Cache::at(dir),
        None => anyhow::bail!(
            "no image cache location: set cache_dir in the config, CAIRN_CACHE or HOME"
        ),
    };
    cache.verify(crate::sys::process::geteuid())?;
    Ok(cache)
}

/// The image cache, as configured and checked.
pub fn cache(env: &HostEnv) -> anyhow::Result<Cache> {
    cache_of(&effective(env, &CommandLine::default())?)
}

pub fn execute(args: ConfigArgs, env: &HostEnv) -> anyhow::Result<i32> {
    match args.command {
        ConfigCommand::Show(show) => show_config(show, env.vars()),
    }
}

fn show_config(args: ShowArgs, env: &[(OsString, OsString)]) -> anyhow::Result<i32> {
    let cli = CommandLine {
        mount: args.mount,
        fuse_threads: args.fuse_threads,
        hooks: args.hook.clone(),
        warm_linger: args.warm_linger,
    };
    let (files, eff) = effective_with_files(env, &cli)?;
    let (site_path, _) = load::site_path(env);
    let user_path = load::user_path(env);
    let report = Report::new(&eff, &files, &site_path, user_path.as_deref());
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&report.json()).context("json output")?;
        text.push('\n');
        text
    } else {
        report.text()
    };
    super::print_stdout(&text)?;
    Ok(0)
}

/// One printable line: key, value (as TOML/JSON text), origin.
struct Line {
    key: String,
    value: Value,
    origin: Origin,
    note: Option<String>,
}

struct Report {
    files: Vec<(&'static str, String, bool)>,
    defaults: Vec<Line>,
    policy: Vec<(String, Value)>,
    policy_origin: Origin,
    hooks: Vec<(String, Value)>,
    active_hooks: Vec<String>,
}

fn line<T: serde::Serialize>(key: &str, s: &Setting<T>) -> Line {
    Line {
        key: key.to_owned(),
        value: serde_json::to_value(&s.value).unwrap_or(Value::Null),
        origin: s.origin.clone(),
        note: None,
    }
}

fn origin_json(o: &Origin) -> Value {
    json!({ "kind": o.kind(), "from": o.detail() })
}

impl Report {
    fn new(eff: &Effective, files: &Files, site: &Path, user: Option<&Path>) -> Report {
        let mut defaults = vec![line("cache_dir", &eff.cache_dir), line("mount", &eff.mount)];
        let mut threads = line("fuse_threads", &eff.fuse_threads);
        if eff.fuse_threads.value.is_none() {
            threads.value = json!(ServeOptions::default().threads);
            threads.note = Some("the FUSE server's own default".to_owned());
        }
        defaults.push(threads);
        for s in &eff.binds {
            defaults.push(line("binds", s));
        }
        if eff.binds.is_empty() {
            defaults.push(Line {
                key: "binds".to_owned(),
                value: json!([]),
                origin: Origin::Default,
                note: None,
            });
        }
        for s in &eff.env {
            let t = &s.value;
            for (k, v) in &t.set {
                defaults.push(env_line("set", k, json!(v), &s.origin));
            }
            for (k, v) in &t.prepend {
                defaults.push(env_line("prepend", k, json!(v), &s.origin));
            }
            for (k, v) in &t.append {
                defaults.push(env_line("append", k, json!(v), &s.origin));
            }
            if !t.unset.is_empty() {
                defaults.push(Line {
                    key: "env.unset".to_owned(),
                    value: json!(t.unset),
                    origin: s.origin.clone(),
                    note: None,
                });
            }
        }
        defaults.push(line("hooks", &eff.hooks));
        defaults.push(line("cdi_spec_dirs", &eff.cdi_spec_dirs));
        defaults.push(line("join.auto", &eff.join_auto));
        defaults.push(line("join.linger_ms", &eff.join_linger_ms));
        let mut store = line("block_cache", &eff.block_cache);
        if eff.block_cache.value.is_none() {
            store.value = json!("off");
        }
        defaults.push(store);
        defaults.push(line("block_cache_mib", &eff.block_cache_mib));
        // As a config file would write it: `Duration` itself serializes
        // as a {secs, nanos} object.
        defaults.push(Line {
            key: "warm_linger".to_owned(),
            value: json!(format_duration(eff.warm_linger.value)),
            origin: eff.warm_linger.origin.clone(),
            note: eff
                .warm_linger
                .value
                .is_zero()
                .then(|| "warm runs off".to_owned()),
        });
        if !eff.command_line_hooks.is_empty() {
            defaults.push(Line {
                key: "--hook".to_owned(),
                value: json!(eff.command_line_hooks),
                origin: Origin::CommandLine,
                note: None,
            });
        }

        let p = &eff.policy;
        let mut policy = vec![
            ("image_paths".to_owned(), json!(p.image_paths)),
            ("mount_modes".to_owned(), json!(p.mount_modes)),
            (
                "forbidden_bind_sources".to_owned(),
                json!(p.forbidden_bind_sources),
            ),
            (
                "forbidden_bind_destinations".to_owned(),
                json!(p.forbidden_bind_destinations),
            ),
            ("required_binds".to_owned(), json!(p.required_binds)),
            ("required_hooks".to_owned(), json!(p.required_hooks)),
            (
                "insecure_registries".to_owned(),
                json!(p.insecure_registries),
            ),
        ];
        if let Some(ca) = &p.ca_file {
            policy.push(("ca_file".to_owned(), json!(ca)));
        }
        let hooks = eff
            .hook_defs
            .iter()
            .map(|(n, h)| (n.clone(), serde_json::to_value(h).unwrap_or(Value::Null)))
            .collect();
        Report {
            files: vec![
                ("site", site.display().to_string(), files.site.is_some()),
                (
                    "user",
                    user.map_or_else(|| "(no HOME)".to_owned(), |u| u.display().to_string()),
                    files.user.is_some(),
                ),
            ],
            defaults,
            policy,
            policy_origin: eff.policy_origin.clone(),
            hooks,
            active_hooks: eff.active_hooks(),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for (which, path, present) in &self.files {
            let state = if *present { "read" } else { "absent" };
            out.push_str(&format!("# {which} config: {path} ({state})\n"));
        }
        out.push_str("\n[defaults]\n");
        for l in &self.defaults {
            out.push_str(&format!("{} = {}  # from {}", l.key, l.value, l.origin));
            if let Some(n) = &l.note {
                out.push_str(&format!(" ({n})"));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "\n[policy]  # site-only: users cannot override it; from {}\n",
            self.policy_origin
        ));
        for (k, v) in &self.policy {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push_str(&format!(
            "\n# hooks switched on for a run: {}\n",
            serde_json::to_string(&self.active_hooks).unwrap_or_default()
        ));
        for (name, hook) in &self.hooks {
            out.push_str(&format!(
                "\n[hooks.{name}]  # from {}\n",
                self.policy_origin
            ));
            if let Value::Object(fields) = hook {
                for (k, v) in fields {
                    if k == "env" {
                        if let Value::Object(env) = v {
                            for (how, vars) in env {
                                match vars {
                                    Value::Object(m) if !m.is_empty() => {
                                        for (var, val) in m {
                                            out.push_str(&format!("env.{how}.{var} = {val}\n"));
                                        }
                                    }
                                    Value::Array(a) if !a.is_empty() => {
                                        out.push_str(&format!("env.{how} = {vars}\n"));
                                    }
                                    _ => {}
                                }
                            }
                        }
                    } else if !v.is_null() {
                        out.push_str(&format!("{k} = {v}\n"));
                    }
                }
            }
        }
        out
    }

    fn json(&self) -> Value {
        let files: serde_json::Map<String, Value> = self
            .files
            .iter()
            .map(|(w, p, present)| ((*w).to_owned(), json!({"path": p, "present": present})))
            .collect();
        let defaults: Vec<Value> = self
            .defaults
            .iter()
            .map(|l| {
                json!({
                    "key": l.key,
                    "value": l.value,
                    "origin": origin_json(&l.origin),
                    "note": l.note,
                })
            })
            .collect();
        let policy: serde_json::Map<String, Value> = self.policy.iter().cloned().collect();
        let hooks: serde_json::Map<String, Value> = self.hooks.iter().cloned().collect();
        json!({
            "files": files,
            "defaults": defaults,
            "policy": { "site_only": true, "origin": origin_json(&self.policy_origin), "values": policy },
            "hooks": hooks,
            "active_hooks": self.active_hooks,
        })
    }
}

fn env_line(how: &str, var: &str, value: Value, origin: &Origin) -> Line {
    Line {
        key: format!("env.{how}.{var}"),
        value,
        origin: origin.clone(),
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(env: &[(OsString, OsString)], cli: &CommandLine) -> Report {
        let files = Files::default();
        let eff = resolve(&files, env, cli).expect("resolve");
        Report::new(&eff, &files, Path::new("/etc/cairn/cairn.toml"), None)
    }

    fn warm_line(text: &str) -> &str {
        text.lines()
            .find(|l| l.starts_with("warm_linger = "))
            .unwrap_or_else(|| panic!("no warm_linger in:\n{text}"))
    }

    #[test]
    fn warm_linger_shows_as_a_config_file_writes_it() {
        let text = report(&[], &CommandLine::default()).text();
        assert_eq!(warm_line(&text), "warm_linger = \"30s\"  # from default");
        let env = [("CAIRN_WARM_LINGER".into(), "0".into())];
        let text = report(&env, &CommandLine::default()).text();
        assert_eq!(
            warm_line(&text),
            "warm_linger = \"0s\"  # from environment CAIRN_WARM_LINGER (warm runs off)"
        );
        let cli = CommandLine {
            warm_linger: Some(Duration::from_millis(1500)),
            ..CommandLine::default()
        };
        let json = report(&env, &cli).json();
        let line = json["defaults"]
            .as_array()
            .and_then(|d| d.iter().find(|l| l["key"] == "warm_linger"))
            .expect("warm_linger in json");
        assert_eq!(line["value"], "1500ms");
        assert_eq!(line["origin"]["kind"], "command-line");
    }
}
