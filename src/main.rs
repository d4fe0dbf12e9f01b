//! The `cairn` binary: parse the arguments, call the library, map the outcome
//! to the exit codes of DESIGN.md (the job's status, 125 for cairn's own
//! failures, 126/127 when the command cannot be executed or found).

use std::process::ExitCode;

fn main() -> ExitCode {
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
            return exit_code(code);
        }
    };
    cairn::cli::init_logging(cli.verbose);
    match cairn::cli::execute(cli) {
        Ok(status) => exit_code(status),
        Err(err) => {
            eprintln!("cairn: {err:#}");
            exit_code(cairn::cli::exit_code_of(&err))
        }
    }
}

fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX))
}
