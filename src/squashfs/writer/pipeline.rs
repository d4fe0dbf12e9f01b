//! The compression pipeline: blocks go to a pool of worker threads as
//! numbered tickets and come back in any order; the writer puts them into
//! the image strictly in ticket order. The thread that walks the tree only
//! reads and hashes: it never waits for a compression unless too many
//! tickets are in flight (that bounds memory), and no worker waits for
//! another (there is no barrier at the end of a file or of a window).
//!
//! Why not rayon: its idle workers spin (`sched_yield`) for a while before
//! they sleep, and on a 2-core node that spinning took the cycles the
//! walking thread needed; and a scope per file made every file end a
//! barrier. Here an idle worker sleeps on the job queue, and the walker
//! goes on reading while the pool works.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Compression;

/// A block's content as handed to a worker: a file block is moved in (and
/// its buffer comes back for reuse); a fragment block is shared with the
/// writer, which keeps it for duplicate compares until it is written.
pub(super) enum Input {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

/// A block ready to be written.
#[derive(Debug)]
pub(super) enum Outcome {
    /// All zero: a hole (size word 0), nothing written.
    Hole,
    Stored {
        bytes: Vec<u8>,
        raw: bool,
    },
    /// No data: the slot only marks a point in the stream (a file's end).
    Mark,
}

/// What a worker sends back for one ticket.
struct Done {
    ticket: u64,
    /// `None`: the compressor panicked (never expected; reported, not hung on).
    outcome: Option<Outcome>,
    /// The input buffer, for the next read.
    spare: Option<Vec<u8>>,
}

struct Job {
    ticket: u64,
    input: Input,
}

/// Compress one block; the input buffer comes back when the compressed
/// copy replaced it.
fn compress(comp: Compression, block_size: u32, input: Input) -> (Outcome, Option<Vec<u8>>) {
    let compressed = match &input {
        Input::Owned(data) => comp.compress(data, block_size),
        Input::Shared(data) => comp.compress(data, block_size),
    };
    match (compressed, input) {
        (Some(bytes), Input::Owned(spare)) => (Outcome::Stored { bytes, raw: false }, Some(spare)),
        (Some(bytes), Input::Shared(_)) => (Outcome::Stored { bytes, raw: false }, None),
        (None, Input::Owned(bytes)) => (Outcome::Stored { bytes, raw: true }, None),
        (None, Input::Shared(data)) => (
            Outcome::Stored {
                bytes: data.to_vec(),
                raw: true,
            },
            None,
        ),
    }
}

/// The worker threads. Dropping the pool closes the job queue and joins
/// them (each finishes at most the block it holds).
struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn start(comp: Compression, block_size: u32, threads: usize) -> std::io::Result<Pool> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let jobs = Arc::clone(&jobs_rx);
            let done = done_tx.clone();
            let worker = std::thread::Builder::new()
                .name(format!("cairn-squash-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job off the queue.
                        let job = crate::sync::lock(&jobs).recv();
                        let Ok(Job { ticket, input }) = job else {
                            return;
                        };
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            compress(comp, block_size, input)
                        }));
                        let (outcome, spare) = match result {
                            Ok((outcome, spare)) => (Some(outcome), spare),
                            Err(_) => (None, None),
                        };
                        // The writer may be gone (dropped after an error).
                        if done
                            .send(Done {
                                ticket,
                                outcome,
                                spare,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            match worker {
                Ok(handle) => workers.push(handle),
                // Fewer workers than asked still work; none does not.
                Err(e) if workers.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(Pool {
            jobs: Some(jobs_tx),
            done: done_rx,
            workers,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Who a ticket belongs to, for the writer to place it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// The next data block of the file being placed under this id.
    Block { file: u64 },
    /// The end of that file's blocks: its placement is complete.
    FileEnd { file: u64 },
    /// The next fragment block.
    Fragment,
}

#[derive(Debug)]
struct Slot {
    owner: Owner,
    /// `None` while a worker has it.
    outcome: Option<Outcome>,
    /// It went to a worker (it counts in `busy` until written).
    worked: bool,
}

/// Why the pipeline cannot go on.
#[derive(Debug)]
pub(super) enum PipelineError {
    /// Every worker is gone, or one panicked on a block.
    WorkerLost,
}

/// The tickets in flight, oldest first, and the pool working on them.
#[derive(Debug)]
pub(super) struct Pipeline {
    pool: Pool,
    slots: VecDeque<Slot>,
    /// Ticket number of `slots[0]`.
    front: u64,
    /// Submitted blocks not yet written (holes and marks hold no data and
    /// do not count).
    busy: usize,
    /// Blocks in flight, at most (then `submit` waits): bounds memory.
    limit: usize,
    /// Block buffers for the next reads, full length (their old bytes
    /// are overwritten by the read: no zeroing per block).
    spare: Vec<Vec<u8>>,
    block_size: usize,
}

/// How many threads compress: one per CPU this process may run on (a job
/// step's CPU set, not the node's).
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Data blocks in flight, at most: 8 MiB of them, or 8 per worker if that
/// is more. 16, 64 and 512 blocks of 128 KiB gave the same wall time on a
/// mixed tree (measured); more only costs memory and page faults.
const IN_FLIGHT_BYTES: usize = 8 << 20;

fn in_flight_limit(threads: usize, block_size: u32) -> usize {
    let blocks = IN_FLIGHT_BYTES / (block_size as usize).max(1);
    blocks.max(threads * 8)
}

impl Pipeline {
    pub(super) fn start(comp: Compression, block_size: u32) -> std::io::Result<Pipeline> {
        let threads = workers();
        let pool = Pool::start(comp, block_size, threads)?;
        Ok(Pipeline {
            pool,
            slots: VecDeque::new(),
            front: 0,
            busy: 0,
            limit: in_flight_limit(threads, block_size),
            spare: Vec::new(),
            block_size: block_size as usize,
        })
    }

    pub(super) fn is_full(&self) -> bool {
        self.busy >= self.limit
    }

    /// The ticket the next `push` or `submit` gets.
    pub(super) fn next_ticket(&self) -> u64 {
        self.front + self.slots.len() as u64
    }

    /// The ticket of the oldest unwritten slot (all before it are written).
    pub(super) fn front(&self) -> u64 {
        self.front
    }

    /// Queue a block for compression.
    pub(super) fn submit(&mut self, owner: Owner, input: Input) -> Result<u64, PipelineError> {
        let ticket = self.next_ticket();
        let jobs = self.pool.jobs.as_ref().ok_or(PipelineError::WorkerLost)?;
        jobs.send(Job { ticket, input })
            .map_err(|_| PipelineError::WorkerLost)?;
        self.slots.push_back(Slot {
            owner,
            outcome: None,
            worked: true,
        });
        self.busy += 1;
        Ok(ticket)
    }

    /// Queue a slot that needs no worker (a hole, a file's end mark).
    pub(super) fn push(&mut self, owner: Owner, outcome: Outcome) -> u64 {
        let ticket = self.next_ticket();
        self.slots.push_back(Slot {
            owner,
            outcome: Some(outcome),
            worked: false,
        });
        ticket
    }

    /// Queue a block that is stored already (copied from another image):
    /// no worker, but it counts as in flight until written, like a
    /// compressed one, so that copying stays within the memory bound.
    pub(super) fn push_stored(&mut self, owner: Owner, outcome: Outcome) -> u64 {
        let ticket = self.next_ticket();
        self.slots.push_back(Slot {
            owner,
            outcome: Some(outcome),
            worked: true,
        });
        self.busy += 1;
        ticket
    }

    fn record(&mut self, done: Done) -> Result<(), PipelineError> {
        if let Some(spare) = done.spare {
            self.recycle(spare);
        }
        let outcome = done.outcome.ok_or(PipelineError::WorkerLost)?;
        let slot = done
            .ticket
            .checked_sub(self.front)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get_mut(i))
            .ok_or(PipelineError::WorkerLost)?;
        slot.outcome = Some(outcome);
        Ok(())
    }

    /// The oldest slot if it is ready to be written, taken off the queue.
    /// With `wait`, blocks until a worker finishes it; `None` when the
    /// queue is empty (or, without `wait`, the oldest is not done).
    pub(super) fn next_ready(
        &mut self,
        wait: bool,
    ) -> Result<Option<(Owner, Outcome)>, PipelineError> {
        // Take every result already sent, without blocking.
        while let Ok(done) = self.pool.done.try_recv() {
            self.record(done)?;
        }
        loop {
            let Some(first) = self.slots.front_mut() else {
                return Ok(None);
            };
            if let Some(outcome) = first.outcome.take() {
                let owner = first.owner;
                if first.worked {
                    self.busy -= 1;
                }
                self.slots.pop_front();
                self.front += 1;
                return Ok(Some((owner, outcome)));
            }
            if !wait {
                return Ok(None);
            }
            let done = self
                .pool
                .done
                .recv()
                .map_err(|_| PipelineError::WorkerLost)?;
            self.record(done)?;
        }
    }

    /// A buffer of one block's length, for a read to fill. Its bytes are
    /// whatever it held before: zeroing 128 KiB for every small file read
    /// cost 2% of the CPU of a squash.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut buf) => {
                // Only one that came back shorter (a fragment block's) is
                // zeroed here, and only past its old length.
                buf.resize(self.block_size, 0);
                buf
            }
            // calloc: fresh pages come zeroed from the kernel, no memset.
            None => vec![0; self.block_size],
        }
    }

    /// A buffer no longer needed (a hole's, a block's after compressing, a
    /// written fragment's).
    pub(super) fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < self.limit && buf.capacity() >= self.block_size {
            self.spare.push(buf);
        }
    }
}
