//! The binary's entry point, in place of the Rust runtime's start. `main.rs`
//! is `#![no_main]` and includes this file (it is part of the binary crate,
//! not of the library: a `main` symbol in the library would also be linked
//! into every test binary beside the test harness's own).
//!
//! Why: `cairn run` is started thousands of times in a row (parameter
//! sweeps, job steps, a benchmark's repetitions), and a warm run's whole
//! setup is well under a millisecond. The runtime's start set up a guard for
//! the main thread's stack: glibc's `pthread_getattr_np` reads and parses
//! `/proc/self/maps` (some 40 lines for cairn, formatted by the kernel on
//! each read), then a signal stack and SIGSEGV/SIGBUS handlers. What of the
//! runtime's start cairn relies on is done here instead:
//! - file descriptors 0, 1 and 2 that are closed are opened on /dev/null, so
//!   that no file cairn opens later becomes its stdout;
//! - SIGPIPE is ignored: a write to a closed pipe is an error cairn reports,
//!   not its death (the job gets the default back before exec);
//! - a panic ends the process with status 101 after its message;
//! - stdout is flushed at exit (`std::process::exit` does that).
//!
//! What is lost: a stack overflow is a plain SIGSEGV instead of a message,
//! and a panic names the thread `<unnamed>` instead of `main`. Arguments
//! still work: on glibc, std takes argv from an `.init_array` entry.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int};

/// The C entry point, called by glibc's `__libc_start_main`.
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    open_closed_std_fds();
    // SAFETY: signal(2) with SIG_IGN installs no handler: no code of ours
    // runs in signal context, and only this thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // The panic hook has printed the message; 101 is Rust's status for a
    // panic that ends `main`.
    let status = std::panic::catch_unwind(crate::cairn_main).unwrap_or(101);
    std::process::exit(status)
}

/// Open /dev/null on each of fds 0-2 that is closed (one poll(2) finds
/// them), as the runtime's start does.
fn open_closed_std_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of three pollfd for the whole call;
    // a zero timeout returns at once.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if ready <= 0 {
        return;
    }
    for pfd in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
        // SAFETY: open(2) of a NUL-terminated literal. Descriptors are
        // allocated lowest first, so a closed 0, 1 or 2 is the one taken,
        // and it stays open for the life of the process (not an OwnedFd).
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd != pfd.fd {
            // /dev/null missing, or a lower descriptor was free: the
            // runtime's start aborts here, since a later open could
            // become the missing stdout.
            std::process::abort();
        }
    }
}
