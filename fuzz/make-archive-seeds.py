#!/usr/bin/env python3
"""Regenerate fuzz/corpus-seed/image_archive/: small oci-archive and
docker-archive files (a tar of blobs and JSON) as `docker save`, skopeo and
buildah write them: identical layers linked (symlink and hard link), names
with ./ and ../, a link loop, long names (GNU and PAX), a truncated archive.
The blobs are tiny stand-ins; only the outer tar and the lookups matter.
Run as any user: python3 fuzz/make-archive-seeds.py"""
import hashlib, io, json, os, tarfile

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus-seed", "image_archive")
os.makedirs(out, exist_ok=True)
F, D, S, L = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def save(name, data):
    assert len(data) <= 65536, (name, len(data))
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def archive(specs, fmt=tarfile.GNU_FORMAT):
    """A tar of (name, kind, value): bytes for files, a target for links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, value in specs:
            i = tarfile.TarInfo(name)
            i.type, i.mtime = kind, 1700000000
            i.mode = 0o755 if kind == D else 0o644
            data = None
            if kind == F:
                data = value
                i.size = len(data)
            elif kind in (S, L):
                i.linkname = value
            t.addfile(i, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def blob(data):
    return "blobs/sha256/" + hashlib.sha256(data).hexdigest(), data


layer_name, layer = blob(b"not really a layer, the archive target never reads it\n")
config_name, config = blob(json.dumps({
    "architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_name[13:]]},
}).encode())
manifest_name, manifest = blob(json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + config_name[13:], "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": "sha256:" + layer_name[13:], "size": len(layer)}],
}).encode())
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + manifest_name[13:], "size": len(manifest),
    "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()

# oci-archive (skopeo copy oci-archive:, buildah push).
save("oci-archive.tar", archive([
    ("oci-layout", F, b'{"imageLayoutVersion":"1.0.0"}'),
    ("index.json", F, index),
    ("blobs", D, ""),
    ("blobs/sha256", D, ""),
    (layer_name, F, layer),
    (config_name, F, config),
    (manifest_name, F, manifest),
]))
# The same with "./" names (tar -C dir .) and a PAX header.
save("oci-archive-dot-pax.tar", archive([
    ("./", D, ""),
    ("./index.json", F, index),
    ("./" + layer_name, F, layer),
    ("./" + config_name, F, config),
    ("./" + manifest_name, F, manifest),
], fmt=tarfile.PAX_FORMAT))

# docker-archive (docker save): a layer linked from a second directory, as
# docker does for identical layers, by symlink and by hard link.
docker_manifest = json.dumps([{
    "Config": "cfg.json", "RepoTags": ["x:latest"],
    "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"]}]).encode()
save("docker-archive.tar", archive([
    ("manifest.json", F, docker_manifest),
    ("cfg.json", F, config),
    ("aaa", D, ""),
    ("aaa/layer.tar", F, layer),
    ("bbb", D, ""),
    ("bbb/layer.tar", S, "../aaa/layer.tar"),
    ("ccc/layer.tar", L, "aaa/layer.tar"),
    ("repositories", F, b'{"x":{"latest":"aaa"}}'),
]))
# Links that go nowhere, in circles, or out of the archive.
save("links-hostile.tar", archive([
    ("manifest.json", F, docker_manifest),
    ("a", S, "b"),
    ("b", S, "a"),
    ("up", S, "../../../../etc/passwd"),
    ("abs", S, "/manifest.json"),
    ("hl", L, "../outside"),
    ("chain1", S, "chain2"), ("chain2", S, "chain3"), ("chain3", S, "chain4"),
    ("chain4", S, "chain5"), ("chain5", S, "chain6"), ("chain6", S, "chain7"),
    ("chain7", S, "chain8"), ("chain8", S, "chain9"), ("chain9", S, "cfg.json"),
    ("cfg.json", F, config),
]))
# A member name with "..": the whole archive is refused.
save("dotdot-name.tar", archive([("index.json", F, index), ("d/../x", F, b"x")]))
# Names past 100 bytes: GNU long names and links, PAX paths.
long_dir = "d" * 120
save("long-names-gnu.tar", archive([
    (long_dir + "/layer.tar", F, layer),
    ("short", S, long_dir + "/layer.tar"),
]))
save("long-names-pax.tar", archive([
    (long_dir + "/layer.tar", F, layer),
    ("short", L, long_dir + "/layer.tar"),
], fmt=tarfile.PAX_FORMAT))
# Cut off in a member's data and in a header.
whole = open(os.path.join(out, "oci-archive.tar"), "rb").read()
save("truncated-data.tar", whole[:512 * 5 + 20])
save("truncated-header.tar", whole[:512 * 3 + 100])
