//! Serve a squashfs image with cairn's FUSE server, for the FUSE tests and
//! the `fuseread` benchmark.
//!
//! `fuse_serve IMAGE MOUNTPOINT [--threads N]`: mount, print `ready`, serve
//! until the mount goes away, exit 0.
//! `fuse_serve IMAGE MOUNTPOINT [--threads N] -- CMD ARGS...`: mount, run
//! CMD while serving, unmount, exit with CMD's status. Run under
//! `unshare -Urm` this is the unprivileged path: the mount happens inside a
//! fresh user + mount namespace.

use std::error::Error;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;

use cairn::mount::fuse::{self, ServeOptions};
use cairn::squashfs::reader::Archive;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("CAIRN_LOG"))
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            let mut msg = format!("fuse_serve: {e}");
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let usage = "usage: fuse_serve IMAGE MOUNTPOINT [--threads N] [-- CMD ARGS...]";
    let image = PathBuf::from(args.next().ok_or(usage)?);
    let target = PathBuf::from(args.next().ok_or(usage)?);
    let mut options = ServeOptions::default();
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--threads") => {
                let n = args.next().ok_or(usage)?;
                options.threads = n.to_str().ok_or(usage)?.parse()?;
            }
            Some("--") => {
                command.extend(args.by_ref());
            }
            _ => return Err(usage.into()),
        }
    }
    let archive = Arc::new(Archive::open(&image)?);
    let fd = fuse::open_device()?;
    fuse::mount(&target, fd.as_fd(), true)?;
    if command.is_empty() {
        println!("ready");
        std::io::stdout().flush()?;
        fuse::serve(archive, fd, options)?;
        return Ok(ExitCode::SUCCESS);
    }
    let server = std::thread::spawn(move || fuse::serve(archive, fd, options));
    let status = Command::new(&command[0]).args(&command[1..]).status();
    // Detach: the kernel ends the connection once nothing uses the mount,
    // and the server then returns.
    nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)?;
    let served = server
        .join()
        .map_err(|_| "the FUSE server thread panicked")?;
    served?;
    let status = status?;
    // wait(2) keeps 8 bits of an exit status; no code means a signal.
    let code = u8::try_from(status.code().unwrap_or(128))?;
    Ok(ExitCode::from(code))
}
