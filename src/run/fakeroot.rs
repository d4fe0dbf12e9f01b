//! `--seccomp`: a seccomp filter that makes the calls a single-uid user
//! namespace cannot honour succeed without effect (pure: it builds the BPF
//! program; `sys::seccomp` installs it).
//!
//! In a user namespace that maps one uid, `chown` to any other owner,
//! `setuid` to another user, `setgroups`, `capset` beyond what the
//! namespace holds and `mknod` of a device all fail, and package managers
//! (dpkg, apt's sandbox user, rpm) stop on the first failure. This filter
//! answers them 0 instead: the file keeps its owner, the process its ids,
//! and the device is not made (what Charliecloud's `ch-run --seccomp`
//! does; this program is our own). FIFOs, sockets and regular files made
//! by `mknod` stay real: only `S_IFCHR` and `S_IFBLK` modes are faked.
//!
//! The filter checks the architecture the kernel reports for each call, so
//! a 32-bit x86 program in an x86-64 image (or in a job started from one)
//! gets its own numbers faked, not someone else's calls; x32 calls (x86-64
//! numbers with bit 30 set) are matched with the bit cleared. A call from
//! an architecture without a table here passes through untouched: it
//! fails as it would without the filter, it is never killed.

pub use crate::sys::seccomp::Insn;

// BPF opcodes (linux/bpf_common.h), class | size/op | mode/source; BPF_LD,
// BPF_W and BPF_K are 0.
const BPF_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_RET: u16 = 0x06;
const BPF_LD_W_ABS: u16 = BPF_ABS;
const BPF_JEQ_K: u16 = BPF_JMP | BPF_JEQ;
const BPF_AND_K: u16 = BPF_ALU | BPF_AND;
const BPF_RET_K: u16 = BPF_RET;

