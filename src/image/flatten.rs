//! The flattener: applies layers TOP-DOWN in one pass, deciding each path
//! once. An entry shadowed by an upper layer (replaced, whited out, below an
//! opaque directory or below a non-directory) is never written; file data
//! of visible entries streams straight into the [`TreeSink`].
//!
//! Semantics are those of extracting the layers bottom-up the way umoci
//! does (or of overlayfs):
//! - a whiteout `.wh.NAME` in layer L deletes NAME from layers below L only;
//!   an opaque marker hides the lower layers' children of its directory; a
//!   whiteout or marker below a non-directory of its own layer hides
//!   nothing (that non-directory already hides the whole lower subtree);
//! - an upper directory merges with a lower directory (the upper's metadata
//!   wins; a directory an upper layer only implies, through its children,
//!   takes the metadata of the first lower layer that has it);
//! - an upper non-directory hides everything at and below its path;
//! - within a layer, a later entry for a path replaces the earlier one (tar
//!   semantics: `tar -r` appends): the earlier one is taken back from the
//!   sink, with what the layer put below it; two directory entries merge,
//!   the later one's metadata winning; lower layers' content there stays
//!   hidden, as the earlier entry's extraction removed it;
//! - an entry below a symlink of its own layer lands where the symlink
//!   leads, resolved inside the image root (see
//!   [`super::entry::resolve_parents`]); symlinks of lower layers are not
//!   followed (top-down, they are not known yet: an upper entry below one
//!   makes a directory there, as overlayfs shows it);
//! - a hard link in layer L names the inode its target had at that point of
//!   L's extraction: an earlier entry of L, or the target's newest version
//!   in the layers below L. If the target was replaced later (by an upper
//!   layer, or later in L), the link keeps the old content: the flattener
//!   then writes that content at the link's own path (when the target is
//!   reached further down, or, when the target is an earlier shadowed entry
//!   of the same layer, by re-reading that layer at the end: see
//!   [`Flattener::end_layer`]).
//!
//! The state is one small record per decided path (memory bounded by the
//! entry count, never by data size). No I/O other than the sink.

use super::entry::{LayerPath, Resolved, ancestors, resolve_parents, split_parent};
use super::sink::{EntryMeta, SinkError, SpecialKind, StoredSource, TreeSink};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

/// cairn's own directory in the image; layers' entries there are dropped.
pub const CAIRN_DIR: &[u8] = b".cairn";

/// Is `path` (normalised) cairn's own directory or inside it?
pub fn is_cairn_own(path: &[u8]) -> bool {
    path == CAIRN_DIR
        || path
            .strip_prefix(CAIRN_DIR)
            .is_some_and(|r| r.starts_with(b"/"))
}

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("layer {layer}: entry {path}: writing it")]
    Sink {
        layer: String,
        path: String,
        #[source]
        source: SinkError,
    },
    #[error(
        "layer {layer}: entry {path}: truncated: header says {expected} bytes, stream gave {got}"
    )]
    Truncated {
        layer: String,
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("layer {layer}: entry {path} appears twice")]
    Duplicate { layer: String, path: String },
    #[error("layer {layer}: entry {path} lies below {parent}, a non-directory of the same layer")]
    UnderNonDirectory {
        layer: String,
        path: String,
        parent: String,
    },
    #[error(
        "layer {layer}: entry {path}: more than {} symbolic links on the way",
        super::entry::MAX_SYMLINKS
    )]
    SymlinkLoop { layer: String, path: String },
    #[error("layer {layer}: hard link {path} points at directory {target}")]
    HardlinkToDirectory {
        layer: String,
        path: String,
        target: String,
    },
    #[error("layer {layer}: hard link {path} points at {target}, which does not exist")]
    HardlinkMissing {
        layer: String,
        path: String,
        target: String,
    },
}

fn show(p: &[u8]) -> String {
    if p.is_empty() {
        "/".to_owned()
    } else {
        String::from_utf8_lossy(p).into_owned()
    }
}

/// `path` itself and the keys below it, in a map keyed by normalised paths
/// (the subtree of `a` is `a` and `a/`..`a0`: '0' follows '/').
fn subtree<'m, V>(
    map: &'m BTreeMap<Vec<u8>, V>,
    path: &[u8],
) -> impl Iterator<Item = &'m Vec<u8>> + 'm {
    let (below_start, below_end) = below_bounds(path);
    let own = map.get_key_value(path).map(|(k, _)| k);
    own.into_iter()
        .chain(map.range(below_start..below_end).map(|(k, _)| k))
}

fn below_bounds(path: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = path.to_vec();
    let mut end = path.to_vec();
    start.push(b'/');
    end.push(b'/' + 1);
    (start, end)
}

/// What a layer entry is (after whiteouts were told apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
    },
    Symlink(Vec<u8>),
    /// A hard link to another (normalised) path.
    Hardlink(Vec<u8>),
    Special(SpecialKind),
}

/// One item of a layer, in the order of its tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerItem {
    Entry {
        path: Vec<u8>,
        kind: EntryKind,
        meta: EntryMeta,
    },
    Whiteout(Vec<u8>),
    Opaque(Vec<u8>),
    Ignore,
}

/// The decision recorded for a path; `layer` counts from the bottom (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A directory; `filled` once its own metadata was given to the sink.
    Dir { layer: usize, filled: bool },
    /// A non-directory was decided here.
    Other { layer: usize },
    /// Deleted for the layers below `layer`.
    Whiteout { layer: usize },
}

impl Node {
    fn layer(self) -> usize {
        match self {
            Node::Dir { layer, .. } | Node::Other { layer } | Node::Whiteout { layer } => layer,
        }
    }
}

/// What to do with an entry of layer `l` at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Write it (the path is free).
    Write,
    /// A directory an upper layer (or this one) only implied: give it this
    /// entry's metadata.
    Fill,
    /// Replaces a whiteout of the same layer (the whiteout only hides lower layers).
    ReplaceWhiteout,
    /// Hidden by an upper layer.
    Shadowed,
}

/// What a path named by the current layer is, at this point of its stream.
#[derive(Debug, Clone)]
enum Seen {
    /// A non-directory: inode `.0` of [`LayerState::inodes`].
    Inode(usize),
    /// A hard link to a path as the layers below have it.
    Lower(Vec<u8>),
    /// A directory; `wrote_meta` once its metadata went to the sink.
    Dir { wrote_meta: bool },
}

#[derive(Debug, Clone)]
enum Inline {
    Symlink(Vec<u8>),
    Special(SpecialKind),
}

/// How an inode of the current layer can be made again when no name of it
/// is left in the sink.
#[derive(Debug, Clone)]
enum Origin {
    /// Item `ordinal` of the layer, a regular file: re-read at the end.
    File { ordinal: u64 },
    /// A symlink or special file: small, kept (boxed: most inodes are
    /// files, and a layer keeps one record per inode).
    Inline(Box<(Inline, EntryMeta)>),
}

/// An inode of the current layer (a non-directory entry and the hard links
/// to it).
#[derive(Debug, Clone)]
struct LayerInode {
    origin: Origin,
    /// Its names in the sink (or, when `deferred`, waiting for the re-read).
    names: Vec<Vec<u8>>,
    /// Its content comes from re-reading the layer ([`Fixup`]).
    deferred: bool,
}

#[derive(Debug, Clone)]
struct PendingLink {
    layer: usize,
    path: Vec<u8>,
}

