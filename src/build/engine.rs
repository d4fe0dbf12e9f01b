//! The build driver: a parsed Dockerfile, stage by stage, instruction by
//! instruction, into layers and then one squashfs image.
//!
//! A stage is a list of layers (its base image's, then one per instruction
//! that changed files) and a config. Nothing is unpacked until an
//! instruction has to run: every instruction has a cache key (the hash of
//! its parent's key, the instruction after expansion, the build args and
//! environment in scope, and for COPY the hash of what it copies from the
//! context, or the key of the stage or image `--from` names), and a
//! key found in the store gives its layer without running anything. The
//! first miss unpacks the stage into a directory (the base image, or the
//! layers so far flattened by the import path), and from then on every
//! instruction runs on that tree and its changes are diffed into a layer
//! (see [`super::snapshot`]).
//!
//! A RUN goes through cairn's own run path, as a child `cairn run
//! --build-stage --seccomp --pid --uid U --gid G`: a user, mount and PID
//! namespace of the invoking user alone, the stage directory written in
//! place, the host's network, hosts and resolv.conf, and the seccomp
//! filter that lets package managers chown and setuid without effect.
//!
//! The image is the final stage's layers flattened by the same code as
//! `cairn import`, with the config stored the same way, so `cairn run`
//! applies it and a pushed and pulled image is the same tree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use super::copy::{self, Apply, CopyError, SourceRoot};
use super::dockerfile::{self, ArgDecl, Cmd, Dockerfile, DockerfileError, Instruction, Kind};
use super::expand::{self, ExpandError};
use super::ignore::{Ignore, IgnoreError};
use super::output;
use super::snapshot::{self, Owners, Snapshot, SnapshotError};
use super::store::{LayerRef, STEP_FORMAT, StepRecord, Store, StoreError};
use super::view::{LayerIndex, Skeleton, StageView, ViewError};
use super::{IoFailure, io_err};
use crate::image::archive::BlobLocation;
use crate::image::bottom::ImageBottom;
use crate::image::cache::{Cache, CacheError, now};
use crate::image::digest::Digest;
use crate::image::import::{ImportError, NoProgress, flatten_archive, flatten_over};
use crate::image::layer::LayerSpec;
use crate::image::meta::{ImageMeta, LayerMeta, RunConfig};
use crate::image::source::ResolvedImage;
use crate::squashfs::compress::Compression;
use crate::squashfs::extract::{ExtractError, ExtractOptions, extract_with, remove_tree};
use crate::squashfs::format::CompressorId;
use crate::squashfs::reader::{Archive, ReadError, WalkEvent, WalkLimits};
use crate::squashfs::writer::{WriteError, Writer, WriterOptions};

