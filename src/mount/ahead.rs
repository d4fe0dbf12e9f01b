//! Tree read-ahead for the FUSE server: when a job reads files one after
//! another in tree order (each directory's entries in listing order,
//! descending into subdirectories where they come: `find -exec cat {} +`,
//! `tar`, `cp -r`, `cat dir/*`), the files it will read next are pushed
//! into the kernel's page cache before it opens them, so that each small
//! file costs the job no round trip through the server.
//!
//! The kernel's own read-ahead works within one file: a file of a few
//! KiB still costs a READ request, and the job sleeps until the server's
//! reply wakes it. With thousands of small files that sleep is most of the
//! time, on a machine whose other core sits idle.
//!
//! This is the kernel's read-ahead moved up a level, with the same shape:
//! a stream starts when two files are read in tree order; a window of the
//! following files is pushed; one file in the middle of the window is left
//! out (the *marker*: its READ is the only sign the job got that far, since
//! the pushed files are read without asking the server) and, when it
//! comes, the next window, twice as big, follows. Reads in any other order
//! (a python import, a program's libraries) start nothing. A few streams
//! are followed at once, for jobs that read several trees side by side.
//!
//! Pure: the FUSE server ([`super::fuse`]) shows the image through
//! [`Tree`], tells [`Streams`] about first reads and pushes what it
//! answers.

use std::collections::HashSet;
use std::hash::Hash;

/// The first window: a job that read two files in order may stop there.
const FIRST_WINDOW: Window = Window {
    bytes: 256 << 10,
    files: 8,
};

/// The largest window: enough to keep the pushing thread a few
/// milliseconds ahead of a reader, little enough that a reader who stops
/// leaves little unread in memory.
const MAX_WINDOW: Window = Window {
    bytes: 8 << 20,
    files: 256,
};

/// How much of a file read in a stream is pushed past its first read: a
/// big file stops a window and is read by request, 128 KiB at a time.
pub const REST_OF_FILE: u64 = MAX_WINDOW.bytes;

/// Streams followed at once; a read that continues none replaces the one
/// least recently continued.
const MAX_STREAMS: usize = 4;

/// Entries looked at to find the next file: a tree of empty directories
/// or links ends the walk rather than a worker's time.
const MAX_STEPS: usize = 4096;

/// A file's place: its directory and its index in the listing.
pub type Pos<D> = (D, usize);

/// What a listing entry is, as far as reading files in order goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<D> {
    /// A regular file of this many bytes.
    File(u64),
    /// A directory, walked into where it comes.
    Dir(D),
    /// Anything else (links, devices): stepped over.
    Other,
}

/// The image as the read-ahead walks it.
pub trait Tree {
    type Dir: Copy + Eq + Hash;
    /// Entries in `dir`'s listing (0 when it cannot be read).
    fn len(&self, dir: Self::Dir) -> usize;
    fn entry(&self, dir: Self::Dir, index: usize) -> Entry<Self::Dir>;
    /// The directory holding `dir` and `dir`'s index there; `None` at the
    /// top (or where the server does not know it).
    fn parent(&self, dir: Self::Dir) -> Option<Pos<Self::Dir>>;
}

