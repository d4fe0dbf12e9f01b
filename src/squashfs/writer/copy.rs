//! Files whose content another image stores already, copied block for
//! block: no decompressing, no compressing (`cairn build` puts its base
//! image under its layers this way). The copied blocks go through the
//! pipeline's queue like compressed ones, so they land in ticket order and
//! within the same memory bound; a copied fragment block takes an index of
//! its own, once for all the files whose tails it holds.

use super::data::FileData;
use super::pipeline::{Outcome, Owner};
use super::{EntryMeta, WriteError, Writer};
use crate::squashfs::format::{CompressorId, DATA_SIZE_MASK, DATA_UNCOMPRESSED};
use crate::squashfs::reader::{DataFormat, StoredFile, StoredTail};

impl Writer {
    /// Can blocks of an image of this format be copied into this one? The
    /// same compressor and block size; zstd and lz4 decompress whatever
    /// their options, the others only when neither image names any.
    pub fn copies_from(&self, source: DataFormat) -> bool {
        let ours = self.options.compression;
        source.compressor == ours.id()
            && source.block_size == self.options.block_size
            && (matches!(source.compressor, CompressorId::Zstd | CompressorId::Lz4)
                || (!source.options && ours.options_payload().is_none()))
    }

    /// Adds a regular file from its stored form in image `source` (a
    /// number the caller gives each image it copies from), which
    /// [`Writer::copies_from`] accepted. Returns its size.
    pub fn add_stored_file(
        &mut self,
        path: &[u8],
        meta: EntryMeta,
        source: u32,
        stored: &StoredFile,
    ) -> Result<u64, WriteError> {
        self.prepare(path, &meta)?;
        self.pump(false)?;
        let mut file = FileData {
            size: stored.size,
            ..FileData::default()
        };
        if !stored.blocks.is_empty() {
            let id = self.begin_file(stored.sparse > 0);
            for &(word, bytes) in &stored.blocks {
                let outcome = if word & DATA_SIZE_MASK == 0 {
                    Outcome::Hole
                } else {
                    Outcome::Stored {
                        bytes: bytes.to_vec(),
                        raw: word & DATA_UNCOMPRESSED != 0,
                    }
                };
                self.queue_stored(Owner::Block { file: id }, outcome)?;
            }
            file.pending = Some(id);
        }
        if let Some(tail) = &stored.tail {
            file.fragment = Some((self.copied_fragment(source, tail)?, tail.offset));
        }
        if let Some(id) = file.pending {
            self.pipeline
                .push(Owner::FileEnd { file: id }, Outcome::Mark);
        }
        self.insert_file(path, meta, file)
    }

    /// The index here of fragment block `tail.index` of image `source`,
    /// queued for writing at its first use. The block being filled is
    /// sealed first: indexes follow the order of sealing.
    fn copied_fragment(&mut self, source: u32, tail: &StoredTail) -> Result<u32, WriteError> {
        if let Some(&index) = self.copied_fragments.get(&(source, tail.index)) {
            return Ok(index);
        }
        self.seal_fragment()?;
        let index = self.next_fragment_index()?;
        self.frag_unwritten.push_back(None);
        self.queue_stored(
            Owner::Fragment,
            Outcome::Stored {
                bytes: tail.block.to_vec(),
                raw: tail.word & DATA_UNCOMPRESSED != 0,
            },
        )?;
        self.copied_fragments.insert((source, tail.index), index);
        Ok(index)
    }

    /// Queue a stored block, once there is room for it.
    fn queue_stored(&mut self, owner: Owner, outcome: Outcome) -> Result<u64, WriteError> {
        self.make_room()?;
        Ok(self.pipeline.push_stored(owner, outcome))
    }
}