/// The current layer's view of its own stream; cleared by
/// [`Flattener::begin_layer`].
#[derive(Debug, Default)]
struct LayerState {
    /// Every path the layer's entries named (after resolution).
    seen: BTreeMap<Vec<u8>, Seen>,
    inodes: Vec<LayerInode>,
    /// Paths whose node the layer set without naming them (implied
    /// directories, whiteouts), to take back what a later entry replaces
    /// (what it named is in `seen`).
    touched: BTreeMap<Vec<u8>, ()>,
    /// Upper layers' hard links given to a path of this layer, to hand
    /// them on if a later entry replaces it.
    attached: HashMap<Vec<u8>, Vec<PendingLink>>,
}

impl LayerState {
    fn lookup(&self, path: &[u8]) -> LayerPath {
        match self.seen.get(path) {
            Some(Seen::Inode(id)) => match &self.inodes[*id].origin {
                Origin::Inline(inline) => match &inline.0 {
                    Inline::Symlink(target) => LayerPath::Symlink(target.clone()),
                    Inline::Special(_) => LayerPath::NonDirectory,
                },
                Origin::File { .. } => LayerPath::NonDirectory,
            },
            Some(Seen::Lower(_)) => LayerPath::NonDirectory,
            Some(Seen::Dir { .. }) | None => LayerPath::Directory,
        }
    }

    /// Is an ancestor of `path` a non-directory of this layer?
    fn below_non_directory(&self, path: &[u8]) -> bool {
        ancestors(path).any(|a| matches!(self.seen.get(a), Some(Seen::Inode(_) | Seen::Lower(_))))
    }
}

/// Content of a shadowed file of a layer that hard links of the same layer
/// need: re-read item `ordinal` of layer `layer`, write it at `names[0]`,
/// link the other names to it ([`Flattener::apply_fixup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixup {
    pub layer: usize,
    pub ordinal: u64,
    pub names: Vec<Vec<u8>>,
}

/// Fixups by the ordinal of the item each needs (index into `fixups`).
pub fn fixup_index(fixups: &[Fixup]) -> HashMap<u64, usize> {
    fixups
        .iter()
        .enumerate()
        .map(|(i, f)| (f.ordinal, i))
        .collect()
}

#[derive(Debug, Default)]
pub struct Flattener {
    nodes: HashMap<Vec<u8>, Node>,
    /// Directory -> the highest layer whose opaque marker hides lower children.
    opaque: HashMap<Vec<u8>, usize>,
    /// Hard-link target -> links from upper layers waiting for its content.
    pending: HashMap<Vec<u8>, Vec<PendingLink>>,
    labels: Vec<String>,
    layer: usize,
    current: LayerState,
    /// The stored form of the entry being fed, offered to the sink.
    stored: Option<StoredSource>,
}

