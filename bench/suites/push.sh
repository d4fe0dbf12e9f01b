#!/usr/bin/env bash
# push: `cairn push NAME docker://...` of an imported image to a local
# docker-registry, against `skopeo copy oci:LAYOUT docker://...` of the
# same image, same run. Each push goes to a repository of its own, so the
# registry has none of its blobs (a cold push); a second cairn push to the
# same repository (every blob already there) is timed too, and a push to
# a new repository with each tool remembering where it pushed the blobs.
# The image: the 3-layer bookworm OCI layout the flatten suite builds
# (bench_layered_image, cached in $work_dir/flatten-oci). cairn pushes one
# layer it writes from the squashfs tree (tar + gzip); skopeo copies the
# layout's blobs as they are (already compressed).
#
# Knobs: BENCH_RUNS / BENCH_WARMUP (default 3 / 1 here).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

suite=push
export BENCH_RUNS=${BENCH_RUNS:-3} BENCH_WARMUP=${BENCH_WARMUP:-1}
[ -x "$cairn" ] || die "no cairn binary at $cairn (cargo build --release)"
for t in docker-registry skopeo umoci hyperfine curl; do
    command -v "$t" >/dev/null || die "missing $t"
done

base=$work_dir/push
rm -rf "$base"
mkdir -p "$base/storage" "$base/run"

bench_layered_image
img=$bench_oci tag=$bench_oci_tag

port=$(bench_free_port)
bench_registry_config "$base/storage" "$port" >"$base/run/registry.yml"
docker-registry serve "$base/run/registry.yml" >"$base/run/registry.log" 2>&1 &
reg_pid=$!
trap 'kill $reg_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break
    sleep 0.1
done

cache=$base/cache
CAIRN_CACHE=$cache "$cairn" import "oci:$img:$tag" --name push-bench-image >/dev/null 2>&1
echo "image: oci:$img:$tag ($(du -sb --exclude=.done "$img/blobs" | cut -f1) bytes of blobs)"

# $(date +%s%N) in the shell snippets (hyperfine runs them with sh): a
# fresh repository for every run. cairn remembers which repositories of
# the registry it pushed each blob to (pushed/ in its cache) and mounts
# them from there into the next: removed before each cold run, as
# skopeo's blob-info cache is below.
forget="rm -rf '$cache/pushed'"
t_cairn=$(hyperfine_median push-cairn \
    "$forget; CAIRN_CACHE='$cache' '$cairn' push -q push-bench-image docker://127.0.0.1:$port/bench/cairn-\$(date +%s%N):t >/dev/null")
# skopeo remembers where it pushed which blob (its blob-info cache) and
# mounts them from that repository into the next: removed before each run,
# so that it uploads as cairn does.
skopeo_cache=/var/lib/containers/cache/blob-info-cache-v1.boltdb
[ "$(id -u)" = 0 ] || skopeo_cache=${XDG_DATA_HOME:-$HOME/.local/share}/containers/cache/blob-info-cache-v1.boltdb
t_skopeo=$(hyperfine_median push-skopeo \
    "rm -f '$skopeo_cache'; skopeo --insecure-policy copy -q --dest-tls-verify=false oci:'$img':$tag docker://127.0.0.1:$port/bench/skopeo-\$(date +%s%N):t")
report "$suite" "push, registry has no blob (vs skopeo copy)" "$t_cairn" skopeo "$t_skopeo"

CAIRN_CACHE=$cache "$cairn" push -q push-bench-image "docker://127.0.0.1:$port/bench/again:t" >/dev/null
t_again=$(hyperfine_median push-cairn-again \
    "CAIRN_CACHE='$cache' '$cairn' push -q push-bench-image docker://127.0.0.1:$port/bench/again:t >/dev/null")
report "$suite" "push again, every blob there (vs a cold push)" "$t_again" cold "$t_cairn"

# A built image: `cairn build` on the same base (a RUN and a COPY), pushed
# as its layers (the base as one layer, made at its first push, then one
# per instruction), against skopeo copying the same image from a layout
# (the first push, copied back with skopeo) to a new repository.
ctx=$base/build-ctx
mkdir -p "$ctx"
head -c 4000000 /dev/urandom >"$ctx/payload"
printf 'FROM push-bench-image\nRUN echo built >/built && mkdir -p /opt/app\nCOPY payload /opt/app/payload\n' >"$ctx/Dockerfile"
CAIRN_CACHE=$cache "$cairn" build -q -t push-built "$ctx" >/dev/null
start=$(date +%s%N)
CAIRN_CACHE=$cache "$cairn" push -q push-built "docker://127.0.0.1:$port/bench/built-first:t" >/dev/null
t_first=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
echo "first push of the built image (its base layer made now): ${t_first}s"
rm -rf "$base/built-oci"
skopeo --insecure-policy copy -q --src-tls-verify=false \
    "docker://127.0.0.1:$port/bench/built-first:t" "oci:$base/built-oci:t"
t_built=$(hyperfine_median push-built-cairn \
    "$forget; CAIRN_CACHE='$cache' '$cairn' push -q push-built docker://127.0.0.1:$port/bench/built-\$(date +%s%N):t >/dev/null")
t_built_skopeo=$(hyperfine_median push-built-skopeo \
    "rm -f '$skopeo_cache'; skopeo --insecure-policy copy -q --dest-tls-verify=false oci:'$base/built-oci':t docker://127.0.0.1:$port/bench/built-skopeo-\$(date +%s%N):t")
report "$suite" "push of a built image, registry has no blob (vs skopeo copy)" "$t_built" skopeo "$t_built_skopeo"

# The same push to a new repository of a registry that holds the blobs
# under another one, each tool with its memory of where it pushed them
# (cairn's pushed/ record, skopeo's blob-info cache, each primed by one
# push): both mount instead of sending.
CAIRN_CACHE=$cache "$cairn" push -q push-built "docker://127.0.0.1:$port/bench/built-prime:t" >/dev/null
rm -f "$skopeo_cache"
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$base/built-oci:t" \
    "docker://127.0.0.1:$port/bench/built-skopeo-prime:t"
t_built_mem=$(hyperfine_median push-built-cairn-mem \
    "CAIRN_CACHE='$cache' '$cairn' push -q push-built docker://127.0.0.1:$port/bench/built-mem-\$(date +%s%N):t >/dev/null")
t_built_skopeo_mem=$(hyperfine_median push-built-skopeo-mem \
    "skopeo --insecure-policy copy -q --dest-tls-verify=false oci:'$base/built-oci':t docker://127.0.0.1:$port/bench/built-skopeo-mem-\$(date +%s%N):t")
report "$suite" "push of a built image to a new repository, blobs in another one, each tool remembering where it pushed (vs skopeo copy)" \
    "$t_built_mem" skopeo "$t_built_skopeo_mem"
