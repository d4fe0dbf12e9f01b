#!/usr/bin/env bash
# pull: `cairn pull` (download + verify + flatten into the cache) from a
# local docker-registry, against the peer pipelines producing a squashfs of
# the same image from the same registry, same run:
#   - `skopeo copy docker://... oci:DIR` + `umoci unpack` + `mksquashfs`
#   - `ch-image pull` + `ch-convert -o squash` (ch-image insists on HTTPS:
#     a second registry on the same storage serves it with a self-signed
#     certificate, trusted through REQUESTS_CA_BUNDLE; ch-image runs with
#     Debian's python3, which has lark, not whatever python3 PATH finds)
# cairn and skopeo use the plain-HTTP loopback registry.
# The image: the bookworm OCI layout bench/suites/flatten.sh caches in
# $work_dir/flatten-oci if present, else a small busybox + python-lib image.
# Wall time, hyperfine median (each run starts from an empty cache/store;
# the commands are shell snippets, so hyperfine_median falls back to its
# shell mode).
#
# Download/flatten overlap: one `cairn pull -v` run prints its timeline
# (when each blob is downloaded, when the flatten starts and ends) and the
# suite checks the flatten started before the last download ended. With
# CAIRN_BASELINE=/path/to/an/older/cairn, that binary is timed too, in
# BENCH_ROUNDS alternating rounds (the machine is shared: same run, medians),
# straight from the loopback registry and through a throttling proxy of
# PULL_RATE bytes/s per connection (default 25 MB/s).
#
# Knobs: BENCH_RUNS / BENCH_WARMUP (default 3 / 0 here), BENCH_ROUNDS (3),
# CAIRN_BASELINE, PULL_RATE.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=pull
export BENCH_RUNS=${BENCH_RUNS:-3} BENCH_WARMUP=${BENCH_WARMUP:-0}
[ -x "$cairn" ] || die "no cairn binary at $cairn (cargo build --release)"
for t in docker-registry skopeo umoci mksquashfs hyperfine openssl; do
    command -v "$t" >/dev/null || die "missing $t"
done

base=$work_dir/pull
rm -rf "$base/storage" "$base/run"
mkdir -p "$base/run" "$base/storage"

# The image to serve.
img=$work_dir/flatten-oci tag=bench
if [ ! -f "$img/.done" ]; then
    img=$base/small-oci
    if [ ! -f "$img/.done" ]; then
        rm -rf "$img" "$base/bundle"
        umoci init --layout "$img" >/dev/null
        umoci new --image "$img:$tag" >/dev/null
        umoci unpack --image "$img:$tag" "$base/bundle" >/dev/null
        mkdir -p "$base/bundle/rootfs"/{bin,etc,tmp,usr/lib}
        cp /bin/busybox "$base/bundle/rootfs/bin/busybox"
        umoci repack --refresh-bundle --image "$img:$tag" "$base/bundle" >/dev/null
        for d in /usr/lib/python3*; do
            cp -a "$d" "$base/bundle/rootfs/usr/lib/"
            umoci repack --refresh-bundle --image "$img:$tag" "$base/bundle" >/dev/null
        done
        rm -rf "$base/bundle"
        touch "$img/.done"
    fi
fi

port=$(bench_free_port) tls_port=$(bench_free_port)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$base/run/key.pem" -out "$base/run/cert.pem" 2>/dev/null
bench_registry_config "$base/storage" "$port" >"$base/run/plain.yml"
bench_registry_config "$base/storage" "$tls_port" "$base/run/cert.pem" "$base/run/key.pem" >"$base/run/tls.yml"
docker-registry serve "$base/run/plain.yml" >"$base/run/plain.log" 2>&1 & plain_pid=$!
docker-registry serve "$base/run/tls.yml" >"$base/run/tls.log" 2>&1 & tls_pid=$!
trap 'kill $plain_pid $tls_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && curl -skf "https://127.0.0.1:$tls_port/v2/" >/dev/null && break
    sleep 0.1
done
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$img:$tag" "docker://127.0.0.1:$port/bench/image:latest"
size=$(du -sb --exclude=.done "$img/blobs" | cut -f1)
echo "image: $img ($size bytes of blobs)"

ref=127.0.0.1:$port/bench/image:latest
out=$base/out
mkdir -p "$out"
t_cairn=$(hyperfine_median pull-cairn \
    "rm -rf '$out/cache'; CAIRN_CACHE='$out/cache' '$cairn' pull -q docker://$ref")
t_skopeo=$(hyperfine_median pull-skopeo \
    "rm -rf '$out/oci' '$out/bundle' '$out/sk.sqfs'; skopeo --insecure-policy copy -q --src-tls-verify=false docker://$ref oci:'$out/oci':x && umoci unpack --image '$out/oci':x '$out/bundle' >/dev/null && mksquashfs '$out/bundle/rootfs' '$out/sk.sqfs' -comp zstd -Xcompression-level 3 -b 128K -noappend -quiet >/dev/null")
report "$suite" "pull+flatten wall (vs skopeo+umoci+mksquashfs)" "$t_cairn" skopeo "$t_skopeo"