// seccomp return values (linux/seccomp.h).
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO` with errno 0: the call "returns 0" and does nothing.
const SECCOMP_RET_FAKE_SUCCESS: u32 = 0x0005_0000;

// Offsets in `struct seccomp_data`: nr, arch, ip, then args[6] as u64
// (the low 32 bits first on the little-endian machines tabled here).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

const S_IFMT: u32 = 0o170_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;

/// `AUDIT_ARCH_*` (linux/audit.h).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
pub const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
pub const AUDIT_ARCH_RISCV64: u32 = 0xC000_00F3;

/// The x32 ABI's marker on x86-64 syscall numbers.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The calls of one architecture that are answered 0 whatever their
/// arguments, and its mknod-like calls with the index of their mode
/// argument.
#[derive(Debug, Clone, Copy)]
pub struct ArchTable {
    pub arch: u32,
    pub name: &'static str,
    /// (name, number): the names are checked against the kernel headers
    /// in the tests.
    pub faked: &'static [(&'static str, u32)],
    pub mknod: &'static [(&'static str, u32, u32)],
}

/// x86-64 (and x32, with its bit cleared).
const X86_64: ArchTable = ArchTable {
    arch: AUDIT_ARCH_X86_64,
    name: "x86_64",
    faked: &[
        ("chown", 92),
        ("fchown", 93),
        ("lchown", 94),
        ("fchownat", 260),
        ("setuid", 105),
        ("setgid", 106),
        ("setreuid", 113),
        ("setregid", 114),
        ("setgroups", 116),
        ("setresuid", 117),
        ("setresgid", 119),
        ("setfsuid", 122),
        ("setfsgid", 123),
        ("capset", 126),
    ],
    mknod: &[("mknod", 133, 1), ("mknodat", 259, 2)],
};

/// 32-bit x86: the 16-bit-id calls and their `32` successors.
const I386: ArchTable = ArchTable {
    arch: AUDIT_ARCH_I386,
    name: "i386",
    faked: &[
        ("lchown", 16),
        ("setuid", 23),
        ("setgid", 46),
        ("setreuid", 70),
        ("setregid", 71),
        ("setgroups", 81),
        ("fchown", 95),
        ("setfsuid", 138),
        ("setfsgid", 139),
        ("setresuid", 164),
        ("setresgid", 170),
        ("chown", 182),
        ("capset", 185),
        ("lchown32", 198),
        ("setreuid32", 203),
        ("setregid32", 204),
        ("setgroups32", 206),
        ("fchown32", 207),
        ("setresuid32", 208),
        ("setresgid32", 210),
        ("chown32", 212),
        ("setuid32", 213),
        ("setgid32", 214),
        ("setfsuid32", 215),
        ("setfsgid32", 216),
        ("fchownat", 298),
    ],
    mknod: &[("mknod", 14, 1), ("mknodat", 297, 2)],
};

/// The generic table (asm-generic/unistd.h) of arm64 and riscv64: no
/// chown, lchown or mknod, only their `at` forms.
const GENERIC_FAKED: &[(&str, u32)] = &[
    ("fchownat", 54),
    ("fchown", 55),
    ("capset", 91),
    ("setregid", 143),
    ("setgid", 144),
    ("setreuid", 145),
    ("setuid", 146),
    ("setresuid", 147),
    ("setresgid", 149),
    ("setfsuid", 151),
    ("setfsgid", 152),
    ("setgroups", 159),
];
const GENERIC_MKNOD: &[(&str, u32, u32)] = &[("mknodat", 33, 2)];

const AARCH64: ArchTable = ArchTable {
    arch: AUDIT_ARCH_AARCH64,
    name: "aarch64",
    faked: GENERIC_FAKED,
    mknod: GENERIC_MKNOD,
};

const RISCV64: ArchTable = ArchTable {
    arch: AUDIT_ARCH_RISCV64,
    name: "riscv64",
    faked: GENERIC_FAKED,
    mknod: GENERIC_MKNOD,
};

/// Every architecture the filter knows.
pub const TABLES: &[ArchTable] = &[X86_64, I386, AARCH64, RISCV64];

/// Why a program could not be built (a table too large for BPF's 8-bit
/// jumps: a bug here, reported rather than mis-jumping).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the seccomp filter for {arch} does not fit BPF's jump range")]
pub struct TooLong {
    arch: &'static str,
}

fn jump(to: usize, from: usize, arch: &'static str) -> Result<u8, TooLong> {
    // A jump counts the instructions skipped after the one jumping.
    to.checked_sub(from + 1)
        .and_then(|d| u8::try_from(d).ok())
        .ok_or(TooLong { arch })
}

/// One architecture's block: load the number, fake the calls of the
/// table, fake device mknods, allow the rest.
fn arch_block(t: &ArchTable) -> Result<Vec<Insn>, TooLong> {
    let mut p = Vec::new();
    p.push(Insn {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: OFF_NR,
    });
    if t.arch == AUDIT_ARCH_X86_64 {
        p.push(Insn {
            code: BPF_AND_K,
            jt: 0,
            jf: 0,
            k: !X32_SYSCALL_BIT,
        });
    }
    // Layout: [ld nr][and]? [jeq faked..] [jeq mknod..] [ret allow]
    // [ret fake] [per mknod: ld mode, and S_IFMT, jeq chr, jeq blk,
    // ret allow, ret fake] (BPF jumps only forward).
    let first = p.len();
    let n_faked = t.faked.len();
    let n_mknod = t.mknod.len();
    let allow_at = first + n_faked + n_mknod;
    let fake_at = allow_at + 1;
    let mknod_block = |i: usize| fake_at + 1 + i * 6;
    for (i, (_, nr)) in t.faked.iter().enumerate() {
        let at = first + i;
        p.push(Insn {
            code: BPF_JEQ_K,
            jt: jump(fake_at, at, t.name)?,
            jf: 0,
            k: *nr,
        });
    }
    for (i, (_, nr, _)) in t.mknod.iter().enumerate() {
        let at = first + n_faked + i;
        p.push(Insn {
            code: BPF_JEQ_K,
            jt: jump(mknod_block(i), at, t.name)?,
            jf: 0,
            k: *nr,
        });
    }
    p.push(ret(SECCOMP_RET_ALLOW));
    p.push(ret(SECCOMP_RET_FAKE_SUCCESS));
    for (i, (_, _, mode_arg)) in t.mknod.iter().enumerate() {
        let at = mknod_block(i);
        p.push(Insn {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: off_arg(*mode_arg),
        });
        p.push(Insn {
            code: BPF_AND_K,
            jt: 0,
            jf: 0,
            k: S_IFMT,
        });
        p.push(Insn {
            code: BPF_JEQ_K,
            jt: jump(at + 5, at + 2, t.name)?,
            jf: 0,
            k: S_IFCHR,
        });
        p.push(Insn {
            code: BPF_JEQ_K,
            jt: jump(at + 5, at + 3, t.name)?,
            jf: 0,
            k: S_IFBLK,
        });
        p.push(ret(SECCOMP_RET_ALLOW));
        p.push(ret(SECCOMP_RET_FAKE_SUCCESS));
    }
    Ok(p)
}

fn ret(k: u32) -> Insn {
    Insn {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The whole program: dispatch on the architecture, then its block.
pub fn program() -> Result<Vec<Insn>, TooLong> {
    let blocks = TABLES
        .iter()
        .map(arch_block)
        .collect::<Result<Vec<_>, _>>()?;
    let mut p = vec![Insn {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: OFF_ARCH,
    }];
    // [ld arch][jeq arch_i -> block_i ...][ret allow][block_0][block_1]...
    let dispatch_end = 1 + TABLES.len();
    let mut start = dispatch_end + 1;
    for (i, (t, b)) in TABLES.iter().zip(&blocks).enumerate() {
        let at = 1 + i;
        p.push(Insn {
            code: BPF_JEQ_K,
            jt: jump(start, at, t.name)?,
            jf: 0,
            k: t.arch,
        });
        start += b.len();
    }
    p.push(ret(SECCOMP_RET_ALLOW));
    for b in blocks {
        p.extend(b);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `program` on one call, as the kernel would (only the opcodes
    /// this module emits); `None` when a jump leaves the program.
    fn evaluate(program: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> Option<u32> {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0usize;
        while let Some(insn) = program.get(pc) {
            match insn.code {
                BPF_LD_W_ABS => {
                    let at = usize::try_from(insn.k).ok()?;
                    acc = u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?);
                    pc += 1;
                }
                BPF_AND_K => {
                    acc &= insn.k;
                    pc += 1;
                }
                BPF_JEQ_K => {
                    let skip = if acc == insn.k { insn.jt } else { insn.jf };
                    pc += 1 + usize::from(skip);
                }
                BPF_RET_K => return Some(insn.k),
                _ => return None,
            }
        }
        None
    }

    /// The results [`evaluate`] gives, by name.
    const ALLOW: u32 = SECCOMP_RET_ALLOW;
    const FAKE: u32 = SECCOMP_RET_FAKE_SUCCESS;

    fn header_numbers(path: &str) -> Option<std::collections::HashMap<String, u32>> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut map = std::collections::HashMap::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("#define") {
                continue;
            }
            let (Some(name), Some(value)) = (w.next(), w.next()) else {
                continue;
            };
            if let (Some(n), Ok(v)) = (name.strip_prefix("__NR_"), value.parse::<u32>()) {
                map.insert(n.to_owned(), v);
            }
        }
        Some(map)
    }

    /// The tables against the kernel's own headers (linux-libc-dev), where
    /// this machine has them.
    #[test]
    fn tables_match_the_kernel_headers() {
        let dir = "/usr/include/x86_64-linux-gnu/asm";
        let checks = [
            (format!("{dir}/unistd_64.h"), &X86_64),
            (format!("{dir}/unistd_32.h"), &I386),
            ("/usr/include/asm-generic/unistd.h".to_owned(), &AARCH64),
        ];
        let mut checked = 0;
        for (path, table) in checks {
            let Some(numbers) = header_numbers(&path) else {
                continue;
            };
            for (name, nr) in table.faked {
                assert_eq!(numbers.get(*name), Some(nr), "{} {name}", table.name);
                checked += 1;
            }
            for (name, nr, _) in table.mknod {
                assert_eq!(numbers.get(*name), Some(nr), "{} {name}", table.name);
                checked += 1;
            }
        }
        if std::env::var_os("CAIRN_MUST_WORK").is_some() {
            assert!(checked > 0, "no kernel headers to check the tables against");
        }
    }

    #[test]
    fn opcodes_are_the_kernels() {
        // (The x86 architecture values are proven by run_seccomp's real
        // 64- and 32-bit programs.)
        assert_eq!(
            u32::from(BPF_LD_W_ABS),
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS
        );
        assert_eq!(
            u32::from(BPF_JEQ_K),
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K
        );
        assert_eq!(
            u32::from(BPF_AND_K),
            libc::BPF_ALU | libc::BPF_AND | libc::BPF_K
        );
        assert_eq!(u32::from(BPF_RET_K), libc::BPF_RET | libc::BPF_K);
        assert_eq!(SECCOMP_RET_ALLOW, libc::SECCOMP_RET_ALLOW);
        assert_eq!(SECCOMP_RET_FAKE_SUCCESS, libc::SECCOMP_RET_ERRNO);
    }

    #[test]
    fn the_program_fakes_what_it_should_and_nothing_else() {
        let p = program().expect("program");
        assert!(p.len() < 4096, "BPF_MAXINSNS");
        for t in TABLES {
            for (name, nr) in t.faked {
                assert_eq!(
                    evaluate(&p, t.arch, *nr, [0; 6]),
                    Some(FAKE),
                    "{} {name}",
                    t.name
                );
            }
            for (name, nr, mode_arg) in t.mknod {
                let mut args = [0u64; 6];
                for (mode, want) in [
                    (S_IFCHR | 0o600, FAKE),
                    (S_IFBLK | 0o600, FAKE),
                    (0o010_000 | 0o600, ALLOW), // FIFO
                    (0o100_000 | 0o600, ALLOW), // regular
                    (0o140_000 | 0o600, ALLOW), // socket
                ] {
                    args[*mode_arg as usize] = u64::from(mode);
                    assert_eq!(
                        evaluate(&p, t.arch, *nr, args),
                        Some(want),
                        "{} {name} {mode:o}",
                        t.name
                    );
                }
            }
            // Other calls pass: read, write, openat, execve of each table's
            // numbering are not in it.
            for nr in 0..400u32 {
                let faked = t.faked.iter().any(|(_, n)| *n == nr)
                    || t.mknod.iter().any(|(_, n, _)| *n == nr);
                if !faked {
                    assert_eq!(
                        evaluate(&p, t.arch, nr, [0; 6]),
                        Some(ALLOW),
                        "{} nr {nr}",
                        t.name
                    );
                }
            }
        }
        // x32: x86-64 numbers with bit 30.
        assert_eq!(
            evaluate(&p, AUDIT_ARCH_X86_64, 92 | X32_SYSCALL_BIT, [0; 6]),
            Some(FAKE)
        );
        // An architecture without a table: everything passes.
        assert_eq!(evaluate(&p, 0x4000_0028, 182, [0; 6]), Some(ALLOW));
        // i386's chown number is x86-64's "getrusage"-range neighbour:
        // the arch check keeps them apart.
        assert_eq!(evaluate(&p, AUDIT_ARCH_X86_64, 182, [0; 6]), Some(ALLOW));
    }
}
