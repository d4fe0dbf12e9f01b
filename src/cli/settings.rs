//! The process's environment, read once at the binary's edge
//! ([`super::execute`]) and handed down as plain data. Below `cli/` nothing
//! calls `std::env::var`: a setting such as `SOURCE_DATE_EPOCH` or
//! `REGISTRY_AUTH_FILE` reaches the library as a field of an option struct,
//! so a test can set it without touching the process's environment.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// The environment cairn was started with (`name`, `value`), in the order
/// the process got it.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    vars: Vec<(OsString, OsString)>,
}

impl HostEnv {
    /// The calling process's environment.
    pub fn read() -> HostEnv {
        HostEnv::from_vars(std::env::vars_os().collect())
    }

    pub fn from_vars(vars: Vec<(OsString, OsString)>) -> HostEnv {
        HostEnv { vars }
    }

    pub fn vars(&self) -> &[(OsString, OsString)] {
        &self.vars
    }

    /// The first value of `key`, as `getenv(3)` finds it.
    pub fn get(&self, key: &str) -> Option<&OsStr> {
        crate::spec::env::lookup(&self.vars, key)
    }

    /// `$SOURCE_DATE_EPOCH` as the u32 seconds a squashfs time holds; `None`
    /// when unset, not a decimal number, or past 2106 (reproducible-builds.org:
    /// an invalid value is ignored).
    pub fn source_date_epoch(&self) -> Option<u32> {
        self.get("SOURCE_DATE_EPOCH")
            .and_then(OsStr::to_str)
            .and_then(|v| v.trim().parse::<u32>().ok())
    }

    /// The docker-style credential files to look a registry up in, first
    /// match wins: `$REGISTRY_AUTH_FILE`, then `$HOME/.docker/config.json`.
    pub fn registry_auth_files(&self) -> Vec<PathBuf> {
        crate::image::registry::auth::credential_files(
            self.get("REGISTRY_AUTH_FILE"),
            self.get("HOME"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HostEnv {
        HostEnv::from_vars(
            pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
        )
    }

    #[test]
    fn source_date_epoch_is_a_u32_or_nothing() {
        assert_eq!(env(&[]).source_date_epoch(), None);
        assert_eq!(
            env(&[("SOURCE_DATE_EPOCH", "1700000000")]).source_date_epoch(),
            Some(1_700_000_000)
        );
        // Spaces around the number are trimmed (as the writer did, and
        // mksquashfs does); no sign, nothing past u32.
        assert_eq!(
            env(&[("SOURCE_DATE_EPOCH", " 5\n")]).source_date_epoch(),
            Some(5)
        );
        for bad in ["", "-1", "4294967296", "1e9", "now"] {
            assert_eq!(
                env(&[("SOURCE_DATE_EPOCH", bad)]).source_date_epoch(),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn registry_auth_files_in_order() {
        assert_eq!(
            env(&[
                ("HOME", "/home/u"),
                ("REGISTRY_AUTH_FILE", "/run/auth.json")
            ])
            .registry_auth_files(),
            vec![
                PathBuf::from("/run/auth.json"),
                PathBuf::from("/home/u/.docker/config.json")
            ]
        );
        assert_eq!(env(&[]).registry_auth_files(), Vec::<PathBuf>::new());
    }
}
