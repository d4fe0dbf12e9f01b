#!/usr/bin/env python3
"""Regenerate fuzz/corpus-seed/reader/: small mksquashfs images (one per
compressor and layout) and hand-corrupted variants. Each file stays under
64 KiB. Names: good-* must pass the harness, bad-* must fail it, mut-*
(random byte flips) may do either; tests/reader_fuzz_seeds.rs checks this.
Needs mksquashfs, setfattr; run as any user: python3 fuzz/make-seeds.py"""
import os, random, shutil, struct, subprocess, tempfile

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus-seed", "reader")
os.makedirs(out, exist_ok=True)
tmp = tempfile.mkdtemp()
src = os.path.join(tmp, "src")
os.makedirs(os.path.join(src, "dir", "sub"))
rnd = random.Random(1)
open(os.path.join(src, "text"), "w").write("hello squashfs\n" * 400)
open(os.path.join(src, "random"), "wb").write(bytes(rnd.getrandbits(8) for _ in range(6000)))
open(os.path.join(src, "dir", "sub", "tail"), "w").write("tail end\n")
with open(os.path.join(src, "sparse"), "wb") as f:
    f.seek(20000); f.write(b"x"); f.truncate(40000)
os.link(os.path.join(src, "text"), os.path.join(src, "dir", "hardlink"))
os.symlink("../text", os.path.join(src, "dir", "link"))
os.mkfifo(os.path.join(src, "fifo"))
for i in range(40):
    open(os.path.join(src, "dir", f"entry-{i:03}"), "w").write(str(i))
subprocess.run(["setfattr", "-n", "user.seed", "-v", "value", os.path.join(src, "text")], check=True)
for p in ["text", "dir", "dir/sub/tail"]:
    os.utime(os.path.join(src, p), (1_000_000_000, 1_000_000_000))

layouts = {
    "gzip": ["-comp", "gzip"], "lzo": ["-comp", "lzo"], "xz": ["-comp", "xz"],
    "lz4": ["-comp", "lz4"], "zstd": ["-comp", "zstd"],
    "uncompressed-4k": ["-noI", "-noD", "-noF", "-noX", "-b", "4K"],
    "no-fragments": ["-comp", "zstd", "-no-fragments", "-b", "4K"],
}
images = {}
for name, opts in layouts.items():
    img = os.path.join(tmp, name + ".sqfs")
    subprocess.run(["mksquashfs", src, img, "-quiet", "-no-progress", "-all-root",
                    "-mkfs-time", "0", "-all-time", "1000000000"] + opts, check=True)
    data = open(img, "rb").read()
    assert len(data) <= 65536, (name, len(data))
    images[name] = data
    open(os.path.join(out, f"good-{name}.sqfs"), "wb").write(data)

def u64(b, at): return struct.unpack_from("<Q", b, at)[0]
def patch(b, at, fmt, v):
    b = bytearray(b); struct.pack_into(fmt, b, at, v); return bytes(b)

g = images["uncompressed-4k"]
z = images["zstd"]
bad = {
    "truncated-half": z[: u64(z, 40) // 2],
    "truncated-tables": z[: u64(z, 40) - 20],
    "bad-magic": patch(z, 0, "<I", 0x12345678),
    "bad-block-log": patch(z, 22, "<H", 9),
    "inode-count-huge": patch(z, 4, "<I", 0xFFFFFFFF),
    "id-table-past-end": patch(z, 48, "<Q", u64(z, 40) + 100),
    "dir-table-past-end": patch(g, 72, "<Q", u64(g, 40) + 100),
    "metadata-length-zero": patch(g, u64(g, 64), "<H", 0x8000),
    "zstd-metadata-garbage": patch(z, u64(z, 64) + 4, "<Q", 0xDEADBEEFDEADBEEF),
}
for name, data in bad.items():
    open(os.path.join(out, f"bad-{name}.sqfs"), "wb").write(data)
for name in ["uncompressed-4k", "gzip", "lzo"]:
    for i in range(3):
        b = bytearray(images[name])
        r = random.Random(f"{name}-{i}")
        start = u64(b, 64) - 256 if i == 0 else 96
        for _ in range(8):
            b[r.randrange(max(start, 0), u64(b, 40))] ^= 1 << r.randrange(8)
        open(os.path.join(out, f"mut-{name}-{i}.sqfs"), "wb").write(bytes(b))
shutil.rmtree(tmp)
