//! The `cairn` binary: parse the arguments, call the library, map the outcome
//! to the exit codes of DESIGN.md (the job's status, 125 for cairn's own
//! failures, 126/127 when the command cannot be executed or found).
//!
//! No Rust runtime start on glibc: the process starts in `sys/entry.rs`
//! (why is there), which calls [`cairn_main`]. Elsewhere (musl: std takes
//! argv only from its own start) and in a test build, an ordinary `main`.
#![cfg_attr(all(not(test), target_env = "gnu"), no_main)]

#[cfg(all(not(test), target_env = "gnu"))]
#[path = "sys/entry.rs"]
mod entry;

#[cfg(not(all(not(test), target_env = "gnu")))]
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(cairn_main()).unwrap_or(u8::MAX))
}

/// The whole of cairn; the status to exit with.
fn cairn_main() -> i32 {
    // A warm mount's anchor is this binary exec'd again (see sys::anchor);
    // it never returns from here.
    cairn::sys::anchor::serve_if_anchor(std::env::args_os().next().as_deref());
    let cli = match cairn::cli::Cli::try_parse_from_ordered(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            // clap exits 2 on a bad option; our contract says 125 for every
            // cairn error, but --help and --version are successes.
            let code = if err.use_stderr() {
                cairn::cli::EXIT_CAIRN_FAILED
            } else {
                0
            };
            let _ = err.print();
            return exit_status(code);
        }
    };
    cairn::cli::init_logging(cli.verbose);
    match cairn::cli::execute(cli) {
        Ok(status) => exit_status(status),
        Err(err) => {
            eprintln!("cairn: {err:#}");
            exit_status(cairn::cli::exit_code_of(&err))
        }
    }
}

/// A status outside 0..=255 (a signal's 128+n is inside) exits 255.
fn exit_status(status: i32) -> i32 {
    i32::from(u8::try_from(status).unwrap_or(u8::MAX))
}
