//! Registry credentials: `--creds USER:PASS`, else the `auths` of
//! `$REGISTRY_AUTH_FILE` or `~/.docker/config.json` (base64 `user:pass`
//! per registry host). Bearer tokens are then negotiated by the client.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("--creds must be USER:PASS")]
    Creds,
    #[error("reading credentials file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("credentials file {path} is not valid json")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("credentials file {path}: entry for {registry} is not base64 user:pass")]
    Entry { path: PathBuf, registry: String },
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// Parses `--creds USER:PASS`.
pub fn parse_creds(value: &str) -> Result<Credentials, AuthError> {
    match value.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok(Credentials {
            user: u.to_owned(),
            password: p.to_owned(),
        }),
        _ => Err(AuthError::Creds),
    }
}

/// Standard base64 (padding optional); `None` if malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in text.trim_end_matches('=').bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // `acc` keeps only the bits not yet output, so this is the
            // next whole byte.
            out.push(u8::try_from(acc >> bits).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The keys a registry may be filed under in a docker config.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_owned(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == super::reference::DEFAULT_REGISTRY {
        keys.push("https://index.docker.io/v1/".to_owned());
        keys.push("index.docker.io".to_owned());
    }
    keys
}

/// Finds `registry` in the text of an auth file.
pub fn lookup_in(
    path: &Path,
    text: &str,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let file: AuthFile = serde_json::from_str(text).map_err(|source| AuthError::Json {
        path: path.to_owned(),
        source,
    })?;
    for key in keys_for(registry) {
        let Some(entry) = file.auths.get(&key) else {
            continue;
        };
        let Some(auth) = &entry.auth else {
            continue;
        };
        let bad = || AuthError::Entry {
            path: path.to_owned(),
            registry: registry.to_owned(),
        };
        let decoded = base64_decode(auth.trim()).ok_or_else(bad)?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        return parse_creds(&decoded).map(Some).map_err(|_| bad());
    }
    Ok(None)
}

/// The credential files to search, in order, given the values of
/// `$REGISTRY_AUTH_FILE` and `$HOME` (read by the caller).
pub fn credential_files(registry_auth_file: Option<&OsStr>, home: Option<&OsStr>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = registry_auth_file {
        files.push(PathBuf::from(p));
    }
    if let Some(home) = home {
        files.push(Path::new(home).join(".docker/config.json"));
    }
    files
}

/// Credentials for `registry` from the first of `files` that lists it
/// (see [`credential_files`]); a missing file is skipped.
pub fn from_files(files: &[PathBuf], registry: &str) -> Result<Option<Credentials>, AuthError> {
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(AuthError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        if let Some(c) = lookup_in(path, &text, registry)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(
            base64_decode("dXNlcjpwYXNz").as_deref(),
            Some(&b"user:pass"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("a*b"), None);
    }

    #[test]
    fn finds_registry_entries() {
        let path = Path::new("auth.json");
        let text = r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"},
            "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldDpwYXJ0"}}}"#;
        let c = lookup_in(path, text, "127.0.0.1:5000").expect("parse");
        assert_eq!(
            c,
            Some(Credentials {
                user: "user".into(),
                password: "pass".into()
            })
        );
        let c = lookup_in(path, text, "docker.io")
            .expect("parse")
            .expect("hub");
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("hub", "secret:part")
        );
        assert_eq!(lookup_in(path, text, "ghcr.io").expect("parse"), None);
        assert!(lookup_in(path, "{", "x").is_err());
        assert!(lookup_in(path, r#"{"auths":{"x":{"auth":"!!"}}}"#, "x").is_err());
    }

    #[test]
    fn first_listing_file_wins_and_missing_ones_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(&a, r#"{"auths":{"other.io":{"auth":"YTpi"}}}"#).expect("write a");
        std::fs::write(&b, r#"{"auths":{"r.io":{"auth":"dXNlcjpwYXNz"}}}"#).expect("write b");
        let files = [dir.path().join("missing.json"), a, b];
        let c = from_files(&files, "r.io").expect("read").expect("found");
        assert_eq!(c.user, "user");
        assert_eq!(from_files(&files, "none.io").expect("read"), None);
        assert_eq!(from_files(&[], "r.io").expect("read"), None);
    }

    #[test]
    fn credential_files_follow_the_variables() {
        assert_eq!(
            credential_files(Some(OsStr::new("/a.json")), Some(OsStr::new("/h"))),
            vec![
                PathBuf::from("/a.json"),
                PathBuf::from("/h/.docker/config.json")
            ]
        );
        assert_eq!(credential_files(None, None), Vec::<PathBuf>::new());
    }

    #[test]
    fn parses_creds() {
        assert!(parse_creds("nouser").is_err());
        assert!(parse_creds(":p").is_err());
        assert_eq!(parse_creds("u:p:q").expect("ok").password, "p:q");
    }
}
