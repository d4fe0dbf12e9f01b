//! The site config parser's fuzz harness, shared by the `site_config` fuzz
//! target and the seed test: a site file and a user file of arbitrary bytes
//! are parsed and resolved. Errors are fine; panics are not, and a file
//! that parses must resolve without touching the file system.

use std::path::Path;

use crate::config::load::{Files, Loaded, parse_site, parse_user};
use crate::config::resolve::{CommandLine, resolve};

/// Parse `data` as a site file and as a user file, and resolve what parses.
pub fn fuzz_site_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let site_path = Path::new("/etc/cairn/cairn.toml");
    let user_path = Path::new("/home/u/.config/cairn/config.toml");
    let site = parse_site(site_path, &text).ok();
    let user = parse_user(user_path, &text, site_path).ok();
    let files = Files {
        site: site.map(|file| Loaded {
            path: site_path.to_path_buf(),
            file,
        }),
        user: user.map(|file| Loaded {
            path: user_path.to_path_buf(),
            file,
        }),
    };
    let env = [("HOME".into(), "/home/u".into())];
    let cli = CommandLine {
        hooks: vec!["mpi".into()],
        ..CommandLine::default()
    };
    let _ = resolve(&files, &env, &cli);
    let _ = resolve(&files, &env, &CommandLine::default());
}