/// The files after `pos` in tree order, with their sizes.
fn files_after<T: Tree>(tree: &T, pos: Pos<T::Dir>) -> impl Iterator<Item = (Pos<T::Dir>, u64)> {
    // Directories walked into on the way, to come back out of without
    // asking the tree.
    let mut down: Vec<Pos<T::Dir>> = Vec::new();
    let (mut dir, mut k) = (pos.0, pos.1 + 1);
    std::iter::from_fn(move || {
        for _ in 0..MAX_STEPS {
            if k < tree.len(dir) {
                match tree.entry(dir, k) {
                    Entry::File(size) => {
                        k += 1;
                        return Some(((dir, k - 1), size));
                    }
                    Entry::Dir(sub) => {
                        down.push((dir, k));
                        (dir, k) = (sub, 0);
                    }
                    Entry::Other => k += 1,
                }
            } else {
                let (up, at) = down.pop().or_else(|| tree.parent(dir))?;
                (dir, k) = (up, at + 1);
            }
        }
        None
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    bytes: u64,
    files: usize,
}

impl Window {
    fn doubled(self) -> Self {
        Self {
            bytes: (self.bytes * 2).min(MAX_WINDOW.bytes),
            files: (self.files * 2).min(MAX_WINDOW.files),
        }
    }
}

/// One reader's progress through the tree.
#[derive(Debug, Clone)]
struct Stream<D> {
    /// The last file whose first read reached the server.
    last: Pos<D>,
    /// The file left out of the pushed window, while one is in flight.
    marker: Option<Pos<D>>,
    /// The first file past the pushed window (`None` past the end).
    resume: Option<Pos<D>>,
    /// The files of the window in flight.
    pushed: HashSet<Pos<D>>,
    window: Window,
    /// When it was last continued ([`Streams::tick`]).
    used: u64,
}

/// What a first read continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<D> {
    /// Nothing: the reads are not a stream.
    Alone,
    /// A stream: push these files, in order (none when the window is
    /// still in flight).
    Stream(Vec<Pos<D>>),
}

/// The read streams of a mount's jobs.
#[derive(Debug)]
pub struct Streams<D> {
    streams: Vec<Stream<D>>,
    tick: u64,
}

impl<D: Eq + Hash + Copy> Default for Streams<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Eq + Hash + Copy> Streams<D> {
    pub fn new() -> Self {
        Self {
            streams: Vec::new(),
            tick: 0,
        }
    }

    /// The first read of the file at `pos`: what it continues, and the
    /// files to push now.
    pub fn first_read<T: Tree<Dir = D>>(&mut self, tree: &T, pos: Pos<D>) -> Plan<D> {
        self.tick += 1;
        let found = self.streams.iter().position(|s| {
            s.marker == Some(pos)
                || s.resume == Some(pos)
                || s.pushed.contains(&pos)
                || files_after(tree, s.last).next().map(|(p, _)| p) == Some(pos)
        });
        let Some(found) = found else {
            if self.streams.len() >= MAX_STREAMS
                && let Some(lru) = (0..self.streams.len()).min_by_key(|&i| self.streams[i].used)
            {
                self.streams.swap_remove(lru);
            }
            self.streams.push(Stream {
                last: pos,
                marker: None,
                resume: None,
                pushed: HashSet::new(),
                window: FIRST_WINDOW,
                used: self.tick,
            });
            return Plan::Alone;
        };
        let s = &mut self.streams[found];
        s.used = self.tick;
        s.last = pos;
        let hit_marker = s.marker == Some(pos);
        if !hit_marker && s.resume != Some(pos) && s.pushed.contains(&pos) {
            // The job overtook the pushing thread inside the window: its
            // read came as a request; the window goes on.
            return Plan::Stream(Vec::new());
        }
        s.window = if hit_marker {
            s.window.doubled()
        } else {
            FIRST_WINDOW
        };
        // After a marker, the window goes on where the last one ended.
        let from = match (hit_marker, s.resume) {
            (true, Some(resume)) if resume != pos => resume,
            // The window went to the end of the tree.
            (true, None) => {
                s.marker = None;
                return Plan::Stream(Vec::new());
            }
            _ => pos,
        };
        let resumed = (from != pos).then(|| match tree.entry(from.0, from.1) {
            Entry::File(size) => (from, size),
            _ => (from, u64::MAX),
        });
        let mut next = resumed
            .into_iter()
            .chain(files_after(tree, from))
            .peekable();
        let (mut files, mut bytes) = (Vec::new(), 0);
        s.resume = loop {
            match next.peek() {
                Some(&(p, size))
                    if files.len() < s.window.files && size <= s.window.bytes - bytes =>
                {
                    bytes += size;
                    files.push(p);
                    next.next();
                }
                // Past the window, or a file too big for what is left of
                // it: read by request, its first read carries the stream on.
                other => break other.map(|&(p, _)| p),
            }
        };
        s.marker = (files.len() >= 2).then(|| files.remove(files.len() / 2));
        s.pushed = files.iter().copied().collect();
        Plan::Stream(files)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A directory's entries and where it hangs.
    type FakeDir = (Vec<Entry<u32>>, Option<Pos<u32>>);

    /// Directories by number.
    #[derive(Default)]
    struct Fake(HashMap<u32, FakeDir>);

    impl Fake {
        /// Directory `dir` with `n` files of `size` bytes.
        fn flat(dir: u32, n: usize, size: u64) -> Self {
            let mut t = Self::default();
            t.dir(dir, vec![Entry::File(size); n], None);
            t
        }

        fn dir(&mut self, dir: u32, entries: Vec<Entry<u32>>, parent: Option<Pos<u32>>) {
            self.0.insert(dir, (entries, parent));
        }
    }

    impl Tree for Fake {
        type Dir = u32;
        fn len(&self, dir: u32) -> usize {
            self.0.get(&dir).map_or(0, |d| d.0.len())
        }
        fn entry(&self, dir: u32, index: usize) -> Entry<u32> {
            self.0[&dir].0[index]
        }
        fn parent(&self, dir: u32) -> Option<Pos<u32>> {
            self.0.get(&dir)?.1
        }
    }

    /// The files a stream's plan pushes.
    fn pushed(plan: Plan<u32>) -> Vec<Pos<u32>> {
        match plan {
            Plan::Stream(files) => files,
            Plan::Alone => panic!("not a stream"),
        }
    }

    fn indices(plan: Plan<u32>) -> Vec<usize> {
        pushed(plan).into_iter().map(|(_, k)| k).collect()
    }

    /// The marker of a window: the one index missing inside it.
    fn marker(files: &[usize]) -> usize {
        files
            .windows(2)
            .find(|w| w[1] != w[0] + 1)
            .map(|w| w[0] + 1)
            .expect("a marker")
    }

    #[test]
    fn one_read_starts_nothing_and_the_next_file_starts_a_window() {
        let t = Fake::flat(1, 100, 1000);
        let mut s = Streams::new();
        assert_eq!(s.first_read(&t, (1, 0)), Plan::Alone);
        // 8 files after the second, the middle one left out as the marker.
        assert_eq!(indices(s.first_read(&t, (1, 1))), vec![2, 3, 4, 5, 7, 8, 9]);
    }

    #[test]
    fn the_marker_brings_the_next_window_twice_as_big() {
        let t = Fake::flat(1, 1000, 10);
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        let first = indices(s.first_read(&t, (1, 1)));
        assert_eq!(first.len(), 7);
        // Pushed files are read without asking; the marker (6) asks.
        let second = indices(s.first_read(&t, (1, marker(&first))));
        assert_eq!(second.len(), 15);
        assert_eq!(second[0], 10, "it goes on where the window ended");
        let third = indices(s.first_read(&t, (1, marker(&second))));
        assert_eq!((third.len(), third[0]), (31, 26));
    }

    #[test]
    fn the_window_never_passes_its_bytes_or_files() {
        let t = Fake::flat(1, 100_000, 10);
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        let mut plan = indices(s.first_read(&t, (1, 1)));
        for _ in 0..10 {
            plan = indices(s.first_read(&t, (1, marker(&plan))));
        }
        assert_eq!(plan.len(), MAX_WINDOW.files - 1);

        let t = Fake::flat(1, 100, 100 << 10);
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        // Two 100 KiB files fit the first 256 KiB: one pushed, one marker.
        assert_eq!(indices(s.first_read(&t, (1, 1))), vec![2]);
    }

    #[test]
    fn reads_out_of_order_start_nothing() {
        let t = Fake::flat(1, 100, 10);
        let mut s = Streams::new();
        for at in [5, 2, 9, 30, 7, 1, 3] {
            assert_eq!(s.first_read(&t, (1, at)), Plan::Alone, "{at}");
        }
    }

    #[test]
    fn the_window_walks_into_subdirectories_and_out_again() {
        let f = Entry::File(10);
        let mut t = Fake::default();
        t.dir(1, vec![f, f, Entry::Other, Entry::Dir(2), f], None);
        t.dir(2, vec![f, Entry::Dir(3), f], Some((1, 3)));
        t.dir(3, vec![], Some((2, 1)));
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        // (2, 2), the middle file, is the marker.
        assert_eq!(pushed(s.first_read(&t, (1, 1))), vec![(2, 0), (1, 4)]);
        // The window went to the end: its marker has nothing to push.
        assert_eq!(s.first_read(&t, (2, 2)), Plan::Stream(vec![]));
    }

    #[test]
    fn a_stream_started_in_a_subdirectory_goes_on_in_its_parent() {
        let f = Entry::File(10);
        let mut t = Fake::default();
        t.dir(1, vec![f, Entry::Dir(2), f, f], None);
        t.dir(2, vec![f, f], Some((1, 1)));
        let mut s = Streams::new();
        s.first_read(&t, (2, 0));
        assert_eq!(pushed(s.first_read(&t, (2, 1))), vec![(1, 2)]);
        // And the next directory's first file continues the stream.
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        assert!(!pushed(s.first_read(&t, (2, 0))).is_empty());
    }

    #[test]
    fn a_file_too_big_for_the_window_is_read_by_request_and_carries_on() {
        let mut t = Fake::flat(1, 100, 10);
        t.0.get_mut(&1).expect("directory 1").0[5] = Entry::File(1 << 30);
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        let plan = indices(s.first_read(&t, (1, 1)));
        assert_eq!(plan, vec![2, 4], "3 is the marker, 5 stops the window");
        // At the marker the big file is next: not pushed.
        assert_eq!(s.first_read(&t, (1, 3)), Plan::Stream(vec![]));
        // Its own read carries the stream on.
        assert_eq!(indices(s.first_read(&t, (1, 5)))[0], 6);
    }

    #[test]
    fn a_reader_inside_the_window_keeps_the_stream() {
        let t = Fake::flat(1, 100, 10);
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        s.first_read(&t, (1, 1));
        // The job reached 3 before it was pushed: a request, no reset.
        assert_eq!(s.first_read(&t, (1, 3)), Plan::Stream(vec![]));
        assert!(!pushed(s.first_read(&t, (1, 6))).is_empty());
    }

    #[test]
    fn readers_side_by_side_keep_their_own_streams() {
        let mut t = Fake::flat(1, 100, 10);
        t.dir(2, vec![Entry::File(10); 100], None);
        let mut s = Streams::new();
        s.first_read(&t, (1, 0));
        s.first_read(&t, (2, 50));
        assert!(!pushed(s.first_read(&t, (1, 1))).is_empty());
        assert!(!pushed(s.first_read(&t, (2, 51))).is_empty());
        // A fifth reader pushes out the one continued least recently.
        for d in 3..=6 {
            t.dir(d, vec![Entry::File(10); 10], None);
            s.first_read(&t, (d, 0));
        }
        assert_eq!(s.first_read(&t, (1, 6)), Plan::Alone);
    }
}
