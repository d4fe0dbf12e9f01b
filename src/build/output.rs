//! Where a RUN's output goes.
//!
//! `cairn build` prints the image's digest on stdout, so that
//! `digest=$(cairn build ...)` is the digest alone: a RUN's stdout goes to
//! the build's stderr, with its stderr, as BuildKit's progress does.
//!
//! When the stages a target needs are built side by side, the RUNs of two
//! stages write at once; each line then goes out with its stage's prefix
//! (`[stage 1] ...`, as the step lines have), written whole, so lines of
//! two stages never cut into each other. A single stage keeps the build's
//! stderr itself, unprefixed, so a RUN's own terminal handling (progress
//! bars on a tty) is as under `cairn run`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A line longer than this goes out in pieces: output without newlines
/// (a progress counter) still shows, and memory stays bounded.
const MAX_LINE: usize = 64 * 1024;

/// After the RUN's process exits, how long its output may still take to
/// drain before the build goes on. The RUN's own processes end with it
/// (its PID namespace), so the pipe closes at once; the bound is for
/// anything else that may hold the pipe, which the build must not wait
/// for.
const DRAIN: Duration = Duration::from_secs(2);

/// A RUN's output relayed with a prefix, between `attach` and `finish`.
#[derive(Debug)]
pub(super) struct Relay {
    reader: Option<(File, String)>,
    done: Option<mpsc::Receiver<()>>,
}

/// Points `cmd`'s stdout and stderr where a RUN's output goes (see the
/// module's summary): to the build's stderr, through a prefixing relay
/// when `prefix` is given. Call [`Relay::start`] once the command is
/// spawned and dropped (the command holds the pipe's writing end).
pub(super) fn attach(cmd: &mut Command, prefix: Option<String>) -> io::Result<Relay> {
    let Some(prefix) = prefix else {
        let stderr = io::stderr().as_fd().try_clone_to_owned()?;
        cmd.stdout(Stdio::from(stderr));
        return Ok(Relay {
            reader: None,
            done: None,
        });
    };
    let (reader, writer) = pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    Ok(Relay {
        reader: Some((File::from(reader), prefix)),
        done: None,
    })
}

impl Relay {
    /// Starts relaying: a thread copies lines until the pipe's last writer
    /// closes it. A thread that cannot be made leaves the output unread:
    /// the RUN may then block on a full pipe, so it is given up (the
    /// reading end closed: the RUN's writes fail with EPIPE instead).
    pub(super) fn start(&mut self) {
        let Some((reader, prefix)) = self.reader.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("run-output".into())
            .spawn(move || {
                relay_lines(reader, &prefix, &mut to_stderr);
                let _ = tx.send(());
            });
        if started.is_ok() {
            self.done = Some(rx);
        }
    }

    /// Waits, a short while at most (see [`DRAIN`]), for the output of a
    /// RUN whose process has exited.
    pub(super) fn finish(self) {
        if let Some(done) = self.done {
            let _ = done.recv_timeout(DRAIN);
        }
    }
}

/// A pipe, both ends close-on-exec (the RUN gets its end through
/// `Stdio`, which dups it onto 1 and 2).
fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

/// Copies `reader`'s lines to `write`, each with `prefix` and a newline,
/// until the end of `reader` or an error reading it.
fn relay_lines(reader: impl Read, prefix: &str, write: &mut dyn FnMut(&[u8])) {
    let mut reader = BufReader::new(reader);
    let mut line = prefix.as_bytes().to_vec();
    loop {
        line.truncate(prefix.len());
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        write(&line);
    }
}

/// One write per line under stderr's lock: lines of RUNs running at once
/// never cut into each other.
fn to_stderr(line: &[u8]) {
    let _ = io::stderr().lock().write_all(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_out_whole_with_the_prefix_and_long_ones_in_pieces() {
        let (reader, writer) = pipe().expect("pipe");
        let mut writer = File::from(writer);
        let long = vec![b'x'; MAX_LINE + 10];
        let feeder = std::thread::spawn(move || {
            writer.write_all(b"one\n\ntwo\n").expect("write");
            writer.write_all(&long).expect("write");
        });
        let mut lines: Vec<Vec<u8>> = Vec::new();
        relay_lines(File::from(reader), "[stage 1] ", &mut |l| {
            lines.push(l.to_vec())
        });
        feeder.join().expect("feeder");
        let short: Vec<&[u8]> = lines[..3].iter().map(Vec::as_slice).collect();
        assert_eq!(
            short,
            [&b"[stage 1] one\n"[..], b"[stage 1] \n", b"[stage 1] two\n"]
        );
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[3].len(), 10 + MAX_LINE + 1);
        assert_eq!(lines[4], b"[stage 1] xxxxxxxxxx\n");
    }
}
