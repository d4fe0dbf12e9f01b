//! The build front end's fuzz harness, shared by the `dockerfile` fuzz
//! target and the regression replay test: arbitrary bytes as a Dockerfile,
//! as words to expand and as a `.dockerignore`. Errors are fine; panics
//! (and runaway time) are not.

use super::{dockerfile, expand, ignore};

/// Feed `data` (lossy UTF-8) to every parser of the build front end.
pub fn fuzz_dockerfile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars = |name: &str| match name {
        "A" => Some("a b".to_string()),
        "EMPTY" => Some(String::new()),
        "P" => Some("/usr/local/lib/x.tar.gz".to_string()),
        _ => None,
    };
    if let Ok(parsed) = dockerfile::parse(&text) {
        // What a builder does next: expand the raw words it was given.
        for stage in &parsed.stages {
            let _ = expand::word(&stage.from, &vars, parsed.escape);
            for instruction in &stage.instructions {
                if let dockerfile::Kind::Env(pairs) | dockerfile::Kind::Label(pairs) =
                    &instruction.kind
                {
                    for (k, v) in pairs {
                        let _ = expand::word(k, &vars, parsed.escape);
                        let _ = expand::word(v, &vars, parsed.escape);
                    }
                }
            }
        }
    }
    for escape in ['\\', '`'] {
        let _ = expand::word(&text, &vars, escape);
        let _ = expand::words(&text, &vars, escape);
    }
    let _ = expand::heredoc(&text, &vars);
    if let Ok(ignore) = ignore::Ignore::parse(&text) {
        // A few short paths: matching costs patterns x parents x length,
        // and the fuzzer should spend its time on parsing.
        for line in text.lines().take(4) {
            let path: String = line
                .trim()
                .trim_start_matches('!')
                .chars()
                .take(64)
                .collect();
            let _ = ignore.matches(&path);
            let _ = ignore.may_contain_exceptions(&path);
        }
        for path in ["a", "a/b.go", "docs/x/secret", "."] {
            let _ = ignore.matches(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn seed(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus-seed/dockerfile")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn seeds_give_their_outcome() {
        for good in ["multistage", "heredocs", "escape-backtick"] {
            if let Err(e) = dockerfile::parse(&seed(good)) {
                panic!("{good}: {e}");
            }
        }
        let refused = dockerfile::parse(&seed("refused"));
        assert_eq!(refused.map_err(|e| e.line()), Err(2));
        assert!(ignore::Ignore::parse(&seed("dockerignore")).is_ok());
        let heredocs = dockerfile::parse(&seed("heredocs")).map(|d| {
            d.stages[0]
                .instructions
                .iter()
                .map(|i| format!("{}: {:?}", i.line, i.kind))
                .collect::<Vec<_>>()
        });
        eprintln!("{heredocs:#?}");
    }

    #[test]
    fn every_truncated_seed_survives_the_harness() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-seed/dockerfile");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        for entry in entries {
            let data = std::fs::read(entry.unwrap_or_else(|e| panic!("{e}")).path())
                .unwrap_or_else(|e| panic!("{e}"));
            for end in 0..=data.len() {
                fuzz_dockerfile(&data[..end]);
            }
        }
    }
}
