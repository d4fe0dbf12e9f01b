#!/usr/bin/env python3
"""Regenerate the layer seeds of fuzz/corpus-seed/image_layer/ that real
tools write and cairn once refused or mangled: GNU sparse files (GNU tar,
PAX 1.0/0.1/0.0; old GNU 'S' is refused), layers ending right after their
last data, the same path twice (tar -r), a directory replaced by a symlink
with whiteouts below it and entries below a layer's own symlinks, negative
base-256 mtimes, and truncated layers. Names: good-* must flatten, hostile-*
and truncated-* must be refused (tests/import_fuzz_seeds.rs checks this).
Needs GNU tar; run as any user: python3 fuzz/make-layer-seeds.py"""
import io, os, shutil, subprocess, tarfile, tempfile

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus-seed", "image_layer")
os.makedirs(out, exist_ok=True)
tmp = tempfile.mkdtemp()


def save(name, data):
    assert len(data) <= 65536, (name, len(data))
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def gnu_tar(args, cwd):
    subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0",
                    "--mtime=@1700000000"] + args, cwd=cwd, check=True)


def entries(specs, fmt=tarfile.GNU_FORMAT):
    """A tar of (name, kind, value, mtime) written by Python's tarfile."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, value, mtime in specs:
            i = tarfile.TarInfo(name)
            i.type, i.mtime = kind, mtime
            i.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            data = None
            if kind == tarfile.REGTYPE:
                data = value.encode()
                i.size = len(data)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                i.linkname = value
            t.addfile(i, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


# Sparse files: 48 KiB with data at the start and at 40 KiB.
src = os.path.join(tmp, "sparse")
os.makedirs(src)
with open(os.path.join(src, "f"), "wb") as f:
    f.write(b"start")
    f.seek(40 << 10)
    f.write(b"data at 40K")
    f.truncate(48 << 10)
for name, flags in [("pax10", ["--format=pax"]),
                    ("pax01", ["--format=pax", "--sparse-version=0.1"]),
                    ("pax00", ["--format=pax", "--sparse-version=0.0"]),
                    ("oldgnu", ["--format=gnu"])]:
    tar = os.path.join(tmp, name + ".tar")
    gnu_tar(["--sparse", "-cf", tar] + flags + ["f"], src)
    data = open(tar, "rb").read()
    prefix = "hostile" if name == "oldgnu" else "good"
    save(f"{prefix}-sparse-{name}.tar", data)

# A layer ending right after its last data (what umoci insert writes).
plain = entries([("d", tarfile.DIRTYPE, "", 1700000000),
                 ("d/f", tarfile.REGTYPE, "twenty-two bytes long\n", 1700000000)])
save("good-no-padding.tar", plain[:512 * 2 + 22])
save("truncated-mid-data.tar", plain[:512 * 2 + 10])
save("truncated-mid-header.tar", plain[:512 + 100])

# The same path twice (tar -r), with type changes and a hard link.
src = os.path.join(tmp, "dup")
os.makedirs(os.path.join(src, "d2f"))
open(os.path.join(src, "d2f", "child"), "w").write("child\n")
open(os.path.join(src, "f"), "w").write("v1\n")
open(os.path.join(src, "f2d"), "w").write("file first\n")
os.link(os.path.join(src, "f"), os.path.join(src, "hl"))
tar = os.path.join(tmp, "dup.tar")
gnu_tar(["--format=gnu", "-cf", tar, "d2f", "f", "f2d", "hl"], src)
shutil.rmtree(os.path.join(src, "d2f"))
open(os.path.join(src, "d2f"), "w").write("now a file\n")
os.remove(os.path.join(src, "f"))
open(os.path.join(src, "f"), "w").write("v2\n")
os.remove(os.path.join(src, "f2d"))
os.makedirs(os.path.join(src, "f2d"))
open(os.path.join(src, "f2d", "inner"), "w").write("inner\n")
gnu_tar(["--format=gnu", "-rf", tar, "d2f", "f", "f2d"], src)
save("good-duplicates.tar", open(tar, "rb").read())

# A directory replaced by a symlink, whiteouts below it (umoci repack), and
# entries below the layer's own symlinks, one escaping with "..".
S, F, D, L = tarfile.SYMTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE
save("good-symlinks.tar", entries([
    ("data", D, "", 1700000000),
    ("data/real", D, "", 1700000000),
    ("data/s", S, "real", 1700000000),
    ("data/s/.wh.t", F, "", 1700000000),
    ("data/s/.wh..wh..opq", F, "", 1700000000),
    ("data/s/new", F, "through the link\n", 1700000000),
    ("esc", S, "../../../data/real", 1700000000),
    ("esc/x", F, "x\n", 1700000000),
    ("data/hl", L, "data/s/new", 1700000000),
]))
save("hostile-symlink-loop.tar", entries([
    ("a", S, "b", 1700000000),
    ("b", S, "a", 1700000000),
    ("a/x", F, "x\n", 1700000000),
]))

# Negative and far-future mtimes: base-256 (GNU) and PAX records.
save("good-mtimes.tar", entries([
    ("old", F, "1938\n", -1000000000),
    ("far", F, "2286\n", 10000000000),
]))
save("good-mtimes-pax.tar", entries([
    ("old", F, "before 1970\n", -12345.5),
], fmt=tarfile.PAX_FORMAT))

shutil.rmtree(tmp)