/// Counts what is read, to catch streams shorter than their header says.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    count: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl Flattener {
    /// A flattener for layers labelled (for errors) bottom first.
    pub fn new(labels: Vec<String>) -> Flattener {
        Flattener {
            labels,
            ..Flattener::default()
        }
    }

    fn label(&self, layer: usize) -> String {
        self.labels
            .get(layer)
            .cloned()
            .unwrap_or_else(|| format!("#{layer}"))
    }

    /// Starts layer `layer` (0 = bottom). Layers must come top first.
    pub fn begin_layer(&mut self, layer: usize) {
        self.layer = layer;
        self.current = LayerState::default();
    }

    /// Ends the current layer; returns the shadowed files whose content
    /// hard links of this layer still need (rare: a link in layer L to a
    /// file of L that an upper layer, or a later entry of L, replaced).
    pub fn end_layer(&mut self) -> Vec<Fixup> {
        let state = std::mem::take(&mut self.current);
        let mut fixups: Vec<Fixup> = state
            .inodes
            .into_iter()
            .filter(|i| i.deferred && !i.names.is_empty())
            .filter_map(|i| match i.origin {
                Origin::File { ordinal } => Some(Fixup {
                    layer: self.layer,
                    ordinal,
                    names: i.names,
                }),
                Origin::Inline(..) => None,
            })
            .collect();
        fixups.sort_by_key(|f| f.ordinal);
        fixups
    }

    /// Writes a fixup's content (item `fixup.ordinal` of its layer, read again).
    pub fn apply_fixup(
        &mut self,
        sink: &mut dyn TreeSink,
        fixup: &Fixup,
        meta: EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), FlattenError> {
        let Some((first, rest)) = fixup.names.split_first() else {
            return Ok(());
        };
        self.write_file(sink, fixup.layer, first, meta, size, data)?;
        for name in rest {
            self.sink_link(sink, fixup.layer, name, first)?;
        }
        Ok(())
    }

    /// Whether the flattened tree has something (not deleted) at `path`.
    pub fn exists(&self, path: &[u8]) -> bool {
        matches!(
            self.nodes.get(path),
            Some(Node::Dir { .. } | Node::Other { .. })
        )
    }

    /// Whether `path` is a directory of the flattened tree (possibly implied).
    pub fn is_dir(&self, path: &[u8]) -> bool {
        matches!(self.nodes.get(path), Some(Node::Dir { .. }))
    }

    /// Whether an entry could be added at `path`: nothing there and no
    /// ancestor is a non-directory or deleted.
    pub fn can_add(&self, path: &[u8]) -> bool {
        !self.exists(path)
            && ancestors(path).all(|a| !matches!(self.nodes.get(a), Some(Node::Other { .. })))
    }

    /// After the last layer: every hard link must have found its target.
    pub fn finish(&self) -> Result<(), FlattenError> {
        let mut missing: Vec<(&Vec<u8>, &PendingLink)> = self
            .pending
            .iter()
            .flat_map(|(t, links)| links.iter().map(move |l| (t, l)))
            .collect();
        missing.sort_by(|a, b| {
            (a.1.layer, &a.1.path)
                .cmp(&(b.1.layer, &b.1.path))
                .reverse()
        });
        match missing.first() {
            Some((target, link)) => Err(FlattenError::HardlinkMissing {
                layer: self.label(link.layer),
                path: show(&link.path),
                target: show(target),
            }),
            None => Ok(()),
        }
    }

    /// Records a decision no entry of the layer names (an implied
    /// directory, a whiteout), remembering that this layer made it.
    fn set_node(&mut self, path: &[u8], node: Node) {
        if node.layer() == self.layer {
            self.current.touched.insert(path.to_vec(), ());
        }
        self.nodes.insert(path.to_vec(), node);
    }

    /// Is `path` (an entry of layer `l`) hidden by an ancestor decided by an
    /// upper layer?
    fn hidden_by_ancestor(&self, path: &[u8], l: usize) -> Result<bool, FlattenError> {
        for a in ancestors(path) {
            match self.nodes.get(a) {
                Some(Node::Other { layer } | Node::Whiteout { layer }) if *layer > l => {
                    return Ok(true);
                }
                Some(Node::Other { .. }) => {
                    return Err(FlattenError::UnderNonDirectory {
                        layer: self.label(l),
                        path: show(path),
                        parent: show(a),
                    });
                }
                _ => {}
            }
            if self.opaque.get(a).is_some_and(|m| *m > l) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn decide(&self, path: &[u8], is_dir: bool, l: usize) -> Result<Decision, FlattenError> {
        if self.hidden_by_ancestor(path, l)? {
            return Ok(Decision::Shadowed);
        }
        Ok(match self.nodes.get(path) {
            None => Decision::Write,
            Some(node) if node.layer() > l => match node {
                Node::Dir { filled: false, .. } if is_dir => Decision::Fill,
                _ => Decision::Shadowed,
            },
            // Implied by this layer (or marked by its whiteout): no entry
            // of the layer gave its metadata yet.
            Some(Node::Dir { .. }) if is_dir => Decision::Fill,
            Some(Node::Whiteout { .. }) => Decision::ReplaceWhiteout,
            // This layer's earlier entry here was taken back first
            // (`retract`): never reached.
            Some(_) => {
                return Err(FlattenError::Duplicate {
                    layer: self.label(l),
                    path: show(path),
                });
            }
        })
    }

    /// Records the ancestors of a path written by layer `l` as directories
    /// (implied ones until a layer gives their metadata).
    fn mark_ancestors(&mut self, path: &[u8], l: usize) {
        for a in ancestors(path) {
            match self.nodes.get(a) {
                Some(Node::Dir { .. }) => {}
                Some(Node::Whiteout { layer }) if *layer == l => {
                    // Deleted and re-created by the same layer: a fresh
                    // directory, lower layers' content stays hidden.
                    self.opaque.entry(a.to_vec()).or_insert(l);
                    self.set_node(
                        a,
                        Node::Dir {
                            layer: l,
                            filled: false,
                        },
                    );
                }
                _ => {
                    self.set_node(
                        a,
                        Node::Dir {
                            layer: l,
                            filled: false,
                        },
                    );
                }
            }
        }
    }

    /// [`Flattener::entry`] for a file that `stored` holds in its stored
    /// form: the sink may copy that instead of reading `data`.
    pub fn entry_stored(
        &mut self,
        sink: &mut dyn TreeSink,
        ordinal: u64,
        item: LayerItem,
        data: &mut dyn Read,
        stored: StoredSource,
    ) -> Result<(), FlattenError> {
        self.stored = Some(stored);
        let result = self.entry(sink, ordinal, item, data);
        self.stored = None;
        result
    }

    /// Feeds one item of the current layer. `data` is the entry's content
    /// (read only if the entry is written); `ordinal` its index in the layer.
    pub fn entry(
        &mut self,
        sink: &mut dyn TreeSink,
        ordinal: u64,
        item: LayerItem,
        data: &mut dyn Read,
    ) -> Result<(), FlattenError> {
        let l = self.layer;
        match item {
            LayerItem::Ignore => Ok(()),
            LayerItem::Whiteout(path) => self.whiteout(&path, l),
            LayerItem::Opaque(dir) => self.opaque_marker(&dir, l),
            LayerItem::Entry { path, kind, meta } => {
                let path = self.resolve_entry_path(path)?;
                let kind = match kind {
                    EntryKind::Hardlink(target) => {
                        EntryKind::Hardlink(self.resolve_link_target(&path, &target)?)
                    }
                    kind => kind,
                };
                if is_cairn_own(&path) {
                    tracing::debug!(path = %show(&path), "dropping a layer entry in cairn's own directory");
                    return Ok(());
                }
                self.layer_entry(sink, ordinal, path, kind, meta, data)
            }
        }
    }

    /// Where an entry's `path` lands through the layer's symlinks.
    fn resolve_entry_path(&self, path: Vec<u8>) -> Result<Vec<u8>, FlattenError> {
        // Nearly always no parent is a non-directory of the layer.
        let plain = |a: &[u8]| matches!(self.current.seen.get(a), None | Some(Seen::Dir { .. }));
        if ancestors(&path).all(plain) {
            return Ok(path);
        }
        match resolve_parents(&path, |p| self.current.lookup(p)) {
            Resolved::At(p) => Ok(p),
            Resolved::BelowNonDirectory(parent) => Err(FlattenError::UnderNonDirectory {
                layer: self.label(self.layer),
                path: show(&path),
                parent: show(&parent),
            }),
            Resolved::Loop => Err(FlattenError::SymlinkLoop {
                layer: self.label(self.layer),
                path: show(&path),
            }),
        }
    }

    /// A hard link's target, its parents resolved as umoci resolves them
    /// (the last component is not followed: a link may name a symlink).
    fn resolve_link_target(&self, link: &[u8], target: &[u8]) -> Result<Vec<u8>, FlattenError> {
        match resolve_parents(target, |p| self.current.lookup(p)) {
            Resolved::At(p) => Ok(p),
            Resolved::BelowNonDirectory(_) => Err(FlattenError::HardlinkMissing {
                layer: self.label(self.layer),
                path: show(link),
                target: show(target),
            }),
            Resolved::Loop => Err(FlattenError::SymlinkLoop {
                layer: self.label(self.layer),
                path: show(target),
            }),
        }
    }

    fn whiteout(&mut self, path: &[u8], l: usize) -> Result<(), FlattenError> {
        // Below a non-directory of this layer there is nothing of the
        // lower layers left to hide (umoci repack writes such whiteouts
        // for the children of a directory it replaced by a symlink).
        if self.current.below_non_directory(path) || self.hidden_by_ancestor(path, l)? {
            return Ok(());
        }
        self.break_pending(path, true, l)?;
        match self.nodes.get(path).copied() {
            None => self.set_node(path, Node::Whiteout { layer: l }),
            Some(Node::Dir { layer, .. }) => {
                // The directory above was created after this deletion: the
                // lower layers' content and metadata must not show through.
                self.opaque.entry(path.to_vec()).or_insert(l);
                self.set_node(
                    path,
                    Node::Dir {
                        layer,
                        filled: true,
                    },
                );
            }
            Some(Node::Other { .. } | Node::Whiteout { .. }) => {}
        }
        Ok(())
    }

    fn opaque_marker(&mut self, dir: &[u8], l: usize) -> Result<(), FlattenError> {
        let marker = super::entry::join(dir, b".wh..wh..opq");
        if self.current.below_non_directory(&marker) || self.hidden_by_ancestor(dir, l)? {
            return Ok(());
        }
        match self.nodes.get(dir) {
            Some(Node::Other { layer } | Node::Whiteout { layer }) if *layer > l => {
                return Ok(());
            }
            _ => {}
        }
        self.break_pending(dir, false, l)?;
        self.opaque.entry(dir.to_vec()).or_insert(l);
        // The marker lives in the directory: it exists in this layer.
        self.mark_ancestors(&marker, l);
        Ok(())
    }

    /// Hard links of upper layers whose target is deleted (at or below
    /// `path`; strictly below unless `inclusive`) by layer `l` found no
    /// target: the target did not exist when their layer was extracted.
    fn break_pending(&self, path: &[u8], inclusive: bool, l: usize) -> Result<(), FlattenError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        for (target, links) in &self.pending {
            let below = target.len() > path.len()
                && target.starts_with(path)
                && (path.is_empty() || target[path.len()] == b'/');
            if below || (inclusive && target.as_slice() == path) {
                if let Some(link) = links.iter().find(|k| k.layer > l) {
                    return Err(FlattenError::HardlinkMissing {
                        layer: self.label(link.layer),
                        path: show(&link.path),
                        target: show(target),
                    });
                }
            }
        }
        Ok(())
    }

    /// Takes the upper layers' links waiting for `target` (their layer > l).
    fn take_pending(&mut self, target: &[u8], l: usize) -> Vec<PendingLink> {
        let Some(links) = self.pending.get_mut(target) else {
            return Vec::new();
        };
        let (upper, keep): (Vec<PendingLink>, Vec<PendingLink>) =
            links.drain(..).partition(|k| k.layer > l);
        if keep.is_empty() {
            self.pending.remove(target);
        } else {
            *links = keep;
        }
        upper
    }

    /// Does the current layer already have something at or below `path`
    /// (an entry, or a directory it implied)?
    fn layer_has_at_or_below(&self, path: &[u8]) -> bool {
        let l = self.layer;
        if self.current.seen.contains_key(path) {
            return true;
        }
        // The first key from `path/` on is below `path` if anything is
        // (one lookup for every non-directory entry: keep it cheap).
        let mut below = Vec::with_capacity(path.len() + 1);
        below.extend_from_slice(path);
        below.push(b'/');
        self.current
            .seen
            .range::<[u8], _>((
                std::ops::Bound::Included(below.as_slice()),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|(k, _)| k.starts_with(&below))
            || !self.current.touched.is_empty()
                && subtree(&self.current.touched, path).any(|k| {
                    matches!(
                        self.nodes.get(k),
                        Some(Node::Dir { layer, .. } | Node::Other { layer }) if *layer == l
                    )
                })
    }

    /// Takes back what the current layer put at and below `path`, for a
    /// later entry of the layer that replaces it: its names leave the sink
    /// (an inode keeps its other names), its hard links to lower layers
    /// stop waiting, upper layers' links to it wait again (for the entry
    /// replacing it), and the lower layers' content there stays hidden.
    fn retract(&mut self, sink: &mut dyn TreeSink, path: &[u8]) -> Result<(), FlattenError> {
        let l = self.layer;
        let named: Vec<Vec<u8>> = subtree(&self.current.seen, path).cloned().collect();
        for key in named.iter().cloned() {
            let seen = self.current.seen.remove(&key);
            let uppers = self.current.attached.remove(&key).unwrap_or_default();
            let mut names: Vec<Vec<u8>> = uppers.iter().map(|u| u.path.clone()).collect();
            if matches!(self.nodes.get(&key), Some(Node::Other { layer }) if *layer == l) {
                names.push(key.clone());
            }
            match seen {
                Some(Seen::Inode(id)) => {
                    let inode = &mut self.current.inodes[id];
                    inode.names.retain(|n| !names.contains(n));
                    if !inode.deferred {
                        for name in &names {
                            sink.remove(name).map_err(|e| self.sink_err(l, name, e))?;
                        }
                    }
                }
                Some(Seen::Lower(target)) => {
                    if let Some(links) = self.pending.get_mut(&target) {
                        links.retain(|k| !names.contains(&k.path));
                        if links.is_empty() {
                            self.pending.remove(&target);
                        }
                    }
                }
                Some(Seen::Dir { .. }) | None => {}
            }
            if !uppers.is_empty() {
                self.pending.entry(key).or_default().extend(uppers);
            }
        }
        let mut decided: Vec<Vec<u8>> = subtree(&self.current.touched, path).cloned().collect();
        decided.extend(named);
        for key in decided {
            self.current.touched.remove(&key);
            match self.nodes.get(&key).copied() {
                Some(Node::Dir { layer, .. }) if layer == l => {
                    // A directory this layer made holds nothing of other
                    // layers yet (upper ones would own it, lower ones come
                    // later): it goes with all it holds.
                    sink.remove(&key).map_err(|e| self.sink_err(l, &key, e))?;
                    self.nodes.remove(&key);
                }
                Some(node) if node.layer() == l => {
                    self.nodes.remove(&key);
                }
                _ => {}
            }
        }
        self.opaque.entry(path.to_vec()).or_insert(l);
        Ok(())
    }

    fn sink_err(&self, l: usize, path: &[u8], source: SinkError) -> FlattenError {
        FlattenError::Sink {
            layer: self.label(l),
            path: show(path),
            source,
        }
    }

    fn sink_link(
        &self,
        sink: &mut dyn TreeSink,
        l: usize,
        name: &[u8],
        target: &[u8],
    ) -> Result<(), FlattenError> {
        sink.hardlink(name, target)
            .map_err(|e| self.sink_err(l, name, e))
    }

    fn write_file(
        &mut self,
        sink: &mut dyn TreeSink,
        l: usize,
        path: &[u8],
        meta: EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), FlattenError> {
        if let Some(stored) = self.stored.take() {
            let copied = sink
                .stored_file(path, &meta, &stored)
                .map_err(|e| self.sink_err(l, path, e))?;
            match copied {
                Some(n) if n == size => return Ok(()),
                Some(n) => {
                    return Err(FlattenError::Truncated {
                        layer: self.label(l),
                        path: show(path),
                        expected: size,
                        got: n,
                    });
                }
                None => {}
            }
        }
        let mut counting = Counting {
            inner: data,
            count: 0,
        };
        sink.file(path, meta, &mut counting)
            .map_err(|e| self.sink_err(l, path, e))?;
        if counting.count != size {
            return Err(FlattenError::Truncated {
                layer: self.label(l),
                path: show(path),
                expected: size,
                got: counting.count,
            });
        }
        Ok(())
    }

    fn write_inline(
        &self,
        sink: &mut dyn TreeSink,
        l: usize,
        path: &[u8],
        inline: &Inline,
        meta: EntryMeta,
    ) -> Result<(), FlattenError> {
        match inline {
            Inline::Symlink(target) => sink.symlink(path, meta, target),
            Inline::Special(kind) => sink.special(path, meta, *kind),
        }
        .map_err(|e| self.sink_err(l, path, e))
    }

    /// Gives inode `id` of the current layer the extra `names`.
    fn link_names(
        &mut self,
        sink: &mut dyn TreeSink,
        id: usize,
        names: Vec<Vec<u8>>,
    ) -> Result<(), FlattenError> {
        let l = self.layer;
        let Some((first_new, rest_new)) = names.split_first() else {
            return Ok(());
        };
        let inode = &self.current.inodes[id];
        if inode.deferred {
            self.current.inodes[id].names.extend(names);
            return Ok(());
        }
        if let Some(first) = inode.names.first().cloned() {
            for n in &names {
                self.sink_link(sink, l, n, &first)?;
            }
        } else {
            // No name of it is left in the sink: make it again.
            match inode.origin.clone() {
                Origin::File { .. } => self.current.inodes[id].deferred = true,
                Origin::Inline(inline) => {
                    let (inline, meta) = *inline;
                    self.write_inline(sink, l, first_new, &inline, meta)?;
                    for n in rest_new {
                        self.sink_link(sink, l, n, first_new)?;
                    }
                }
            }
        }
        self.current.inodes[id].names.extend(names);
        Ok(())
    }

    fn layer_entry(
        &mut self,
        sink: &mut dyn TreeSink,
        ordinal: u64,
        path: Vec<u8>,
        kind: EntryKind,
        meta: EntryMeta,
        data: &mut dyn Read,
    ) -> Result<(), FlattenError> {
        let l = self.layer;
        let is_dir = kind == EntryKind::Dir;
        // A later entry of this layer for the same path wins.
        match self.current.seen.get(&path) {
            Some(Seen::Dir { wrote_meta }) if is_dir => {
                if *wrote_meta {
                    sink.update_dir(&path, meta)
                        .map_err(|e| self.sink_err(l, &path, e))?;
                }
                return Ok(());
            }
            Some(_) if is_dir => self.retract(sink, &path)?,
            _ if !is_dir && self.layer_has_at_or_below(&path) => self.retract(sink, &path)?,
            _ => {}
        }
        let decision = self.decide(&path, is_dir, l)?;
        let visible = !matches!(decision, Decision::Shadowed);
        if visible && decision != Decision::Fill {
            self.mark_ancestors(&path, l);
        }
        if is_dir {
            return self.layer_dir(sink, path, meta, decision);
        }
        // Whatever upper layers stored below a path that is a
        // non-directory here could not have been linked to from above.
        self.break_pending(&path, false, l)?;
        let upper_links = self.take_pending(&path, l);
        let mut names = Vec::with_capacity(1 + upper_links.len());
        if visible {
            self.nodes.insert(path.clone(), Node::Other { layer: l });
            names.push(path.clone());
        }
        names.extend(upper_links.iter().map(|k| k.path.clone()));
        let seen = match kind {
            EntryKind::File { size } => {
                if let Some((first, rest)) = names.split_first() {
                    self.write_file(sink, l, first, meta, size, data)?;
                    for n in rest {
                        self.sink_link(sink, l, n, first)?;
                    }
                }
                self.new_inode(Origin::File { ordinal }, names)
            }
            EntryKind::Symlink(_) | EntryKind::Special(_) => {
                let inline = match kind {
                    EntryKind::Symlink(target) => Inline::Symlink(target),
                    EntryKind::Special(k) => Inline::Special(k),
                    _ => return Ok(()),
                };
                if let Some((first, rest)) = names.split_first() {
                    self.write_inline(sink, l, first, &inline, meta.clone())?;
                    for n in rest {
                        self.sink_link(sink, l, n, first)?;
                    }
                }
                self.new_inode(Origin::Inline(Box::new((inline, meta))), names)
            }
            EntryKind::Hardlink(target) => match self.current.seen.get(&target).cloned() {
                Some(Seen::Inode(id)) => {
                    self.link_names(sink, id, names)?;
                    Seen::Inode(id)
                }
                Some(Seen::Dir { .. }) => {
                    return Err(FlattenError::HardlinkToDirectory {
                        layer: self.label(l),
                        path: show(&path),
                        target: show(&target),
                    });
                }
                Some(Seen::Lower(lower)) => self.wait_for_lower(lower, names),
                None => self.wait_for_lower(target, names),
            },
            EntryKind::Dir => return Ok(()),
        };
        if !upper_links.is_empty() {
            self.current.attached.insert(path.clone(), upper_links);
        }
        self.current.seen.insert(path, seen);
        Ok(())
    }

    fn new_inode(&mut self, origin: Origin, names: Vec<Vec<u8>>) -> Seen {
        self.current.inodes.push(LayerInode {
            origin,
            names,
            deferred: false,
        });
        Seen::Inode(self.current.inodes.len() - 1)
    }

    /// Names a hard link gives to `target` of the layers below.
    fn wait_for_lower(&mut self, target: Vec<u8>, names: Vec<Vec<u8>>) -> Seen {
        let l = self.layer;
        if !names.is_empty() {
            let links = self.pending.entry(target.clone()).or_default();
            links.extend(names.into_iter().map(|path| PendingLink { layer: l, path }));
        }
        Seen::Lower(target)
    }

    fn layer_dir(
        &mut self,
        sink: &mut dyn TreeSink,
        path: Vec<u8>,
        meta: EntryMeta,
        decision: Decision,
    ) -> Result<(), FlattenError> {
        let l = self.layer;
        if let Some(first) = self.take_pending(&path, l).first() {
            return Err(FlattenError::HardlinkToDirectory {
                layer: self.label(first.layer),
                path: show(&first.path),
                target: show(&path),
            });
        }
        let wrote_meta = decision != Decision::Shadowed;
        if wrote_meta {
            sink.dir(&path, meta)
                .map_err(|e| self.sink_err(l, &path, e))?;
            if decision == Decision::ReplaceWhiteout {
                self.opaque.entry(path.clone()).or_insert(l);
            }
            let layer = match self.nodes.get(&path) {
                Some(Node::Dir { layer, .. }) => *layer,
                _ => l,
            };
            self.nodes.insert(
                path.clone(),
                Node::Dir {
                    layer,
                    filled: true,
                },
            );
        }
        self.current.seen.insert(path, Seen::Dir { wrote_meta });
        Ok(())
    }

    /// Adds `path` as an empty directory or file if the flattened tree
    /// lacks it and it can be added (used for the runtime's mount points).
    pub fn ensure(
        &mut self,
        sink: &mut dyn TreeSink,
        path: &[u8],
        is_dir: bool,
        meta: EntryMeta,
    ) -> Result<bool, FlattenError> {
        if !self.can_add(path) {
            return Ok(false);
        }
        if let Some((parent, _)) = split_parent(path) {
            if !parent.is_empty() && !self.is_dir(parent) && self.exists(parent) {
                return Ok(false);
            }
        }
        let top = self.labels.len();
        self.mark_ancestors(path, top);
        if is_dir {
            sink.dir(path, meta)
                .map_err(|e| self.sink_err(top, path, e))?;
            self.nodes.insert(
                path.to_vec(),
                Node::Dir {
                    layer: top,
                    filled: true,
                },
            );
        } else {
            self.write_file(sink, top, path, meta, 0, &mut io::empty())?;
            self.nodes.insert(path.to_vec(), Node::Other { layer: top });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sink::{MemoryNode, MemorySink};

    type Layer = Vec<(LayerItem, Vec<u8>)>;

    fn meta(mode: u16) -> EntryMeta {
        EntryMeta {
            mode,
            ..EntryMeta::default()
        }
    }

    fn dir(p: &str) -> (LayerItem, Vec<u8>) {
        dir_mode(p, 0o755)
    }

    fn dir_mode(p: &str, mode: u16) -> (LayerItem, Vec<u8>) {
        (
            LayerItem::Entry {
                path: p.as_bytes().to_vec(),
                kind: EntryKind::Dir,
                meta: meta(mode),
            },
            Vec::new(),
        )
    }

    fn file(p: &str, data: &str) -> (LayerItem, Vec<u8>) {
        (
            LayerItem::Entry {
                path: p.as_bytes().to_vec(),
                kind: EntryKind::File {
                    size: data.len() as u64,
                },
                meta: meta(0o644),
            },
            data.as_bytes().to_vec(),
        )
    }

    fn symlink(p: &str, t: &str) -> (LayerItem, Vec<u8>) {
        (
            LayerItem::Entry {
                path: p.as_bytes().to_vec(),
                kind: EntryKind::Symlink(t.as_bytes().to_vec()),
                meta: meta(0o777),
            },
            Vec::new(),
        )
    }

    fn fifo(p: &str) -> (LayerItem, Vec<u8>) {
        (
            LayerItem::Entry {
                path: p.as_bytes().to_vec(),
                kind: EntryKind::Special(SpecialKind::Fifo),
                meta: meta(0o600),
            },
            Vec::new(),
        )
    }

    fn link(p: &str, t: &str) -> (LayerItem, Vec<u8>) {
        (
            LayerItem::Entry {
                path: p.as_bytes().to_vec(),
                kind: EntryKind::Hardlink(t.as_bytes().to_vec()),
                meta: meta(0),
            },
            Vec::new(),
        )
    }

    fn wh(p: &str) -> (LayerItem, Vec<u8>) {
        (LayerItem::Whiteout(p.as_bytes().to_vec()), Vec::new())
    }

    fn opq(p: &str) -> (LayerItem, Vec<u8>) {
        (LayerItem::Opaque(p.as_bytes().to_vec()), Vec::new())
    }

    /// Flattens layers given bottom first, re-reading layers for fixups.
    fn flatten(layers: &[Layer]) -> (MemorySink, Result<(), FlattenError>) {
        let mut sink = MemorySink::default();
        let labels = (0..layers.len()).map(|i| format!("L{i}")).collect();
        let mut f = Flattener::new(labels);
        let result = (|| {
            for (l, layer) in layers.iter().enumerate().rev() {
                f.begin_layer(l);
                for (i, (item, data)) in layer.iter().enumerate() {
                    f.entry(&mut sink, i as u64, item.clone(), &mut data.as_slice())?;
                }
                for fixup in f.end_layer() {
                    let (item, data) = &layer[usize::try_from(fixup.ordinal).expect("ordinal")];
                    let LayerItem::Entry { meta, .. } = item else {
                        panic!("fixup of a non-entry")
                    };
                    f.apply_fixup(
                        &mut sink,
                        &fixup,
                        meta.clone(),
                        data.len() as u64,
                        &mut data.as_slice(),
                    )?;
                }
            }
            f.finish()
        })();
        (sink, result)
    }

    fn ok(layers: &[Layer]) -> MemorySink {
        let (sink, r) = flatten(layers);
        r.expect("flatten");
        sink
    }

    fn paths(sink: &MemorySink) -> Vec<String> {
        sink.nodes
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn upper_file_wins_and_lower_data_is_never_written() {
        let s = ok(&[
            vec![dir("etc"), file("etc/a", "old"), file("etc/b", "b")],
            vec![file("etc/a", "new")],
        ]);
        assert_eq!(s.content("etc/a"), Some(&b"new"[..]));
        assert_eq!(s.content("etc/b"), Some(&b"b"[..]));
        assert_eq!(s.log.iter().filter(|l| *l == "file etc/a").count(), 1);
        assert_eq!(s.log.first().map(String::as_str), Some("file etc/a"));
    }

    #[test]
    fn whiteout_deletes_lower_entry_and_subtree() {
        let s = ok(&[
            vec![
                dir("a"),
                file("a/keep", "k"),
                file("a/gone", "g"),
                dir("d"),
                file("d/x", "x"),
            ],
            vec![wh("a/gone"), wh("d")],
        ]);
        assert_eq!(paths(&s), vec!["a", "a/keep"]);
        assert!(
            !s.log
                .iter()
                .any(|l| l.contains("gone") || l.contains("d/x"))
        );
    }

    #[test]
    fn whiteout_only_hides_lower_layers() {
        // Same-layer entry next to its own whiteout stays (OCI spec).
        let s = ok(&[vec![file("f", "low")], vec![wh("f"), file("f", "same")]]);
        assert_eq!(s.content("f"), Some(&b"same"[..]));
    }

    #[test]
    fn file_re_added_after_deletion() {
        let s = ok(&[
            vec![file("f", "one")],
            vec![wh("f")],
            vec![file("f", "three")],
        ]);
        assert_eq!(s.content("f"), Some(&b"three"[..]));
        let s = ok(&[vec![file("f", "one")], vec![wh("f")], vec![]]);
        assert!(s.nodes.is_empty());
    }

    #[test]
    fn opaque_directory_hides_lower_children_only() {
        let s = ok(&[
            vec![dir_mode("d", 0o700), file("d/old", "o"), file("e", "e")],
            vec![dir_mode("d", 0o750), opq("d"), file("d/new", "n")],
        ]);
        assert_eq!(paths(&s), vec!["d", "d/new", "e"]);
        assert_eq!(s.nodes.get(&b"d"[..]), Some(&MemoryNode::Dir(meta(0o750))));
    }

    #[test]
    fn opaque_root_hides_everything_below() {
        let s = ok(&[vec![file("a", "a")], vec![opq(""), file("b", "b")]]);
        assert_eq!(paths(&s), vec!["b"]);
    }

    #[test]
    fn implied_directory_takes_lower_metadata() {
        let s = ok(&[
            vec![dir_mode("a", 0o700), dir_mode("a/b", 0o711)],
            vec![file("a/b/f", "f")],
        ]);
        assert_eq!(s.nodes.get(&b"a"[..]), Some(&MemoryNode::Dir(meta(0o700))));
        assert_eq!(
            s.nodes.get(&b"a/b"[..]),
            Some(&MemoryNode::Dir(meta(0o711)))
        );
    }

    #[test]
    fn upper_directory_metadata_wins() {
        let s = ok(&[
            vec![dir_mode("a", 0o700), file("a/x", "x")],
            vec![dir_mode("a", 0o755), file("a/y", "y")],
        ]);
        assert_eq!(s.nodes.get(&b"a"[..]), Some(&MemoryNode::Dir(meta(0o755))));
        assert_eq!(paths(&s), vec!["a", "a/x", "a/y"]);
    }

    #[test]
    fn symlink_replaces_directory_and_back() {
        let s = ok(&[
            vec![dir("x"), file("x/in", "i"), symlink("y", "x")],
            vec![wh("x"), symlink("x", "elsewhere"), wh("y"), dir("y")],
        ]);
        assert_eq!(paths(&s), vec!["x", "y"]);
        assert!(matches!(
            s.nodes.get(&b"x"[..]),
            Some(MemoryNode::Symlink(_, t)) if t == b"elsewhere"
        ));
        assert!(matches!(s.nodes.get(&b"y"[..]), Some(MemoryNode::Dir(_))));
        // Without whiteouts: an upper non-directory still hides the subtree.
        let s = ok(&[vec![dir("x"), file("x/in", "i")], vec![file("x", "f")]]);
        assert_eq!(paths(&s), vec!["x"]);
    }

    #[test]
    fn hard_link_within_a_layer() {
        let s = ok(&[vec![file("a", "data"), link("b", "a"), link("c", "b")]]);
        assert_eq!(
            s.nodes.get(&b"b"[..]),
            Some(&MemoryNode::Link(b"a".to_vec()))
        );
        assert_eq!(s.content("c"), Some(&b"data"[..]));
    }

    #[test]
    fn hard_link_to_a_lower_layer() {
        let s = ok(&[
            vec![file("bin/t", "tool"), fifo("p")],
            vec![link("bin/u", "bin/t"), link("q", "p")],
        ]);
        assert_eq!(s.content("bin/u"), Some(&b"tool"[..]));
        assert_eq!(
            s.nodes.get(&b"bin/u"[..]),
            Some(&MemoryNode::Link(b"bin/t".to_vec()))
        );
        assert!(matches!(
            s.node_at(b"q"),
            Some(MemoryNode::Special(_, SpecialKind::Fifo))
        ));
    }

    #[test]
    fn hard_link_keeps_content_its_target_had_in_its_layer() {
        // L1 links b -> a; L2 replaces a. b must keep L0's content.
        let s = ok(&[
            vec![file("a", "v0")],
            vec![link("b", "a")],
            vec![file("a", "v2")],
        ]);
        assert_eq!(s.content("a"), Some(&b"v2"[..]));
        assert_eq!(s.content("b"), Some(&b"v0"[..]));
        // The link names the newest version below it, not the bottom one.
        let s = ok(&[
            vec![file("a", "v0")],
            vec![file("a", "v1")],
            vec![link("b", "a")],
        ]);
        assert_eq!(s.content("b"), Some(&b"v1"[..]));
        assert_eq!(
            s.nodes.get(&b"b"[..]),
            Some(&MemoryNode::Link(b"a".to_vec()))
        );
    }

    #[test]
    fn hard_link_to_a_shadowed_entry_of_the_same_layer_is_re_read() {
        let s = ok(&[
            vec![file("a", "v0"), link("b", "a"), link("c", "a")],
            vec![wh("a")],
        ]);
        assert_eq!(paths(&s), vec!["b", "c"]);
        assert_eq!(s.content("b"), Some(&b"v0"[..]));
        assert_eq!(
            s.nodes.get(&b"c"[..]),
            Some(&MemoryNode::Link(b"b".to_vec()))
        );
    }

    #[test]
    fn hard_link_chain_across_layers() {
        let s = ok(&[
            vec![file("a", "v0")],
            vec![link("b", "a")],
            vec![link("c", "b"), file("a", "v2")],
        ]);
        assert_eq!(s.content("c"), Some(&b"v0"[..]));
        assert_eq!(s.content("b"), Some(&b"v0"[..]));
        assert_eq!(s.content("a"), Some(&b"v2"[..]));
    }

    #[test]
    fn hard_link_to_missing_or_directory_fails() {
        let (_, r) = flatten(&[vec![file("a", "a")], vec![link("b", "nope")]]);
        let e = r.expect_err("missing");
        assert!(matches!(e, FlattenError::HardlinkMissing { .. }), "{e}");
        assert!(
            e.to_string().contains("L1") && e.to_string().contains("nope"),
            "{e}"
        );
        let (_, r) = flatten(&[vec![file("a", "a")], vec![wh("a")], vec![link("b", "a")]]);
        assert!(matches!(r, Err(FlattenError::HardlinkMissing { .. })));
        let (_, r) = flatten(&[vec![dir("d")], vec![link("b", "d")]]);
        assert!(matches!(r, Err(FlattenError::HardlinkToDirectory { .. })));
        let (_, r) = flatten(&[vec![dir("d"), link("b", "d")]]);
        assert!(matches!(r, Err(FlattenError::HardlinkToDirectory { .. })));
    }

    #[test]
    fn shadowed_link_is_not_written() {
        let s = ok(&[vec![file("a", "a"), link("b", "a")], vec![wh("b")]]);
        assert_eq!(paths(&s), vec!["a"]);
    }

    #[test]
    fn entry_below_a_file_of_the_same_layer_fails() {
        let (_, r) = flatten(&[vec![file("a", "1"), file("a/b", "2")]]);
        let e = r.expect_err("below a file");
        assert!(
            matches!(&e, FlattenError::UnderNonDirectory { parent, .. } if parent == "a"),
            "{e}"
        );
        assert!(e.to_string().contains("L0"), "{e}");
    }

    fn meta_of(s: &MemorySink, p: &str) -> EntryMeta {
        match s.nodes.get(p.as_bytes()) {
            Some(MemoryNode::Dir(m) | MemoryNode::File(m, _) | MemoryNode::Symlink(m, _)) => {
                m.clone()
            }
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn a_later_entry_of_the_same_layer_wins() {
        // File then file.
        let s = ok(&[vec![file("a", "1"), file("a", "2")]]);
        assert_eq!(s.content("a"), Some(&b"2"[..]));
        // Directory then directory: merged, the later metadata wins.
        let s = ok(&[vec![
            dir_mode("d", 0o700),
            file("d/x", "x"),
            dir_mode("d", 0o750),
            file("d/y", "y"),
        ]]);
        assert_eq!(paths(&s), vec!["d", "d/x", "d/y"]);
        assert_eq!(meta_of(&s, "d").mode, 0o750);
        // The root named twice.
        let s = ok(&[vec![dir_mode("", 0o700), dir_mode("", 0o711)]]);
        assert_eq!(meta_of(&s, "").mode, 0o711);
    }

    #[test]
    fn a_later_entry_may_change_the_type() {
        // File then directory: the lower layer's directory stays hidden.
        let s = ok(&[
            vec![dir("a"), file("a/old", "o")],
            vec![file("a", "f"), dir_mode("a", 0o711), file("a/new", "n")],
        ]);
        assert_eq!(paths(&s), vec!["a", "a/new"]);
        assert_eq!(meta_of(&s, "a").mode, 0o711);
        // Directory (with children of the same layer) then file.
        let s = ok(&[
            vec![dir("a"), file("a/old", "o")],
            vec![
                dir("a"),
                file("a/x", "x"),
                symlink("a/s", "x"),
                file("a", "now a file"),
            ],
        ]);
        assert_eq!(paths(&s), vec!["a"]);
        assert_eq!(s.content("a"), Some(&b"now a file"[..]));
        // A directory only implied by a child, then a file.
        let s = ok(&[vec![file("b/c/x", "x"), file("b", "b")]]);
        assert_eq!(paths(&s), vec!["b"]);
        // Replaced under an upper layer's directory: only this layer's
        // children go; lower ones stay hidden, upper ones stay.
        let s = ok(&[
            vec![dir("m"), file("m/lowest", "l")],
            vec![dir("m"), file("m/mid", "m"), file("m", "file")],
            vec![dir("m"), file("m/top", "t")],
        ]);
        assert_eq!(paths(&s), vec!["m", "m/top"]);
    }

    #[test]
    fn hard_links_keep_the_inode_a_later_entry_replaced() {
        // umoci: the link names the inode its target had when it was made.
        let s = ok(&[vec![file("a", "v1"), link("b", "a"), file("a", "v2")]]);
        assert_eq!(s.content("a"), Some(&b"v2"[..]));
        assert_eq!(s.content("b"), Some(&b"v1"[..]));
        // A link made after the replacement names the new file.
        let s = ok(&[vec![file("a", "v1"), file("a", "v2"), link("c", "a")]]);
        assert_eq!(s.content("c"), Some(&b"v2"[..]));
        assert_eq!(
            s.nodes.get(&b"c"[..]),
            Some(&MemoryNode::Link(b"a".to_vec()))
        );
        // Through a link an upper layer deleted: still the old inode.
        let s = ok(&[
            vec![
                file("a", "v1"),
                link("l", "a"),
                file("a", "v2"),
                link("m", "l"),
            ],
            vec![wh("l")],
        ]);
        assert_eq!(s.content("m"), Some(&b"v1"[..]));
        assert_eq!(s.content("a"), Some(&b"v2"[..]));
        // Both versions shadowed by an upper layer: the link's content is
        // re-read from the layer.
        let s = ok(&[
            vec![file("a", "v1"), link("l", "a"), file("a", "v2")],
            vec![file("a", "top")],
        ]);
        assert_eq!(s.content("l"), Some(&b"v1"[..]));
        assert_eq!(s.content("a"), Some(&b"top"[..]));
    }

    #[test]
    fn a_replaced_link_waiting_for_a_re_read_is_dropped_from_it() {
        let (item_v1, _) = file("a", "v1");
        let s = ok(&[
            vec![file("a", "v1"), link("l", "a"), file("l", "own")],
            vec![file("a", "top")],
        ]);
        assert_eq!(s.content("l"), Some(&b"own"[..]));
        assert_eq!(s.content("a"), Some(&b"top"[..]));
        // No re-read was needed at all.
        let mut f = Flattener::new(vec!["L0".into(), "L1".into()]);
        let mut sink = MemorySink::default();
        f.begin_layer(1);
        let (top, _) = file("a", "top");
        f.entry(&mut sink, 0, top, &mut &b"top"[..]).expect("top");
        f.end_layer();
        f.begin_layer(0);
        f.entry(&mut sink, 0, item_v1, &mut &b"v1"[..]).expect("v1");
        let (l, _) = link("l", "a");
        f.entry(&mut sink, 1, l, &mut io::empty()).expect("link");
        let (own, _) = file("l", "own");
        f.entry(&mut sink, 2, own, &mut &b"own"[..]).expect("own");
        assert!(f.end_layer().is_empty());
    }

    #[test]
    fn an_opaque_marker_then_a_file_at_its_directory() {
        let s = ok(&[
            vec![dir("d"), file("d/lower", "l")],
            vec![opq("d"), file("d", "file")],
        ]);
        assert_eq!(paths(&s), vec!["d"]);
    }

    #[test]
    fn upper_links_follow_the_last_entry_of_a_path() {
        let s = ok(&[vec![file("a", "v1"), file("a", "v2")], vec![link("u", "a")]]);
        assert_eq!(s.content("u"), Some(&b"v2"[..]));
        // Also when the path itself is shadowed.
        let s = ok(&[
            vec![file("a", "v1"), file("a", "v2")],
            vec![link("u", "a"), file("a", "top")],
        ]);
        assert_eq!(s.content("u"), Some(&b"v2"[..]));
        // A link to what became a directory has no target.
        let (_, r) = flatten(&[vec![file("a", "v1"), dir("a")], vec![link("u", "a")]]);
        assert!(matches!(r, Err(FlattenError::HardlinkToDirectory { .. })));
        // A replaced hard link to a lower layer stops waiting for it.
        let s = ok(&[
            vec![file("t", "lower")],
            vec![link("a", "t"), file("a", "own")],
        ]);
        assert_eq!(s.content("a"), Some(&b"own"[..]));
        assert_eq!(s.content("t"), Some(&b"lower"[..]));
    }

    #[test]
    fn whiteouts_below_a_non_directory_of_their_layer_hide_nothing() {
        // What umoci repack writes for a directory replaced by a symlink.
        let s = ok(&[
            vec![
                dir("data"),
                dir("data/s"),
                file("data/s/t", "old"),
                dir("data/real"),
                file("data/real/t", "keep"),
            ],
            vec![
                dir("data"),
                symlink("data/s", "real"),
                wh("data/s/t"),
                opq("data/s"),
            ],
        ]);
        assert_eq!(
            paths(&s),
            vec!["data", "data/real", "data/real/t", "data/s"]
        );
        assert_eq!(s.content("data/real/t"), Some(&b"keep"[..]));
        // Below a file of the layer, too.
        let s = ok(&[vec![file("f/x", "x")], vec![file("f", "f"), wh("f/x")]]);
        assert_eq!(paths(&s), vec!["f"]);
    }

    #[test]
    fn entries_below_a_symlink_of_their_layer_land_where_it_leads() {
        let s = ok(&[
            vec![dir("data"), dir("data/real"), file("data/real/old", "o")],
            vec![symlink("data/s", "real"), file("data/s/new", "n")],
        ]);
        assert_eq!(s.content("data/real/new"), Some(&b"n"[..]));
        assert_eq!(s.content("data/real/old"), Some(&b"o"[..]));
        // Absolute and escaping targets stay inside the root.
        let s = ok(&[vec![
            symlink("a", "/opt"),
            file("a/x", "x"),
            symlink("b/c", "../../../../etc"),
            file("b/c/passwd", "p"),
        ]]);
        assert_eq!(s.content("opt/x"), Some(&b"x"[..]));
        assert_eq!(s.content("etc/passwd"), Some(&b"p"[..]));
        // Into cairn's own directory: dropped.
        let s = ok(&[vec![symlink("c", ".cairn"), file("c/image.json", "{}")]]);
        assert_eq!(paths(&s), vec!["c"]);
        // A hard link's target through one.
        let s = ok(&[vec![
            dir("d"),
            file("d/f", "f"),
            symlink("s", "d"),
            link("h", "s/f"),
        ]]);
        assert_eq!(s.content("h"), Some(&b"f"[..]));
        // A loop is refused.
        let (_, r) = flatten(&[vec![symlink("a", "b"), symlink("b", "a"), file("a/x", "x")]]);
        assert!(matches!(r, Err(FlattenError::SymlinkLoop { .. })));
        // Replaced before the entry: the symlink no longer leads anywhere.
        let s = ok(&[vec![symlink("a", "b"), dir("a"), file("a/x", "x")]]);
        assert_eq!(paths(&s), vec!["a", "a/x"]);
    }

    #[test]
    fn truncated_data_fails() {
        let (item, _) = file("a", "12345");
        let mut sink = MemorySink::default();
        let mut f = Flattener::new(vec!["sha256:abc".into()]);
        f.begin_layer(0);
        let e = f
            .entry(&mut sink, 0, item, &mut &b"12"[..])
            .expect_err("short");
        assert!(
            matches!(
                e,
                FlattenError::Truncated {
                    expected: 5,
                    got: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("sha256:abc"), "{e}");
    }

    #[test]
    fn cairn_directory_in_layers_is_dropped() {
        let s = ok(&[vec![
            dir(".cairn"),
            file(".cairn/image.json", "{}"),
            file("a", ""),
        ]]);
        assert_eq!(paths(&s), vec!["a"]);
    }

    #[test]
    fn ensure_adds_only_missing_paths() {
        let layers = [vec![
            dir("etc"),
            file("etc/passwd", "root"),
            file("home", "x"),
        ]];
        let mut sink = MemorySink::default();
        let mut f = Flattener::new(vec!["L0".into()]);
        f.begin_layer(0);
        for (i, (item, data)) in layers[0].iter().enumerate() {
            f.entry(&mut sink, i as u64, item.clone(), &mut data.as_slice())
                .expect("entry");
        }
        f.end_layer();
        assert!(
            !f.ensure(&mut sink, b"etc/passwd", false, meta(0o644))
                .expect("e")
        );
        assert!(
            f.ensure(&mut sink, b"etc/hosts", false, meta(0o644))
                .expect("e")
        );
        assert!(!f.ensure(&mut sink, b"home", true, meta(0o755)).expect("e"));
        assert!(f.ensure(&mut sink, b"proc", true, meta(0o555)).expect("e"));
        assert_eq!(sink.content("etc/hosts"), Some(&b""[..]));
        assert!(matches!(
            sink.nodes.get(&b"proc"[..]),
            Some(MemoryNode::Dir(_))
        ));
    }

    #[test]
    fn root_directory_entry_sets_root_metadata() {
        let s = ok(&[
            vec![dir_mode("", 0o700), file("a", "a")],
            vec![file("b", "")],
        ]);
        assert_eq!(s.nodes.get(&b""[..]), Some(&MemoryNode::Dir(meta(0o700))));
    }
}