/// The default PATH of a Linux image, as BuildKit sets it when the base
/// has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Build args Docker accepts without an ARG (proxies), passed to RUN.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// The file that turns apt's sandbox user off while a RUN runs (apt drops
/// to `_apt` for downloads, which a one-uid namespace cannot be); removed
/// again before the RUN's changes are read, so it is in no layer.
const APT_NO_SANDBOX: &str = "etc/apt/apt.conf.d/00cairn-build-no-sandbox";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
    #[error("Dockerfile:{line}")]
    Expand {
        line: usize,
        #[source]
        source: ExpandError,
    },
    #[error("Dockerfile:{line}")]
    Copy {
        line: usize,
        #[source]
        source: CopyError,
    },
    #[error("Dockerfile:{line}: ADD {file}: unpacking it")]
    Unpack {
        line: usize,
        file: String,
        #[source]
        source: Box<ImportError>,
    },
    #[error("Dockerfile:{line}: looking at the stage's layers")]
    View {
        line: usize,
        #[source]
        source: ViewError,
    },
    #[error("Dockerfile:{line}: {what}")]
    Invalid { line: usize, what: String },
    #[error("--target {0}: no stage of that name")]
    NoTarget(String),
    #[error("Dockerfile:{line}: FROM {image}: {why}")]
    Base {
        line: usize,
        image: String,
        why: String,
    },
    #[error("Dockerfile:{line}: {text}: exited with status {status}")]
    RunFailed {
        line: usize,
        text: String,
        status: i32,
    },
    #[error("Dockerfile:{line}: reading the stage's changes")]
    Snapshot {
        line: usize,
        #[source]
        source: SnapshotError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("unpacking a stage")]
    Extract(#[from] ExtractError),
    #[error("reading the base image")]
    Read(#[from] ReadError),
    #[error("flattening the stage's layers")]
    Import(#[from] ImportError),
    #[error("writing the image")]
    Write(#[from] WriteError),
    #[error("exporting the base image as a layer")]
    Export(#[from] crate::image::export::ExportError),
    #[error(transparent)]
    Io(#[from] IoFailure),
}

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub build_args: Vec<(String, String)>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// The cairn binary a RUN, a pull or an import of a base runs.
    pub exe: PathBuf,
    /// The final image's writer options (its compression).
    pub writer: WriterOptions,
    /// mtime of what cairn adds to the image (`$SOURCE_DATE_EPOCH`).
    pub mtime: u32,
}

/// One instruction as the build went through it.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub stage: usize,
    /// The instruction's number in its stage, from 1.
    pub number: usize,
    pub text: String,
    /// Found in the store (or needing no work: config only).
    pub cached: bool,
    pub ran: bool,
    pub seconds: f64,
}

/// How a build reports steps as it goes (a terminal's lines in the CLI).
pub trait Progress {
    fn step(&self, _stage: usize, _number: usize, _total: usize, _text: &str) {}
    fn done(&self, _report: &StepReport) {}
    fn note(&self, _text: &str) {}
}

/// A [`Progress`] that shows nothing.
#[derive(Debug, Default)]
pub struct Silent;
impl Progress for Silent {}

/// The built image, flattened, in a file of the build's work directory:
/// the caller stores it.
#[derive(Debug)]
pub struct Built {
    /// The cache key of the build's result (the image's digest in the
    /// cache: the same inputs give the same key).
    pub digest: Digest,
    /// Where the flattened image is, unless the cache already has it.
    pub image: Option<PathBuf>,
    pub steps: Vec<StepReport>,
    pub meta: ImageMeta,
}

/// A layer of a stage.
#[derive(Debug, Clone)]
struct StageLayer {
    diff_id: Digest,
    size: u64,
    path: PathBuf,
    gzip: bool,
}

/// The image a stage starts from.
#[derive(Debug, Clone)]
struct Base {
    digest: Digest,
    path: PathBuf,
    /// An image of cairn's cache (written by cairn): its blocks are copied
    /// into what the build writes as they are. A squashfs file named by
    /// path is read through.
    cached: bool,
}

/// A stage unpacked: its directory, the snapshot after the last
/// instruction, and the owners of its paths in the image.
#[derive(Debug)]
struct Tree {
    dir: PathBuf,
    snapshot: Snapshot,
    owners: Owners,
    /// Only what one COPY needs of the stage (see `view.rs`).
    skeleton: bool,
}

#[derive(Debug)]
struct Stage {
    key: String,
    base: Option<Base>,
    layers: Vec<StageLayer>,
    config: RunConfig,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
    shell: Vec<String>,
    /// ARGs in scope, with their values.
    args: Vec<(String, Option<String>)>,
    tree: Option<Tree>,
    os: Option<String>,
    architecture: Option<String>,
}

/// The stages built so far, shared by the threads building stages side by
/// side (see [`Builder::build_stages`]): a stage waits here for the ones it
/// names.
#[derive(Debug, Default)]
struct StageTable {
    state: Mutex<TableState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct TableState {
    /// The stages being built: a wait for any other fails at once (as the
    /// wait for a stage the Dockerfile names after the current one would).
    scheduled: BTreeSet<usize>,
    built: BTreeMap<usize, Arc<Mutex<Stage>>>,
    /// The first stage that failed: waits end, and the build fails with
    /// its error.
    failed: Option<usize>,
}

impl StageTable {
    fn schedule(&self, stages: &[usize]) {
        lock(&self.state).scheduled.extend(stages);
    }

    fn insert(&self, index: usize, stage: Stage) {
        lock(&self.state)
            .built
            .insert(index, Arc::new(Mutex::new(stage)));
        self.changed.notify_all();
    }

    fn fail(&self, index: usize) {
        lock(&self.state).failed.get_or_insert(index);
        self.changed.notify_all();
    }

    fn failed(&self) -> Option<usize> {
        lock(&self.state).failed
    }

    /// More than one stage is being built: RUN output lines get their
    /// stage's prefix (see `output`).
    fn several(&self) -> bool {
        lock(&self.state).scheduled.len() > 1
    }

    /// Stage `index` once it is built; `None` if it is not being built or
    /// a stage failed first.
    fn wait(&self, index: usize) -> Option<Arc<Mutex<Stage>>> {
        let mut state = lock(&self.state);
        loop {
            if let Some(stage) = state.built.get(&index) {
                return Some(Arc::clone(stage));
            }
            if state.failed.is_some() || !state.scheduled.contains(&index) {
                return None;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Every built stage, once no thread uses them.
    fn take_all(&self) -> BTreeMap<usize, Arc<Mutex<Stage>>> {
        std::mem::take(&mut lock(&self.state).built)
    }
}

/// A stage out of the table, once its threads are done (no reference is
/// left then; were one, its stage is moved out all the same).
fn into_stage(stage: Arc<Mutex<Stage>>) -> Stage {
    match Arc::try_unwrap(stage) {
        Ok(stage) => stage
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        Err(shared) => std::mem::replace(&mut *lock(&shared), Stage::scratch()),
    }
}

/// A mutex's guard; a poisoned one too (the panic that poisoned it is
/// propagated by the thread scope, and the data is not half-changed by
/// any of the users here).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stage {
    fn scratch() -> Stage {
        Stage {
            key: chain("", &[b"scratch"]),
            base: None,
            layers: Vec::new(),
            config: RunConfig::default(),
            cmd_set: false,
            shell: vec!["/bin/sh".into(), "-c".into()],
            args: Vec::new(),
            tree: None,
            os: None,
            architecture: None,
        }
    }

    /// A variable as instructions see it: ENV wins over ARG.
    fn var(&self, name: &str) -> Option<String> {
        scope_var(&self.config.env, &self.args, name)
    }

    /// The variables in scope now, as the expander takes them (a copy: the
    /// instruction may change the stage while it expands).
    fn scope(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let env = self.config.env.clone();
        let args = self.args.clone();
        move |name| scope_var(&env, &args, name)
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.config
            .env
            .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        self.config.env.push(format!("{key}={value}"));
    }

    fn workdir(&self) -> String {
        self.config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_owned())
    }
}

/// `name` in ENV entries (`K=V`, the last wins), else among the ARGs.
fn scope_var(env: &[String], args: &[(String, Option<String>)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find_map(|e| {
            e.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
        .or_else(|| lookup_in(args, name))
}

/// sha256 of the parent key and each part (length-prefixed), as hex.
fn chain(parent: &str, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The build of one Dockerfile.
pub struct Builder<'a> {
    cache: &'a Cache,
    store: Store,
    opts: &'a BuildOptions,
    progress: &'a (dyn Progress + Sync),
    dockerfile: Dockerfile,
    ignore: Ignore,
    /// Global ARGs (before the first FROM) with their values.
    globals: Vec<(String, Option<String>)>,
    /// Build args some ARG used (the others are warned about).
    used_args: Mutex<BTreeSet<String>>,
    /// Where stage trees and temporary files go (removed at the end).
    work: PathBuf,
    /// Paths made in `work` so far (see `work_path`).
    trees: AtomicUsize,
    /// The layers a COPY's skeleton looked at, by file (see `view.rs`).
    layer_indexes: Mutex<HashMap<PathBuf, Arc<LayerIndex>>>,
    /// Held while a base image is looked up, imported or pulled: two
    /// stages on one base fetch it once (the second finds it cached).
    fetching: Mutex<()>,
    stages: StageTable,
    steps: Mutex<Vec<StepReport>>,
}

impl std::fmt::Debug for Builder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("work", &self.work).finish()
    }
}

/// Builds the Dockerfile of `opts` with `work` as scratch space (a private
/// directory the caller removes).
pub fn build(
    cache: &Cache,
    opts: &BuildOptions,
    work: &Path,
    progress: &(dyn Progress + Sync),
) -> Result<Built, BuildError> {
    let text = fs::read_to_string(&opts.dockerfile).map_err(|source| BuildError::ReadFile {
        path: opts.dockerfile.clone(),
        source,
    })?;
    let dockerfile = dockerfile::parse(&text)?;
    let ignore_path = opts.context.join(".dockerignore");
    let ignore = match fs::read_to_string(&ignore_path) {
        Ok(text) => Ignore::parse(&text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::default(),
        Err(source) => {
            return Err(BuildError::ReadFile {
                path: ignore_path,
                source,
            });
        }
    };
    let store = Store::of(cache);
    store.create()?;
    let mut builder = Builder {
        cache,
        store,
        opts,
        progress,
        dockerfile,
        ignore,
        globals: Vec::new(),
        used_args: Mutex::new(BTreeSet::new()),
        work: work.to_path_buf(),
        trees: AtomicUsize::new(0),
        layer_indexes: Mutex::new(HashMap::new()),
        fetching: Mutex::new(()),
        stages: StageTable::default(),
        steps: Mutex::new(Vec::new()),
    };
    builder.run()
}

impl Builder<'_> {
    fn build_arg(&self, name: &str) -> Option<String> {
        self.opts
            .build_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn expand_word(
        &self,
        line: usize,
        raw: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, BuildError> {
        expand::word(raw, vars, self.dockerfile.escape)
            .map_err(|source| BuildError::Expand { line, source })
    }

    fn run(&mut self) -> Result<Built, BuildError> {
        // Global ARGs: their defaults may use the ones before them.
        let globals: Vec<ArgDecl> = self.dockerfile.global_args.clone();
        for decl in &globals {
            let value = match self.build_arg(&decl.name) {
                Some(v) => {
                    lock(&self.used_args).insert(decl.name.clone());
                    Some(v)
                }
                None => match &decl.default {
                    Some(raw) => {
                        let scope = self.globals.clone();
                        let lookup = |n: &str| lookup_in(&scope, n);
                        Some(self.expand_word(1, raw, &lookup)?)
                    }
                    None => None,
                },
            };
            self.globals.retain(|(k, _)| k != &decl.name);
            self.globals.push((decl.name.clone(), value));
        }
        let target = match &self.opts.target {
            Some(name) => {
                let lower = name.to_ascii_lowercase();
                self.dockerfile
                    .stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .ok_or_else(|| BuildError::NoTarget(name.clone()))?
            }
            None => self.dockerfile.stages.len().saturating_sub(1),
        };
        let needed = self.needed_stages(target)?;
        self.build_stages(&needed)?;
        let used_args = std::mem::take(&mut *lock(&self.used_args));
        for (name, _) in &self.opts.build_args {
            if !used_args.contains(name) && !PROXY_ARGS.contains(&name.as_str()) {
                self.progress.note(&format!(
                    "warning: build arg {name} was not consumed by any ARG"
                ));
            }
        }
        self.finish(target)
    }

    /// The stage an image word or `--from` names, if it is a stage: by
    /// name (case-insensitive) or by index, among the stages before `before`.
    fn stage_named(&self, word: &str, before: usize) -> Option<usize> {
        let lower = word.to_ascii_lowercase();
        let stages = &self.dockerfile.stages[..before.min(self.dockerfile.stages.len())];
        if let Some(s) = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(s.index);
        }
        word.parse::<usize>().ok().filter(|i| *i < before)
    }

    fn expand_from(&self, index: usize) -> Result<String, BuildError> {
        let stage = &self.dockerfile.stages[index];
        let globals = self.globals.clone();
        let lookup = |n: &str| lookup_in(&globals, n);
        self.expand_word(stage.line, &stage.from, &lookup)
    }

    /// The stages `target` depends on (FROM and COPY --from), itself
    /// last, in Dockerfile order.
    fn needed_stages(&self, target: usize) -> Result<Vec<usize>, BuildError> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(index) = todo.pop() {
            if !needed.insert(index) {
                continue;
            }
            let from = self.expand_from(index)?;
            if let Some(parent) = self.stage_named(&from, index) {
                todo.push(parent);
            }
            for ins in &self.dockerfile.stages[index].instructions {
                if let Kind::Copy {
                    from: Some(from), ..
                } = &ins.kind
                {
                    let globals = self.globals.clone();
                    let lookup = |n: &str| lookup_in(&globals, n);
                    let from = self.expand_word(ins.line, from, &lookup)?;
                    if let Some(parent) = self.stage_named(&from, index) {
                        todo.push(parent);
                    }
                }
            }
        }
        Ok(needed.into_iter().collect())
    }

    /// Builds `needed` (the target's stages, in Dockerfile order) side by
    /// side, one thread each, as BuildKit does: a stage waits only for the
    /// stages it names (FROM, COPY --from), so a stage that compiles and
    /// one that installs packages run at once. Each RUN is its own process
    /// (see `run_in_tree`); nothing here changes process-wide state. The
    /// first stage to fail gives the build its error; the others stop at
    /// their next step.
    fn build_stages(&self, needed: &[usize]) -> Result<(), BuildError> {
        self.stages.schedule(needed);
        let build = |index: usize| match self.build_stage(index) {
            Ok(stage) => {
                self.stages.insert(index, stage);
                Ok(())
            }
            Err(e) => {
                self.stages.fail(index);
                Err(e)
            }
        };
        let results: Vec<(usize, Result<(), BuildError>)> = match needed {
            [only] => vec![(*only, build(*only))],
            _ => std::thread::scope(|scope| {
                let threads: Vec<_> = needed
                    .iter()
                    .map(|&index| {
                        let thread = std::thread::Builder::new()
                            .name(format!("stage-{index}"))
                            .spawn_scoped(scope, move || build(index));
                        (index, thread)
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|(index, thread)| {
                        let result = match thread {
                            Ok(thread) => thread
                                .join()
                                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                            Err(e) => {
                                self.stages.fail(index);
                                Err(BuildError::Io(IoFailure {
                                    step: "starting a thread for",
                                    path: PathBuf::from(format!("stage {index}")),
                                    source: e,
                                }))
                            }
                        };
                        (index, result)
                    })
                    .collect()
            }),
        };
        let first_failed = self.stages.failed();
        let mut errors: Vec<(usize, BuildError)> = results
            .into_iter()
            .filter_map(|(index, r)| r.err().map(|e| (index, e)))
            .collect();
        match errors
            .iter()
            .position(|(index, _)| Some(*index) == first_failed)
        {
            Some(at) => Err(errors.swap_remove(at).1),
            None => errors.into_iter().next().map_or(Ok(()), |(_, e)| Err(e)),
        }
    }

    fn build_stage(&self, index: usize) -> Result<Stage, BuildError> {
        let from = self.expand_from(index)?;
        let line = self.dockerfile.stages[index].line;
        let mut stage = if from.eq_ignore_ascii_case("scratch") {
            Stage::scratch()
        } else if let Some(parent) = self.stage_named(&from, index) {
            let Some(p) = self.stages.wait(parent) else {
                return Err(BuildError::Invalid {
                    line,
                    what: format!("FROM {from}: that stage was not built"),
                });
            };
            let p = lock(&p);
            Stage {
                key: p.key.clone(),
                base: p.base.clone(),
                layers: p.layers.clone(),
                config: p.config.clone(),
                cmd_set: false,
                shell: p.shell.clone(),
                args: Vec::new(),
                tree: None,
                os: p.os.clone(),
                architecture: p.architecture.clone(),
            }
        } else {
            self.base_stage(line, &from)?
        };
        if stage.var("PATH").is_none() && stage.base.is_some() {
            stage.set_env("PATH", DEFAULT_PATH);
        }
        let instructions = self.dockerfile.stages[index].instructions.clone();
        let total = instructions.len();
        for (number, ins) in instructions.iter().enumerate() {
            // Another stage failed: the build fails with its error, and
            // this one stops at its next step rather than run on for
            // nothing.
            if let Some(failed) = self.stages.failed() {
                return Err(BuildError::Invalid {
                    line: ins.line,
                    what: format!("stopped: stage {failed} failed"),
                });
            }
            self.progress.step(index, number + 1, total, &ins.text);
            let started = Instant::now();
            let (cached, ran) = self.instruction(index, &mut stage, ins)?;
            let report = StepReport {
                stage: index,
                number: number + 1,
                text: ins.text.clone(),
                cached,
                ran,
                seconds: started.elapsed().as_secs_f64(),
            };
            self.progress.done(&report);
            lock(&self.steps).push(report);
        }
        Ok(stage)
    }

    /// A stage on an image: the cache's, or pulled or imported into it.
    fn base_stage(&self, line: usize, from: &str) -> Result<Stage, BuildError> {
        let _fetching = lock(&self.fetching);
        let err = |why: String| BuildError::Base {
            line,
            image: from.to_owned(),
            why,
        };
        let (digest, path, cached) = match squashfs_file(&self.store, from)
            .map_err(|e| err(e.to_string()))?
        {
            Some((digest, path)) => {
                self.store.put_base_source(&digest, &path);
                (digest, path, false)
            }
            None => {
                let (digest, path) = match self.lookup_image(from) {
                    Some(found) => found,
                    None => {
                        self.fetch_base(from).map_err(err)?;
                        self.lookup_image(from)
                            .ok_or_else(|| err("not in the cache after fetching it".to_owned()))?
                    }
                };
                (digest, path, true)
            }
        };
        let archive = Archive::open(&path)?;
        let meta = ImageMeta::from_archive(&archive)
            .map_err(|e| err(format!("its stored config: {e}")))?;
        let mut stage = Stage::scratch();
        stage.key = chain("", &[b"image", digest.to_string().as_bytes()]);
        stage.base = Some(Base {
            digest,
            path,
            cached,
        });
        if let Some(meta) = meta {
            stage.config = meta.config;
            stage.os = meta.os;
            stage.architecture = meta.architecture;
        }
        Ok(stage)
    }

    fn lookup_image(&self, name: &str) -> Option<(Digest, PathBuf)> {
        let name = name.strip_prefix("docker://").unwrap_or(name);
        for candidate in crate::image::cache::candidate_names(name) {
            if let Some(record) = self.cache.read_ref(&candidate)
                && let Ok(digest) = Digest::parse(&record.digest)
            {
                let path = self.cache.image_path(&digest);
                if path.is_file() {
                    return Some((digest, path));
                }
            }
        }
        None
    }

    /// `cairn import SOURCE --name SOURCE` for a local source, else `cairn
    /// pull REF`: the same cache, credentials and registries as the user's
    /// own commands.
    fn fetch_base(&self, from: &str) -> Result<(), String> {
        let local = crate::image::spec::ImageSource::parse(from).is_ok();
        let mut cmd = Command::new(&self.opts.exe);
        if local {
            cmd.args(["import", from, "--name", from]);
        } else {
            cmd.args(["pull", from.strip_prefix("docker://").unwrap_or(from)]);
        }
        self.progress.note(&format!(
            "{} {from}",
            if local { "importing" } else { "pulling" }
        ));
        let status = cmd
            .status()
            .map_err(|e| format!("running {}: {e}", self.opts.exe.display()))?;
        if !status.success() {
            return Err(format!(
                "cairn {} failed ({status})",
                if local { "import" } else { "pull" }
            ));
        }
        Ok(())
    }

    /// One instruction; returns (cached, ran).
    fn instruction(
        &self,
        index: usize,
        stage: &mut Stage,
        ins: &Instruction,
    ) -> Result<(bool, bool), BuildError> {
        if self.config_instruction(stage, ins)? {
            return Ok((true, false));
        }
        self.fs_instruction(index, stage, ins)
    }

    /// An instruction that only changes the config (and the key of what
    /// follows); `false` for one that changes files.
    fn config_instruction(&self, stage: &mut Stage, ins: &Instruction) -> Result<bool, BuildError> {
        let line = ins.line;
        match &ins.kind {
            Kind::Arg(decls) => {
                self.declare_args(line, stage, decls)?;
                Ok(true)
            }
            Kind::Env(pairs) => {
                for (k, v) in pairs {
                    let lookup = stage.scope();
                    let key = self.expand_word(line, k, &lookup)?;
                    let value = self.expand_word(line, v, &lookup)?;
                    stage.set_env(&key, &value);
                    stage.key = chain(&stage.key, &[b"ENV", key.as_bytes(), value.as_bytes()]);
                }
                Ok(true)
            }
            Kind::Label(pairs) => {
                for (k, v) in pairs {
                    let lookup = stage.scope();
                    let key = self.expand_word(line, k, &lookup)?;
                    let value = self.expand_word(line, v, &lookup)?;
                    stage.key = chain(&stage.key, &[b"LABEL", key.as_bytes(), value.as_bytes()]);
                    stage.config.labels.insert(key, value);
                }
                Ok(true)
            }
            Kind::User(raw) => {
                let user = self.expand_word(line, raw, &stage.scope())?;
                stage.key = chain(&stage.key, &[b"USER", user.as_bytes()]);
                stage.config.user = Some(user).filter(|u| !u.is_empty());
                Ok(true)
            }
            Kind::Cmd(cmd) => {
                let argv = self.argv(stage, cmd);
                stage.key = chain(&stage.key, &[b"CMD", json(&argv).as_bytes()]);
                stage.config.cmd = Some(argv);
                stage.cmd_set = true;
                Ok(true)
            }
            Kind::Entrypoint(cmd) => {
                let argv = self.argv(stage, cmd);
                stage.key = chain(&stage.key, &[b"ENTRYPOINT", json(&argv).as_bytes()]);
                stage.config.entrypoint = Some(argv);
                // An ENTRYPOINT resets a CMD the base image set.
                if !stage.cmd_set {
                    stage.config.cmd = None;
                }
                Ok(true)
            }
            Kind::Shell(argv) => {
                if argv.is_empty() {
                    return Err(BuildError::Invalid {
                        line,
                        what: "SHELL needs at least one argument".into(),
                    });
                }
                stage.key = chain(&stage.key, &[b"SHELL", json(argv).as_bytes()]);
                stage.shell = argv.clone();
                Ok(true)
            }
            Kind::Expose(words) => {
                for raw in words {
                    for port in expand::words(raw, &stage.scope(), self.dockerfile.escape)
                        .map_err(|source| BuildError::Expand { line, source })?
                    {
                        let port = if port.contains('/') {
                            port
                        } else {
                            format!("{port}/tcp")
                        };
                        stage.key = chain(&stage.key, &[b"EXPOSE", port.as_bytes()]);
                        stage.config.exposed_ports.insert(port);
                    }
                }
                Ok(true)
            }
            Kind::Volume(paths) => {
                for raw in paths {
                    let path = self.expand_word(line, raw, &stage.scope())?;
                    stage.key = chain(&stage.key, &[b"VOLUME", path.as_bytes()]);
                    stage.config.volumes.insert(path);
                }
                Ok(true)
            }
            Kind::StopSignal(raw) => {
                let signal = self.expand_word(line, raw, &stage.scope())?;
                stage.key = chain(&stage.key, &[b"STOPSIGNAL", signal.as_bytes()]);
                stage.config.stop_signal = Some(signal);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// ARG: each name's value from `--build-arg`, else its default, else
    /// (for a global ARG declared again) the global's; in the key.
    fn declare_args(
        &self,
        line: usize,
        stage: &mut Stage,
        decls: &[ArgDecl],
    ) -> Result<(), BuildError> {
        for decl in decls {
            let value = match self.build_arg(&decl.name) {
                Some(v) => {
                    lock(&self.used_args).insert(decl.name.clone());
                    Some(v)
                }
                None => match &decl.default {
                    Some(raw) => Some(self.expand_word(line, raw, &stage.scope())?),
                    // A global ARG re-declared in the stage brings
                    // its value in.
                    None => lookup_in(&self.globals, &decl.name),
                },
            };
            let shown = format!("ARG {}={}", decl.name, value.clone().unwrap_or_default());
            stage.key = chain(&stage.key, &[shown.as_bytes()]);
            stage.args.retain(|(k, _)| k != &decl.name);
            stage.args.push((decl.name.clone(), value));
        }
        Ok(())
    }

    /// WORKDIR, RUN, COPY and ADD: steps that change files.
    fn fs_instruction(
        &self,
        index: usize,
        stage: &mut Stage,
        ins: &Instruction,
    ) -> Result<(bool, bool), BuildError> {
        let line = ins.line;
        match &ins.kind {
            Kind::Workdir(raw) => {
                let dir = self.expand_word(line, raw, &stage.scope())?;
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", stage.workdir().trim_end_matches('/'))
                };
                let dir = clean_abs(&dir);
                stage.config.working_dir = Some(dir.clone());
                let key = chain(&stage.key, &[b"WORKDIR", dir.as_bytes()]);
                // The directory is made in the tree, as BuildKit does, so
                // that `cairn run` can start in it.
                self.fs_step(stage, line, &ins.text, key, |b, stage| {
                    b.materialize(index, stage)?;
                    let (uid, gid) = b.user_ids(line, stage)?;
                    let tree = stage.tree.as_ref().ok_or_else(|| no_tree(line))?;
                    let host = copy::resolve(&tree.dir, &dir, true)
                        .map_err(|source| BuildError::Copy { line, source })?;
                    fs::create_dir_all(&host).map_err(io_err("creating", &host))?;
                    Ok(((uid, gid), Owners::new()))
                })
            }
            Kind::Run { cmd } => {
                let argv = self.argv(stage, cmd);
                let env = self.run_env(stage);
                let env_text: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let key = chain(
                    &stage.key,
                    &[
                        b"RUN",
                        json(&argv).as_bytes(),
                        json(&env_text).as_bytes(),
                        stage.config.user.clone().unwrap_or_default().as_bytes(),
                        stage.workdir().as_bytes(),
                    ],
                );
                let text = ins.text.clone();
                self.fs_step(stage, line, &ins.text, key, move |b, stage| {
                    b.materialize(index, stage)?;
                    b.run_in_tree(index, (line, &text), stage, &argv, &env)
                })
            }
            Kind::Copy {
                add,
                sources,
                dest,
                from,
                chown,
                chmod,
                link: _,
                heredocs,
            } => self.copy(
                index,
                stage,
                ins,
                &CopySpec {
                    add: *add,
                    sources,
                    dest,
                    from: from.as_deref(),
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    heredocs,
                },
            ),
            // `config_instruction` took every other kind.
            _ => Err(BuildError::Invalid {
                line,
                what: "internal: not an instruction that changes files".into(),
            }),
        }
    }

    /// A command's argv: the exec form as it is, the shell form after the
    /// stage's SHELL.
    fn argv(&self, stage: &Stage, cmd: &Cmd) -> Vec<String> {
        match cmd {
            Cmd::Exec(argv) => argv.clone(),
            Cmd::Shell(text) => {
                let mut argv = stage.shell.clone();
                argv.push(text.clone());
                argv
            }
        }
    }

    /// A RUN's environment: the stage's ENV, then ARGs in scope that ENV
    /// does not set (Docker passes them to RUN), a default PATH.
    fn run_env(&self, stage: &Stage) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = stage
            .config
            .env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (k, v) in &stage.args {
            if let Some(v) = v
                && !env.iter().any(|(ek, _)| ek == k)
            {
                env.push((k.clone(), v.clone()));
            }
        }
        for name in PROXY_ARGS {
            if let Some(v) = self.build_arg(name)
                && !env.iter().any(|(k, _)| k == name)
            {
                env.push(((*name).to_owned(), v));
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        // HOME, unless ENV sets it, comes from the stage's passwd when the
        // RUN runs (see [`home_of`]): it follows from the steps before, so
        // it is not part of the key.
        env
    }

    /// A step that changes files: found in the store, or run by `work` on
    /// the stage (which it unpacks, or makes a skeleton of) and its changes
    /// stored as a layer.
    fn fs_step(
        &self,
        stage: &mut Stage,
        line: usize,
        text: &str,
        key: String,
        work: impl FnOnce(&Self, &mut Stage) -> Result<((u32, u32), Owners), BuildError>,
    ) -> Result<(bool, bool), BuildError> {
        stage.key = key.clone();
        if !self.opts.no_cache
            && let Some(record) = self.store.step(&key)
        {
            if let Some(layer) = record.layer {
                let diff_id = Digest::parse(&layer.diff_id).map_err(|e| BuildError::Invalid {
                    line,
                    what: format!("the build cache's record of this step: {e}"),
                })?;
                stage.layers.push(StageLayer {
                    path: self.store.layer_path(&diff_id, false),
                    diff_id,
                    size: layer.size,
                    gzip: false,
                });
                // The unpacked tree lacks that layer: unpack again if a
                // later step needs it.
                if let Some(tree) = stage.tree.take() {
                    discard_tree(&tree.dir);
                }
            }
            return Ok((true, false));
        }
        let started = Instant::now();
        let (created_by, explicit) = work(self, stage)?;
        let tree = stage.tree.as_mut().ok_or_else(|| no_tree(line))?;
        let snap_err = |source| BuildError::Snapshot { line, source };
        let after = snapshot::take(&tree.dir).map_err(snap_err)?;
        let mut changes = snapshot::diff(
            &tree.snapshot,
            &after,
            &mut tree.owners,
            created_by,
            &explicit,
        );
        apply_dpkg_overrides(&tree.dir, &mut changes, &mut tree.owners);
        tree.snapshot = after;
        let layer = if changes.is_empty() {
            None
        } else {
            let temp = self.work_path("layer", ".tar");
            let file = fs::File::create(&temp).map_err(io_err("creating", &temp))?;
            let written = snapshot::write_layer(&tree.dir, &changes, io::BufWriter::new(file))
                .map_err(snap_err)?;
            let path = self.store.put_layer(&temp, &written.diff_id, false)?;
            stage.layers.push(StageLayer {
                diff_id: written.diff_id.clone(),
                size: written.size,
                path,
                gzip: false,
            });
            Some(LayerRef {
                diff_id: written.diff_id.to_string(),
                size: written.size,
            })
        };
        // A skeleton served this step only.
        if stage.tree.as_ref().is_some_and(|t| t.skeleton)
            && let Some(tree) = stage.tree.take()
        {
            discard_tree(&tree.dir);
        }
        self.store.put_step(
            &key,
            &StepRecord {
                format: STEP_FORMAT,
                instruction: text.to_owned(),
                layer,
                created: now(),
                seconds: started.elapsed().as_secs_f64(),
            },
        )?;
        Ok((false, true))
    }

    /// A fresh path of the work area: `{name}-{n}{ext}`, `n` counting up.
    fn work_path(&self, name: &str, ext: &str) -> PathBuf {
        let n = self.trees.fetch_add(1, Ordering::Relaxed);
        self.work.join(format!("{name}-{n}{ext}"))
    }

    /// Unpacks the stage into a directory of the work area, unless it is.
    fn materialize(&self, index: usize, stage: &mut Stage) -> Result<(), BuildError> {
        if stage.tree.is_some() {
            return Ok(());
        }
        let dir = self.work_path(&format!("stage-{index}"), "");
        let options = ExtractOptions {
            owners: false,
            // A RUN gets the runtime's /dev; the image keeps the base's
            // device nodes through its layer.
            devices: false,
            warn_devices: false,
            setid: true,
            all_xattrs: rustix::process::geteuid().is_root(),
        };
        let owners = if stage.layers.is_empty() {
            match &stage.base {
                Some(base) => {
                    extract_with(&base.path, &dir, options)?;
                    owners_of(&Archive::open(&base.path)?)?
                }
                None => {
                    fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
                    Owners::new()
                }
            }
        } else {
            let flat = self.work.join(format!("flat-{index}.sqfs"));
            self.flatten(stage, &flat, None)?;
            extract_with(&flat, &dir, options)?;
            let owners = owners_of(&Archive::open(&flat)?)?;
            let _ = fs::remove_file(&flat);
            owners
        };
        // cairn's own metadata is written anew by the final flatten; the
        // mount points a RUN needs exist before the first snapshot, so
        // that they are in no layer.
        let cairn = dir.join(".cairn");
        if cairn.exists() {
            remove_tree(&cairn);
            fs::remove_dir(&cairn).map_err(io_err("removing", &cairn))?;
        }
        for d in ["dev", "proc", "sys"] {
            let p = dir.join(d);
            if fs::symlink_metadata(&p).is_err() {
                fs::create_dir(&p).map_err(io_err("creating", &p))?;
            }
        }
        let snapshot =
            snapshot::take(&dir).map_err(|source| BuildError::Snapshot { line: 0, source })?;
        stage.tree = Some(Tree {
            dir,
            snapshot,
            owners,
            skeleton: false,
        });
        Ok(())
    }

    /// The stage's layers as an import source (the base image is not one
    /// of them: see [`Builder::flatten`]).
    fn resolved(&self, stage: &Stage, meta: ImageMeta) -> ResolvedImage {
        let layers = stage
            .layers
            .iter()
            .map(|layer| LayerSpec {
                label: layer.diff_id.to_string(),
                location: BlobLocation::File(layer.path.clone()),
                digest: None,
                size: None,
                diff_id: None,
                media_type: Some(if layer.gzip {
                    "application/vnd.oci.image.layer.v1.tar+gzip".into()
                } else {
                    "application/vnd.oci.image.layer.v1.tar".into()
                }),
                growing: None,
            })
            .collect();
        ResolvedImage::Layers { layers, meta }
    }

    /// Flattens the stage's layers into a squashfs file at `out`, written
    /// with `options` (`None`: a temporary image to unpack, see
    /// [`unpack_writer`]). The base image is read in place under the
    /// layers; a cached base's blocks are copied as they are when the
    /// output has its compressor and block size (no decompressing, no
    /// compressing: most of an image is its base).
    fn flatten(
        &self,
        stage: &Stage,
        out: &Path,
        options: Option<WriterOptions>,
    ) -> Result<(), BuildError> {
        let bottom = match &stage.base {
            Some(base) => Some(ImageBottom {
                path: base.path.clone(),
                archive: Arc::new(Archive::open(&base.path)?),
                copy_blocks: base.cached,
            }),
            None => None,
        };
        let options = options.unwrap_or_else(|| unpack_writer(bottom.as_ref()));
        let image = self.resolved(stage, self.image_meta(stage));
        let mut writer = Writer::create(out, options)?;
        flatten_over(
            bottom.as_ref(),
            &image,
            &mut writer,
            &NoProgress,
            self.opts.mtime,
        )?;
        writer.finish()?;
        Ok(())
    }

    fn image_meta(&self, stage: &Stage) -> ImageMeta {
        let mut meta = ImageMeta::new(format!("build:{}", self.opts.dockerfile.display()));
        meta.config = stage.config.clone();
        meta.os = stage.os.clone().or_else(|| Some("linux".into()));
        meta.architecture = stage
            .architecture
            .clone()
            .or_else(|| Some(crate::image::spec::PlatformSpec::host().architecture));
        // The base is named by its squashfs image (see `Store::blob_layers`,
        // which makes its layer when the image is pushed).
        if let Some(base) = &stage.base {
            meta.layers.push(LayerMeta {
                digest: Some(base.digest.to_string()),
                diff_id: None,
                size: None,
                media_type: Some(super::store::MEDIA_SQUASHFS_BASE.into()),
            });
        }
        for layer in &stage.layers {
            meta.layers.push(LayerMeta {
                digest: Some(layer.diff_id.to_string()),
                diff_id: Some(layer.diff_id.to_string()),
                size: Some(layer.size),
                media_type: Some("application/vnd.oci.image.layer.v1.tar".into()),
            });
        }
        meta
    }

    /// The (uid, gid) of the stage's USER, looked up in its passwd and
    /// group files (numbers are taken as they are).
    fn user_ids(&self, line: usize, stage: &Stage) -> Result<(u32, u32), BuildError> {
        let user = stage.config.user.clone().unwrap_or_default();
        if user.is_empty() {
            return Ok((0, 0));
        }
        let root = stage.tree.as_ref().map(|t| t.dir.clone());
        resolve_user(root.as_deref(), &user).map_err(|what| BuildError::Invalid {
            line,
            what: format!("USER {user}: {what}"),
        })
    }

    /// Runs `argv` in the unpacked stage through `cairn run --build-stage`.
    fn run_in_tree(
        &self,
        index: usize,
        (line, text): (usize, &str),
        stage: &mut Stage,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<((u32, u32), Owners), BuildError> {
        let (uid, gid) = self.user_ids(line, stage)?;
        let workdir = stage.workdir();
        let tree = stage.tree.as_ref().ok_or_else(|| no_tree(line))?;
        let host_workdir = copy::resolve(&tree.dir, &workdir, true)
            .map_err(|source| BuildError::Copy { line, source })?;
        fs::create_dir_all(&host_workdir).map_err(io_err("creating", &host_workdir))?;
        let apt = AptNoSandbox::install(&tree.dir);
        let mut cmd = Command::new(&self.opts.exe);
        // `--pid`: the RUN's processes in a PID namespace of their own, so
        // that what it started in the background (a daemon a package's
        // postinst launched, `cmd &`) ends with it, as in Docker, instead
        // of living on beside the build and writing into the stage.
        cmd.args(["run", "--build-stage", "--seccomp", "--clean-env", "--pid"])
            .arg("--uid")
            .arg(uid.to_string())
            .arg("--gid")
            .arg(gid.to_string());
        for (k, v) in env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        if !env.iter().any(|(k, _)| k == "HOME") {
            let home = home_of(&tree.dir, stage.config.user.as_deref(), uid);
            cmd.arg("-e").arg(format!("HOME={home}"));
        }
        cmd.arg("--cd").arg(&workdir).arg(&tree.dir).arg("--");
        cmd.args(argv);
        let prefix = self.stages.several().then(|| format!("[stage {index}] "));
        let status = output::attach(&mut cmd, prefix).and_then(|mut relay| {
            let child = cmd.spawn();
            // The command holds the relay pipe's writing end: closed here,
            // the relay sees its end when the RUN's processes are gone.
            drop(cmd);
            let mut child = child?;
            relay.start();
            let status = child.wait();
            relay.finish();
            status
        });
        apt.remove();
        let status = status.map_err(io_err("running", &self.opts.exe))?;
        if !status.success() {
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            return Err(BuildError::RunFailed {
                line,
                text: text.to_owned(),
                status: code,
            });
        }
        Ok(((uid, gid), Owners::new()))
    }

    /// COPY/ADD's words expanded: sources (heredoc names as they are),
    /// the destination (absolute, from WORKDIR), `--chown`, `--chmod`.
    fn copy_words(
        &self,
        stage: &Stage,
        line: usize,
        spec: &CopySpec<'_>,
    ) -> Result<CopyWords, BuildError> {
        let lookup = stage.scope();
        let mut sources = Vec::new();
        for raw in spec.sources {
            if spec.heredocs.iter().any(|h| &h.name == raw) {
                sources.push(raw.clone());
                continue;
            }
            let word = self.expand_word(line, raw, &lookup)?;
            if spec.add && dockerfile::is_remote_source(&word) {
                return Err(BuildError::Invalid {
                    line,
                    what: format!(
                        "ADD {word}: remote sources are not supported (fetch it with RUN)"
                    ),
                });
            }
            sources.push(word);
        }
        let dest = self.expand_word(line, spec.dest, &lookup)?;
        let dest = if dest.starts_with('/') {
            dest
        } else {
            let mut d = format!("{}/{dest}", stage.workdir().trim_end_matches('/'));
            if dest.ends_with('/') && !d.ends_with('/') {
                d.push('/');
            }
            d
        };
        let chown = spec
            .chown
            .map(|c| self.expand_word(line, c, &lookup))
            .transpose()?;
        let chmod_text = spec
            .chmod
            .map(|c| self.expand_word(line, c, &lookup))
            .transpose()?;
        let chmod = chmod_text
            .as_deref()
            .map(|c| {
                u32::from_str_radix(c, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| BuildError::Invalid {
                        line,
                        what: format!("--chmod={c}: not an octal mode"),
                    })
            })
            .transpose()?;
        Ok(CopyWords {
            sources,
            dest,
            chown,
            chmod_text,
            chmod,
        })
    }

    /// Where COPY's sources are, the key of a `--from` source, and the
    /// hash of what would be copied (see `copy::content_key`).
    fn copy_sources(
        &self,
        index: usize,
        stage: &Stage,
        line: usize,
        spec: &CopySpec<'_>,
        words: &CopyWords,
    ) -> Result<(Sources, String, String), BuildError> {
        let lookup = stage.scope();
        let copy_err = |source| BuildError::Copy { line, source };
        // Where the sources are: heredocs written out, the context, or
        // another stage's tree or an image (`--from`). A --from source is
        // known by its key (the stage's, or the image's digest), which
        // names its tree as the key of every cached step names the tree
        // after it: it is unpacked only when the step runs, not to find
        // the step in the cache (a stage unpacked is its base and layers
        // written out, seconds for a big one).
        let mut from_key = String::new();
        let sources_at = if !spec.heredocs.is_empty() {
            let heredoc_dir = self.work_path("heredoc", "");
            fs::create_dir_all(&heredoc_dir).map_err(io_err("creating", &heredoc_dir))?;
            for doc in spec.heredocs {
                let content = if doc.expand {
                    expand::heredoc(&doc.content, &lookup)
                        .map_err(|source| BuildError::Expand { line, source })?
                } else {
                    doc.content.clone()
                };
                let path = heredoc_dir.join(&doc.name);
                fs::write(&path, content).map_err(io_err("writing", &path))?;
            }
            Sources::Dir(heredoc_dir)
        } else if let Some(from) = spec.from {
            let from = self.expand_word(line, from, &lookup)?;
            from_key = self.copy_source_key(line, index, &from)?;
            Sources::From(from)
        } else {
            Sources::Context
        };
        // Whether the destination is a directory in the stage decides
        // where a single file goes; only an unpacked stage can say, so the
        // plan is made again when the step runs.
        let content = match &sources_at {
            Sources::From(_) => String::new(),
            Sources::Dir(dir) => {
                let plan = copy::plan(
                    &SourceRoot::Stage { dir },
                    &words.sources,
                    &words.dest,
                    false,
                )
                .map_err(copy_err)?;
                copy::content_key(&plan).map_err(copy_err)?
            }
            Sources::Context => {
                let root = SourceRoot::Context {
                    dir: &self.opts.context,
                    ignore: &self.ignore,
                };
                let plan =
                    copy::plan(&root, &words.sources, &words.dest, false).map_err(copy_err)?;
                copy::content_key(&plan).map_err(copy_err)?
            }
        };
        Ok((sources_at, from_key, content))
    }

    fn copy(
        &self,
        index: usize,
        stage: &mut Stage,
        ins: &Instruction,
        spec: &CopySpec<'_>,
    ) -> Result<(bool, bool), BuildError> {
        let line = ins.line;
        let add = spec.add;
        let copy_err = |source| BuildError::Copy { line, source };
        let words = self.copy_words(stage, line, spec)?;
        let (sources_at, from_key, content) =
            self.copy_sources(index, stage, line, spec, &words)?;
        let CopyWords {
            sources: expanded,
            dest,
            chown,
            chmod_text,
            chmod,
        } = words;
        let key = chain(
            &stage.key,
            &[
                if add { b"ADD" } else { b"COPY" },
                json(&expanded).as_bytes(),
                dest.as_bytes(),
                chown.clone().unwrap_or_default().as_bytes(),
                chmod_text.clone().unwrap_or_default().as_bytes(),
                from_key.as_bytes(),
                content.as_bytes(),
            ],
        );
        let context = self.opts.context.clone();
        let ignore = self.ignore.clone();
        // A skeleton of the stage does unless --chown names a user (the
        // stage's passwd and group are read then).
        let numeric = |spec: &str| spec.split(':').all(|id| id.parse::<u32>().is_ok());
        let light = !add && chown.as_deref().is_none_or(numeric);
        self.fs_step(stage, line, &ins.text, key, move |b, stage| {
            let from_dir;
            let root = match &sources_at {
                Sources::Context => SourceRoot::Context {
                    dir: &context,
                    ignore: &ignore,
                },
                Sources::Dir(dir) => SourceRoot::Stage { dir },
                Sources::From(from) => {
                    from_dir = b.copy_source_tree(line, index, from)?;
                    SourceRoot::Stage { dir: &from_dir }
                }
            };
            let mut plan = if light && stage.tree.is_none() {
                b.skeleton(index, stage, line, &root, &expanded, &dest)?
            } else {
                b.materialize(index, stage)?;
                let tree = stage.tree.as_ref().ok_or_else(|| no_tree(line))?;
                let dest_host = copy::resolve(&tree.dir, &dest, true).map_err(copy_err)?;
                let dest_is_dir = fs::metadata(&dest_host).is_ok_and(|m| m.is_dir());
                copy::plan(&root, &expanded, &dest, dest_is_dir).map_err(copy_err)?
            };
            let archives = if add {
                take_archives(line, &mut plan)?
            } else {
                Vec::new()
            };
            let tree = stage.tree.as_ref().ok_or_else(|| no_tree(line))?;
            let owner = match &chown {
                Some(spec) => {
                    resolve_user(Some(&tree.dir), spec).map_err(|what| BuildError::Invalid {
                        line,
                        what: format!("--chown={spec}: {what}"),
                    })?
                }
                None => (0, 0),
            };
            let written =
                copy::apply(&tree.dir, &plan, &dest, Apply { chmod }).map_err(copy_err)?;
            let mut explicit = Owners::new();
            for host in written {
                if let Ok(rel) = host.strip_prefix(&tree.dir) {
                    explicit.insert(rel.as_os_str().as_bytes().to_vec(), owner);
                }
            }
            let tree_dir = tree.dir.clone();
            let chowned = chown.is_some().then_some(owner);
            for item in &archives {
                b.unpack_archive(line, item, &dest, &tree_dir, chowned, &mut explicit)?;
            }
            Ok(((0, 0), explicit))
        })
    }

    /// `ADD` of a local tar archive: unpacked into `dest` (a directory),
    /// merged with what is there as `tar -x` would. The archive goes
    /// through the import path (layer reader and flattener: `..` paths,
    /// links out of the tree and the like refused as in an image layer)
    /// into a temporary image, which is unpacked and copied in by COPY's
    /// own rules. Owners are the archive's, or `--chown`'s.
    fn unpack_archive(
        &self,
        line: usize,
        item: &copy::Item,
        dest: &str,
        tree_dir: &Path,
        chown: Option<(u32, u32)>,
        explicit: &mut Owners,
    ) -> Result<(), BuildError> {
        let copy_err = |source| BuildError::Copy { line, source };
        let dir = self.work_path("add", "");
        let flat = dir.with_extension("sqfs");
        let spec = LayerSpec {
            label: format!("ADD {}", item.rel),
            location: BlobLocation::File(item.host.clone()),
            digest: None,
            size: None,
            diff_id: None,
            media_type: None,
            growing: None,
        };
        let mut writer = Writer::create(&flat, unpack_writer(None))?;
        flatten_archive(&spec, &mut writer).map_err(|source| BuildError::Unpack {
            line,
            file: item.rel.clone(),
            source: Box::new(source),
        })?;
        writer.finish()?;
        let owners = owners_of(&Archive::open(&flat)?)?;
        let options = ExtractOptions {
            owners: false,
            devices: false,
            warn_devices: true,
            setid: true,
            all_xattrs: false,
        };
        let unpacked = extract_with(&flat, &dir, options);
        let _ = fs::remove_file(&flat);
        unpacked?;
        let root = SourceRoot::Stage { dir: &dir };
        let plan = copy::plan(&root, &["/".to_owned()], dest, true).map_err(copy_err)?;
        let written =
            copy::apply(tree_dir, &plan, dest, Apply { chmod: None }).map_err(copy_err)?;
        let dest_host = copy::resolve(tree_dir, dest, true).map_err(copy_err)?;
        for host in written {
            let Ok(rel) = host.strip_prefix(tree_dir) else {
                continue;
            };
            let inner = host
                .strip_prefix(&dest_host)
                .ok()
                .and_then(|p| owners.get(p.as_os_str().as_bytes()).copied());
            let owner = chown.or(inner).unwrap_or((0, 0));
            explicit.insert(rel.as_os_str().as_bytes().to_vec(), owner);
        }
        discard_tree(&dir);
        Ok(())
    }

    /// A skeleton of the stage for a COPY of `sources` to `dest` (see
    /// `view.rs`): the destination and each copied path's place, made from
    /// the base image and the layers without unpacking them. Returns the
    /// COPY's plan.
    fn skeleton(
        &self,
        index: usize,
        stage: &mut Stage,
        line: usize,
        root: &SourceRoot,
        sources: &[String],
        dest: &str,
    ) -> Result<copy::Plan, BuildError> {
        let copy_err = |source| BuildError::Copy { line, source };
        let view_err = |source| BuildError::View { line, source };
        let base = match &stage.base {
            Some(base) => Some(Archive::open(&base.path)?),
            None => None,
        };
        let mut layers = Vec::with_capacity(stage.layers.len());
        for layer in &stage.layers {
            let known = lock(&self.layer_indexes).get(&layer.path).cloned();
            let index = match known {
                Some(index) => index,
                None => {
                    // Read without the lock: another stage's skeleton may
                    // read the same layer meanwhile, and both results are
                    // the same.
                    let index = Arc::new(LayerIndex::read(&layer.path).map_err(view_err)?);
                    lock(&self.layer_indexes).insert(layer.path.clone(), Arc::clone(&index));
                    index
                }
            };
            layers.push(index);
        }
        let view = StageView::new(base.as_ref(), layers);
        let dir = self.work_path(&format!("skeleton-{index}"), "");
        fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        let mut skeleton = Skeleton::new(&view, &dir);
        skeleton.add_path(dest).map_err(view_err)?;
        let dest_host = copy::resolve(&dir, dest, true).map_err(copy_err)?;
        let dest_is_dir = fs::metadata(&dest_host).is_ok_and(|m| m.is_dir());
        let plan = copy::plan(root, sources, dest, dest_is_dir).map_err(copy_err)?;
        if plan.dest_is_dir {
            let base = dest.trim_end_matches('/');
            for item in &plan.items {
                let target = String::from_utf8_lossy(&item.target);
                skeleton
                    .add_path(&format!("{base}/{target}"))
                    .map_err(view_err)?;
            }
        }
        let owners = skeleton.finish().map_err(view_err)?;
        let snapshot =
            snapshot::take(&dir).map_err(|source| BuildError::Snapshot { line, source })?;
        stage.tree = Some(Tree {
            dir,
            snapshot,
            owners,
            skeleton: true,
        });
        Ok(plan)
    }

    /// The key of what `COPY --from` reads: an earlier stage's, or an
    /// image's (its digest; the image is pulled or imported if the cache
    /// has none by that name).
    fn copy_source_key(&self, line: usize, index: usize, from: &str) -> Result<String, BuildError> {
        if let Some(source) = self.stage_named(from, index) {
            return self
                .stages
                .wait(source)
                .map(|stage| lock(&stage).key.clone())
                .ok_or_else(|| BuildError::Invalid {
                    line,
                    what: format!("--from={from}: that stage was not built"),
                });
        }
        Ok(self.base_stage(line, from)?.key)
    }

    /// The tree `COPY --from` reads: an earlier stage (unpacked for it) or
    /// an image.
    fn copy_source_tree(
        &self,
        line: usize,
        index: usize,
        from: &str,
    ) -> Result<PathBuf, BuildError> {
        if let Some(source) = self.stage_named(from, index) {
            let stage = self
                .stages
                .wait(source)
                .ok_or_else(|| BuildError::Invalid {
                    line,
                    what: format!("--from={from}: that stage was not built"),
                })?;
            // Two stages copying from this one unpack it once: the second
            // waits for the first here.
            let mut stage = lock(&stage);
            self.materialize(source, &mut stage)?;
            return stage
                .tree
                .as_ref()
                .map(|t| t.dir.clone())
                .ok_or_else(|| no_tree(line));
        }
        let mut stage = self.base_stage(line, from)?;
        self.materialize(index, &mut stage)?;
        stage
            .tree
            .as_ref()
            .map(|t| t.dir.clone())
            .ok_or_else(|| no_tree(line))
    }

    /// The target stage flattened into an image file of the work area,
    /// unless the store says the cache has it already.
    fn finish(&self, target: usize) -> Result<Built, BuildError> {
        let mut built = self.stages.take_all();
        let stage = built
            .remove(&target)
            .map(into_stage)
            .ok_or(BuildError::Invalid {
                line: 0,
                what: "no stage to build".into(),
            })?;
        let writer = format!(
            "{:?}/{}",
            self.opts.writer.compression, self.opts.writer.block_size
        );
        let key = chain(
            &stage.key,
            &[b"image", &self.opts.mtime.to_le_bytes(), writer.as_bytes()],
        );
        let digest = Digest::from_hex(&key).ok_or(BuildError::Invalid {
            line: 0,
            what: "the build's key is not a digest".into(),
        })?;
        let meta = self.image_meta(&stage);
        let reuse = !self.opts.no_cache
            && self.store.final_image(&key).is_some()
            && self.cache.has_image(&digest);
        let image = if reuse {
            None
        } else {
            let out = self.work.join("image.sqfs");
            self.flatten(&stage, &out, Some(self.opts.writer.clone()))?;
            self.store.put_final(&key, &digest)?;
            Some(out)
        };
        for stage in built.into_values().map(into_stage).chain([stage]) {
            if let Some(tree) = stage.tree {
                discard_tree(&tree.dir);
            }
        }
        Ok(Built {
            digest,
            image,
            steps: std::mem::take(&mut *lock(&self.steps)),
            meta,
        })
    }
}

/// `FROM /path/to/image.sqfs`: a squashfs file (as `cairn run` takes
/// one), identified by the sha256 of its bytes. The hash is remembered by
/// the file's identity (device, inode, size, mtime, ctime: a file
/// rewritten in place has a new ctime), so a rebuild does not read the
/// whole base again.
fn squashfs_file(store: &Store, from: &str) -> io::Result<Option<(Digest, PathBuf)>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let path = Path::new(from);
    if !path.is_absolute() || !path.is_file() {
        return Ok(None);
    }
    let mut file = fs::File::open(path)?;
    let mut magic = [0u8; 4];
    if file.read(&mut magic)? != 4 || &magic != b"hsqs" {
        return Ok(None);
    }
    let m = file.metadata()?;
    let identity = format!(
        "{}:{}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    );
    if let Some(digest) = store.file_digest(&identity) {
        return Ok(Some((digest, path.to_path_buf())));
    }
    // From the first byte: the magic was read from this descriptor.
    let mut hashing = crate::image::digest::HashingReader::new(fs::File::open(path)?);
    io::copy(&mut hashing, &mut io::sink())?;
    let digest = hashing.finish().0;
    store.put_file_digest(&identity, &digest);
    Ok(Some((digest, path.to_path_buf())))
}

/// A COPY or ADD as written (raw words).
struct CopySpec<'a> {
    add: bool,
    sources: &'a [String],
    dest: &'a str,
    from: Option<&'a str>,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    heredocs: &'a [dockerfile::Heredoc],
}

/// A COPY's words expanded (see `Builder::copy_words`).
struct CopyWords {
    sources: Vec<String>,
    dest: String,
    chown: Option<String>,
    chmod_text: Option<String>,
    chmod: Option<u32>,
}

/// Where a COPY's sources are read from.
enum Sources {
    /// The build context, less what `.dockerignore` leaves out.
    Context,
    /// A directory of the work area (heredocs written out).
    Dir(PathBuf),
    /// `--from`: an earlier stage or an image, unpacked when the step runs.
    From(String),
}

fn no_tree(line: usize) -> BuildError {
    BuildError::Invalid {
        line,
        what: "internal: the stage is not unpacked".into(),
    }
}

fn lookup_in(scope: &[(String, Option<String>)], name: &str) -> Option<String> {
    scope
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.clone())
}

fn json(argv: &[String]) -> String {
    serde_json::to_string(argv).unwrap_or_default()
}

/// `/a/./b/../c/` as `/a/c`.
fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// How a temporary image to unpack is written: fast, and, when the base's
/// blocks can be copied, in the base's compressor and block size (zstd at
/// its fastest level for what the layers add); else lz4.
fn unpack_writer(bottom: Option<&ImageBottom>) -> WriterOptions {
    let mut options = WriterOptions {
        compression: Compression::Lz4,
        block_size: 128 * 1024,
        mkfs_time: Some(0),
        durable: false,
    };
    if let Some(b) = bottom.filter(|b| b.copy_blocks) {
        let format = b.archive.data_format();
        if format.compressor == CompressorId::Zstd {
            options.compression = Compression::Zstd { level: 1 };
            options.block_size = format.block_size;
        } else if format.compressor == CompressorId::Lz4 {
            options.block_size = format.block_size;
        }
    }
    options
}

/// The owner of every path of an image.
fn owners_of(archive: &Archive) -> Result<Owners, BuildError> {
    let mut owners = Owners::new();
    archive.walk(WalkLimits::default(), |event| -> Result<(), ReadError> {
        match event {
            WalkEvent::EnterDir { path, node } | WalkEvent::Leaf { path, node, .. } => {
                let st = node.stat();
                owners.insert(path.to_vec(), (st.uid, st.gid));
            }
            WalkEvent::LeaveDir { .. } => {}
        }
        Ok(())
    })?;
    Ok(owners)
}

/// Removes an unpacked stage (best effort: it is scratch space).
fn discard_tree(dir: &Path) {
    remove_tree(dir);
    let _ = fs::remove_dir(dir);
}

/// dpkg's statoverride entries (`OWNER GROUP MODE PATH`, names or
/// `#ID`), for what a RUN changed: dpkg set those owners with chown calls
/// the filter swallowed (a setgid `crontab` of group `crontab` must not
/// become setgid root). The modes were set for real.
fn apply_dpkg_overrides(root: &Path, changes: &mut [snapshot::Change], owners: &mut Owners) {
    let Some(text) = copy::read_small(root, "/var/lib/dpkg/statoverride") else {
        return;
    };
    let mut wanted: std::collections::HashMap<Vec<u8>, (u32, u32)> =
        std::collections::HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [user, group, _mode, path] = fields[..] else {
            continue;
        };
        let spec = format!(
            "{}:{}",
            user.trim_start_matches('#'),
            group.trim_start_matches('#')
        );
        match resolve_user(Some(root), &spec) {
            Ok(ids) => {
                wanted.insert(path.trim_start_matches('/').as_bytes().to_vec(), ids);
            }
            Err(why) => tracing::debug!("statoverride {path}: {why}"),
        }
    }
    for change in changes.iter_mut() {
        if let snapshot::Change::Entry { path, owner } = change
            && let Some(ids) = wanted.get(path.as_slice())
        {
            *owner = *ids;
            owners.insert(path.clone(), *ids);
        }
    }
}

/// `USER`/`--chown` as (uid, gid): `name[:group]` or numbers, names looked
/// up in the stage's `/etc/passwd` and `/etc/group`.
fn resolve_user(root: Option<&Path>, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |file: &str| {
        root.and_then(|r| copy::read_small(r, file))
            .unwrap_or_default()
    };
    // The fields of the line whose field `at` is `value`.
    let find = |text: &str, at: usize, value: &str| -> Option<Vec<String>> {
        text.lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f.get(at).map(String::as_str) == Some(value))
    };
    let passwd = read("/etc/passwd");
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, find(&passwd, 2, user).and_then(|f| f[3].parse().ok())),
        Err(_) => {
            let f = find(&passwd, 0, user)
                .ok_or_else(|| format!("no user {user} in the stage's /etc/passwd"))?;
            let uid = f[2]
                .parse()
                .map_err(|_| format!("user {user} has no numeric uid"))?;
            (uid, f[3].parse().ok())
        }
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => find(&read("/etc/group"), 0, g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("no group {g} in the stage's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// A RUN's HOME when ENV sets none, as runc gives Docker's RUN: the home
/// of the user's entry in the stage's `/etc/passwd` (by name, else by
/// uid); without one, `/root` for root and `/` for anyone else.
fn home_of(root: &Path, user: Option<&str>, uid: u32) -> String {
    let name = user
        .map(|u| u.split_once(':').map_or(u, |(name, _)| name))
        .filter(|u| !u.is_empty() && u.parse::<u32>().is_err());
    let passwd = copy::read_small(root, "/etc/passwd").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| {
            f.len() > 5
                && match name {
                    Some(name) => f[0] == name,
                    None => f[2].parse::<u32>().ok() == Some(uid),
                }
        });
    match entry {
        Some(f) if !f[5].is_empty() => f[5].to_owned(),
        _ if uid == 0 => "/root".to_owned(),
        _ => "/".to_owned(),
    }
}

/// Takes out of `plan` the files `ADD` unpacks: tar archives, plain or
/// compressed with gzip or zstd (what cairn's layer reader reads). Docker
/// unpacks bzip2- and xz-compressed tars too: those are refused, and a
/// bzip2 file (which cannot be looked into here) with them.
fn take_archives(line: usize, plan: &mut copy::Plan) -> Result<Vec<copy::Item>, BuildError> {
    let mut archives = Vec::new();
    let mut kept = Vec::new();
    for item in std::mem::take(&mut plan.items) {
        let is_file = matches!(item.kind, copy::ItemKind::File { .. });
        match is_file.then(|| archive_kind(&item.host)).flatten() {
            Some(Ok(())) => archives.push(item),
            Some(Err(why)) => {
                return Err(BuildError::Invalid {
                    line,
                    what: format!("ADD {}: {why}; COPY it and unpack it with RUN", item.rel),
                });
            }
            None => kept.push(item),
        }
    }
    plan.items = kept;
    Ok(archives)
}

/// Whether the file at `host` is a tar archive ADD unpacks (`Some(Ok)`),
/// one it cannot (`Some(Err(why))`), or no archive (`None`).
fn archive_kind(host: &Path) -> Option<Result<(), &'static str>> {
    use std::io::Read;
    let file = fs::File::open(host).ok()?;
    let mut head = Vec::with_capacity(512);
    file.take(512).read_to_end(&mut head).ok()?;
    let is_tar = |h: &[u8]| h.len() >= 262 && &h[257..262] == b"ustar";
    let inner = |reader: &mut dyn Read| {
        let mut h = Vec::with_capacity(512);
        let _ = reader.take(512).read_to_end(&mut h);
        is_tar(&h)
    };
    let open = || fs::File::open(host).map(io::BufReader::new);
    if head.starts_with(&[0x1f, 0x8b]) {
        let tar = open().is_ok_and(|f| inner(&mut flate2::bufread::MultiGzDecoder::new(f)));
        tar.then_some(Ok(()))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let tar = open()
            .ok()
            .and_then(|f| zstd::stream::read::Decoder::with_buffer(f).ok())
            .is_some_and(|mut d| inner(&mut d));
        tar.then_some(Ok(()))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let tar = open().is_ok_and(|f| inner(&mut liblzma::bufread::XzDecoder::new(f)));
        tar.then_some(Err(
            "an xz-compressed tar archive is not unpacked by cairn (gzip, zstd and plain tar are)",
        ))
    } else if head.starts_with(b"BZh") {
        Some(Err(
            "a bzip2-compressed file: cairn cannot tell whether it is a tar archive to unpack (gzip, zstd and plain tar are unpacked)",
        ))
    } else if is_tar(&head) {
        Some(Ok(()))
    } else {
        None
    }
}

/// The apt setting a RUN needs (see [`APT_NO_SANDBOX`]), in place while it
/// runs when the stage has apt.
struct AptNoSandbox {
    file: Option<PathBuf>,
    /// The directory's mtime to put back.
    dir_mtime: Option<(PathBuf, i64, i64)>,
}

impl AptNoSandbox {
    fn install(root: &Path) -> AptNoSandbox {
        use std::os::unix::fs::MetadataExt;
        let file = root.join(APT_NO_SANDBOX);
        let Some(dir) = file.parent().map(Path::to_path_buf) else {
            return AptNoSandbox {
                file: None,
                dir_mtime: None,
            };
        };
        // Only a real directory of the stage (not through a symlink).
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            return AptNoSandbox {
                file: None,
                dir_mtime: None,
            };
        };
        if !meta.is_dir() || fs::symlink_metadata(&file).is_ok() {
            return AptNoSandbox {
                file: None,
                dir_mtime: None,
            };
        }
        let written = fs::write(&file, "APT::Sandbox::User \"root\";\n");
        AptNoSandbox {
            file: written.is_ok().then_some(file),
            dir_mtime: Some((dir, meta.mtime(), meta.mtime_nsec())),
        }
    }

    fn remove(self) {
        if let Some(file) = &self.file {
            let _ = fs::remove_file(file);
        }
        if let (Some(_), Some((dir, secs, nanos))) = (&self.file, &self.dir_mtime) {
            use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
            let at = Timespec {
                tv_sec: *secs,
                tv_nsec: *nanos,
            };
            let _ = utimensat(
                CWD,
                dir,
                &Timestamps {
                    last_access: at,
                    last_modification: at,
                },
                AtFlags::empty(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_the_stage() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::create_dir(dir.path().join("etc")).expect("etc");
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        let r = Some(dir.path());
        assert_eq!(resolve_user(r, "bob"), Ok((1000, 1001)));
        assert_eq!(resolve_user(r, "bob:staff"), Ok((1000, 50)));
        assert_eq!(resolve_user(r, "1000"), Ok((1000, 1001)));
        assert_eq!(resolve_user(r, "42:43"), Ok((42, 43)));
        assert_eq!(resolve_user(r, "7"), Ok((7, 7)));
        assert!(resolve_user(r, "alice").is_err());
        assert!(resolve_user(r, "bob:nogroup").is_err());
    }

    #[test]
    fn home_comes_from_the_stage_passwd() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::create_dir(dir.path().join("etc")).expect("etc");
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n",
        )
        .expect("passwd");
        let r = dir.path();
        assert_eq!(home_of(r, None, 0), "/root");
        assert_eq!(home_of(r, Some("bob"), 1000), "/home/bob");
        assert_eq!(home_of(r, Some("bob:staff"), 1000), "/home/bob");
        assert_eq!(home_of(r, Some("1000:50"), 1000), "/home/bob");
        assert_eq!(home_of(r, Some("4242"), 4242), "/");
        let empty = tempfile::tempdir().expect("tmp");
        assert_eq!(home_of(empty.path(), None, 0), "/root");
        assert_eq!(home_of(empty.path(), Some("7"), 7), "/");
    }

    #[test]
    fn keys_chain() {
        let a = chain("", &[b"x"]);
        assert_eq!(a.len(), 64);
        assert_ne!(chain(&a, &[b"y"]), chain(&a, &[b"z"]));
        assert_ne!(chain(&a, &[b"ab", b"c"]), chain(&a, &[b"a", b"bc"]));
        assert_eq!(clean_abs("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_abs("/.."), "/");
    }
}
