//! Read benchmark driver for bench/suites/reader.sh: the same access pattern
//! through cairn's reader (library API) or through a mounted copy of the
//! image (squashfuse_ll, the kernel), so the figures compare like for like.
//!
//! ```text
//! readbench seq IMAGE [--dir MNT]              read every file start to end;
//!                                               prints bytes read
//! readbench random IMAGE COUNT [--dir MNT]     COUNT random aligned 4 KiB reads
//!                                               over up to 256 pre-opened files;
//!                                               prints mean microseconds per read
//! ```
//! The file list always comes from the image (sorted, seeded choice), so
//! both sides read exactly the same bytes.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn::squashfs::reader::{Archive, Node, ReadError, WalkEvent, WalkLimits};

fn files(a: &Archive) -> Result<Vec<(Vec<u8>, Node)>, ReadError> {
    let mut out = Vec::new();
    a.walk(WalkLimits::default(), |e| -> Result<(), ReadError> {
        if let WalkEvent::Leaf { path, node, .. } = e
            && node.is_file()
        {
            out.push((path.to_vec(), node.clone()));
        }
        Ok(())
    })?;
    Ok(out)
}

enum Target {
    Reader,
    Dir(PathBuf),
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: readbench seq IMAGE [--dir MNT] | readbench random IMAGE COUNT [--dir MNT]";
    let mode = args.get(1).ok_or(usage)?;
    let image = Path::new(args.get(2).ok_or(usage)?);
    let target = match args.iter().position(|a| a == "--dir") {
        Some(i) => Target::Dir(PathBuf::from(args.get(i + 1).ok_or(usage)?)),
        None => Target::Reader,
    };
    let a = Archive::open(image)?;
    let list = files(&a)?;
    match mode.as_str() {
        "seq" => {
            let mut buf = vec![0u8; 128 * 1024];
            let mut total = 0u64;
            for (path, node) in &list {
                match &target {
                    Target::Reader => {
                        let mut off = 0u64;
                        loop {
                            let n = a.read_at(node, off, &mut buf)?;
                            if n == 0 {
                                break;
                            }
                            off += n as u64;
                        }
                        total += off;
                    }
                    Target::Dir(d) => {
                        let f = File::open(d.join(std::ffi::OsStr::from_bytes(path)))?;
                        let mut off = 0u64;
                        loop {
                            let n = f.read_at(&mut buf, off)?;
                            if n == 0 {
                                break;
                            }
                            off += n as u64;
                        }
                        total += off;
                    }
                }
            }
            println!("{total}");
        }
        "random" => {
            let count: u64 = args.get(3).ok_or(usage)?.parse()?;
            let mut big: Vec<_> = list
                .iter()
                .filter(|(_, n)| a.stat(n).size >= 8192)
                .collect();
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut rand = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            // A seeded choice of 256 files, so both sides use the same ones.
            let mut chosen = Vec::new();
            while chosen.len() < 256 && !big.is_empty() {
                let i = usize::try_from(rand() % big.len() as u64)?;
                chosen.push(big.swap_remove(i));
            }
            if chosen.is_empty() {
                return Err("no file of 8 KiB or more in the image".into());
            }
            let opened: Vec<Option<File>> = match &target {
                Target::Reader => chosen.iter().map(|_| None).collect(),
                Target::Dir(d) => chosen
                    .iter()
                    .map(|(p, _)| File::open(d.join(std::ffi::OsStr::from_bytes(p))).map(Some))
                    .collect::<Result<_, _>>()?,
            };
            let mut buf = [0u8; 4096];
            let start = Instant::now();
            for _ in 0..count {
                let i = usize::try_from(rand() % chosen.len() as u64)?;
                let node = &chosen[i].1;
                let blocks = a.stat(node).size / 4096;
                let off = (rand() % blocks) * 4096;
                let n = match &opened[i] {
                    Some(f) => f.read_at(&mut buf, off)?,
                    None => a.read_at(node, off, &mut buf)?,
                };
                if n == 0 {
                    return Err("short read".into());
                }
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / count as f64;
            println!("{us:.3}");
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