# The overlap, seen in one verbose pull's timeline.
rm -rf "$out/cache"
CAIRN_CACHE="$out/cache" "$cairn" pull -q -v "docker://$ref" 2>"$out/timeline.log" >/dev/null
sed -E 's/\x1b\[[0-9;]*m//g' "$out/timeline.log" | { grep -E '^ *INFO +\+[0-9.]+s' || true; } |
    sed -E 's/^ *INFO +//' | tee "$out/timeline.txt"
python3 - "$out/timeline.txt" <<'PY'
import re, sys
at = lambda l: float(re.match(r"\+([0-9.]+)s", l).group(1))
lines = open(sys.argv[1]).read().splitlines()
starts = [at(l) for l in lines if "flatten starts" in l]
done = [at(l) for l in lines if " downloaded (" in l]
if starts and done:
    overlap = "yes" if starts[0] < max(done) else "NO"
    print(f"flatten started at +{starts[0]:.3f}s, last download ended at +{max(done):.3f}s: overlap {overlap}")
PY

if [ -n "${CAIRN_BASELINE:-}" ]; then
    [ -x "$CAIRN_BASELINE" ] || die "CAIRN_BASELINE=$CAIRN_BASELINE is not executable"
    new=() old=()
    for round in $(seq "${BENCH_ROUNDS:-3}"); do
        new+=("$(hyperfine_median pull-cairn-r$round \
            "rm -rf '$out/cache'; CAIRN_CACHE='$out/cache' '$cairn' pull -q docker://$ref")")
        old+=("$(hyperfine_median pull-baseline-r$round \
            "rm -rf '$out/cache-base'; CAIRN_CACHE='$out/cache-base' '$CAIRN_BASELINE' pull -q docker://$ref")")
        echo "round $round: cairn ${new[-1]}s  baseline ${old[-1]}s"
    done
    median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    report "$suite" "pull+flatten wall (vs baseline cairn)" "$(median "${new[@]}")" baseline "$(median "${old[@]}")"

    # The same through a link of PULL_RATE bytes/s per connection (a
    # loopback registry is faster than the flatten, which hides the overlap).
    rate=${PULL_RATE:-25000000} pport=$(bench_free_port)
    cat >"$base/run/throttle.py" <<'PY'
import asyncio, sys, time
listen, upstream, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
async def pipe(r, w, limit):
    start, sent = time.monotonic(), 0
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain(); sent += len(data)
            ahead = sent / rate - (time.monotonic() - start) if limit else 0
            if ahead > 0: await asyncio.sleep(ahead)
    except Exception: pass
    finally: w.close()
async def handle(cr, cw):
    ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pipe(cr, uw, False), pipe(ur, cw, True))
async def main():
    async with await asyncio.start_server(handle, "127.0.0.1", listen) as s: await s.serve_forever()
asyncio.run(main())
PY
    python3 "$base/run/throttle.py" "$pport" "$port" "$rate" & throttle_pid=$!
    trap 'kill $plain_pid $tls_pid $throttle_pid 2>/dev/null || true' EXIT
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$pport/v2/" >/dev/null && break; sleep 0.1; done
    slow=127.0.0.1:$pport/bench/image:latest new=() old=()
    for round in $(seq "${BENCH_ROUNDS:-3}"); do
        new+=("$(hyperfine_median pull-cairn-slow-r$round \
            "rm -rf '$out/cache'; CAIRN_CACHE='$out/cache' '$cairn' pull -q docker://$slow")")
        old+=("$(hyperfine_median pull-baseline-slow-r$round \
            "rm -rf '$out/cache-base'; CAIRN_CACHE='$out/cache-base' '$CAIRN_BASELINE' pull -q docker://$slow")")
        echo "round $round at $rate B/s per connection: cairn ${new[-1]}s  baseline ${old[-1]}s"
    done
    report "$suite" "pull+flatten wall at $((rate / 1000000)) MB/s/conn (vs baseline)" "$(median "${new[@]}")" baseline "$(median "${old[@]}")"
    rm -rf "$out/cache-base"
fi

if command -v ch-image >/dev/null && command -v ch-convert >/dev/null; then
    tls_ref=127.0.0.1:$tls_port/bench/image:latest
    if t_ch=$(hyperfine_median pull-ch \
        "rm -rf '$out/ch' '$out/ch.sqfs'; export PATH=/usr/bin:/bin USER=\${USER:-root} CH_IMAGE_STORAGE='$out/ch' REQUESTS_CA_BUNDLE='$base/run/cert.pem'; ch-image pull $tls_ref >/dev/null 2>&1 && ch-convert -i ch-image -o squash $tls_ref '$out/ch.sqfs' >/dev/null 2>&1"); then
        report "$suite" "pull+flatten wall (vs ch-image+ch-convert)" "$t_cairn" ch-image "$t_ch"
    else
        echo "ch-image pull + ch-convert failed: see a manual run" >&2
    fi
fi
ls -l "$out"/cache/images/*.sqfs "$out/sk.sqfs" 2>/dev/null || true
