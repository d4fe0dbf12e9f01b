//! The `cairn` binary: parse the arguments, call the library, map the outcome
//! to the exit codes of DESIGN.md (the job's status, 125 for cairn's own
//! failures, 126/127 when the command cannot be executed or found).
//!
//! No Rust runtime start: the process starts in `sys/entry.rs` (why is
//! there), which calls [`cairn_main`]. A test build keeps the harness's.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[path = "sys/entry.rs"]
mod entry;

/// The whole of cairn; the status to exit with.
#[cfg_attr(test, allow(dead_code))]
fn cairn_main() -> i32 {
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
