//! Fuzzing harnesses for the image parsers of untrusted bytes, kept in the
//! library so `fuzz/fuzz_targets/image_*.rs` and the seed-replay test
//! (`tests/import_fuzz_seeds.rs`) run the same code: a layer blob
//! (decompression by magic, tar entries, whiteouts, the flattener), the
//! archives an import reads in place (oci-archive, docker-archive), the OCI
//! JSON documents and manifest selection, source references, and what a
//! pull reads from the user's side: registry references, `--creds` and
//! docker/podman auth files.

use super::archive::{ArchiveIndex, BlobLocation};
use super::flatten::Flattener;
use super::layer::{Compression, LayerError, for_each_item, sniff};
use super::oci::{DockerArchiveImage, ImageConfig, Index, Manifest, parse_json, select_manifest};
use super::sink::{EntryMeta, SinkError, SpecialKind, TreeSink};
use super::spec::{ImageSource, ManifestSelector, PlatformSpec};
use std::io::{self, Read};
use std::path::Path;

/// Decompressed bytes a fuzzed layer may expand to (zip bombs end here).
const LAYER_OUTPUT_LIMIT: u64 = 64 * 1024 * 1024;

/// A sink that checks nothing and keeps nothing but reads file data.
#[derive(Debug, Default)]
struct CountingSink {
    entries: u64,
}

impl TreeSink for CountingSink {
    fn dir(&mut self, _: &[u8], _: EntryMeta) -> Result<(), SinkError> {
        self.entries += 1;
        Ok(())
    }
    fn file(&mut self, _: &[u8], _: EntryMeta, data: &mut dyn Read) -> Result<u64, SinkError> {
        self.entries += 1;
        Ok(io::copy(data, &mut io::sink())?)
    }
    fn symlink(&mut self, _: &[u8], _: EntryMeta, _: &[u8]) -> Result<(), SinkError> {
        self.entries += 1;
        Ok(())
    }
    fn special(&mut self, _: &[u8], _: EntryMeta, _: SpecialKind) -> Result<(), SinkError> {
        self.entries += 1;
        Ok(())
    }
    fn hardlink(&mut self, _: &[u8], _: &[u8]) -> Result<(), SinkError> {
        self.entries += 1;
        Ok(())
    }
    fn update_dir(&mut self, _: &[u8], _: EntryMeta) -> Result<(), SinkError> {
        Ok(())
    }
    fn remove(&mut self, _: &[u8]) -> Result<(), SinkError> {
        self.entries = self.entries.saturating_sub(1);
        Ok(())
    }
}

/// Flattens `data` as two layers (the same blob twice, so whiteouts and
/// cross-layer links meet something): returns the entries written.
pub fn fuzz_layer(data: &[u8]) -> Result<u64, LayerError> {
    let mut sink = CountingSink::default();
    let mut flattener = Flattener::new(vec!["upper".into(), "lower".into()]);
    for layer in [1usize, 0] {
        let reader: Box<dyn Read> = match sniff(data) {
            Compression::None => Box::new(data),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(data).map_err(|source| {
                    LayerError::Read {
                        layer: "fuzz".into(),
                        source,
                    }
                })?)
            }
        };
        flattener.begin_layer(layer);
        for_each_item(
            "fuzz",
            reader.take(LAYER_OUTPUT_LIMIT),
            |ordinal, item, _, r| {
                flattener.entry(&mut sink, ordinal, item, r)?;
                Ok(true)
            },
        )?;
        // Fixups would re-read the layer: the harness only checks the plan.
        let _ = flattener.end_layer();
    }
    flattener.finish()?;
    Ok(sink.entries)
}

/// Indexes `data` as an oci-archive or docker-archive (a tar of blobs and
/// JSON, read in place) and looks up every member and the names a source
/// asks for, following the links between members as an import does.
pub fn fuzz_archive(data: &[u8]) {
    let Ok(index) = ArchiveIndex::read(Path::new("fuzz.tar"), io::Cursor::new(data)) else {
        return;
    };
    let names = index
        .names()
        .map(|n| String::from_utf8_lossy(n).into_owned());
    let wanted = [
        "index.json",
        "manifest.json",
        "oci-layout",
        "./index.json",
        "/",
    ];
    for name in names.chain(wanted.iter().map(|n| (*n).to_owned())) {
        // Lookups follow symbolic and hard links between members: a loop
        // or a chain must end, a link must not leave the archive.
        if let Some(location) = index.location(&name) {
            assert!(matches!(location, BlobLocation::Member { .. }), "{name}");
        }
    }
}

/// Parses `data` as every OCI/docker JSON document and selects manifests
/// from it as an index; then as a source reference and a platform.
pub fn fuzz_documents(data: &[u8]) {
    if let Ok(index) = parse_json::<Index>("fuzz", data) {
        let host = PlatformSpec::host();
        for select in [
            ManifestSelector::Default,
            ManifestSelector::Tag("latest".into()),
        ] {
            let _ = select_manifest("fuzz", &index, &select, None);
            let _ = select_manifest("fuzz", &index, &select, Some(&host));
        }
    }
    let _ = parse_json::<Manifest>("fuzz", data);
    if let Ok(config) = parse_json::<ImageConfig>("fuzz", data) {
        let n = config.rootfs.diff_ids.len();
        let _ = config.diff_ids("fuzz", n);
    }
    let _ = parse_json::<Vec<DockerArchiveImage>>("fuzz", data);
    let _ = super::meta::ImageMeta::from_json("fuzz", data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ImageSource::parse(text);
        let _ = PlatformSpec::parse(text);
        let _ = super::entry::classify(text.as_bytes());
    }
}

/// Parses `data` as a registry reference (its first line) and the rest as
/// an auth file looked up for that registry; the whole as `--creds` and as
/// base64.
pub fn fuzz_registry(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let registry = match super::registry::reference::RegistryRef::parse(first) {
        Ok(r) => r.registry,
        Err(_) => super::registry::reference::DEFAULT_REGISTRY.to_owned(),
    };
    let path = Path::new("fuzz");
    let _ = super::registry::auth::lookup_in(path, rest, &registry);
    let _ = super::registry::auth::lookup_in(path, &text, first);
    let _ = super::registry::auth::parse_creds(&text);
    let _ = super::registry::auth::base64_decode(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harnesses_survive_garbage() {
        for data in [
            &b""[..],
            b"\x1f\x8b\x08garbage",
            b"\x28\xb5\x2f\xfd",
            &[0u8; 1024],
            b"{}",
        ] {
            let _ = fuzz_layer(data);
            fuzz_archive(data);
            fuzz_documents(data);
            fuzz_registry(data);
        }
    }
}
