//! seccomp(2) SECCOMP_SET_MODE_FILTER: install a BPF filter on the calling
//! thread (and what it execs).

use std::io;

/// One BPF instruction (`struct sock_filter`), as the pure builders
/// (`run::fakeroot`) write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// Install `program` for the calling thread. The caller must have set
/// no_new_privs (an unprivileged filter requires it; cairn sets it for
/// every job anyway).
pub fn set_mode_filter(program: &[Insn]) -> io::Result<()> {
    let mut filters: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(filters.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `len` initialised sock_filter structs that
    // live until the call returns (the kernel copies the program); flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
