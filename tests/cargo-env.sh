# shellcheck shell=bash
# The build of cairn that the tests, the benchmarks and the quick start use,
# and the README gives (sourced): glibc linked into the binary statically,
# at a fixed address. Every `cairn run` starts a process, and loading libc,
# libm and libgcc_s and binding their symbols was about 0.29 ms of a warm
# run's 2.4 (README, "what start-up costs"); a static binary is also deaf
# to the LD_LIBRARY_PATH and LD_PRELOAD of a user's modules (they reach
# the job, not cairn). What it gives up is there too: NSS modules other
# than files and dns (sss, ldap) load only from the glibc it was built with.
#
# The flags go to the target only: with CARGO_BUILD_TARGET set, cargo
# builds build scripts and proc macros for the host without them (a static
# C runtime cannot load a proc macro). Profiles then sit in
# target/TRIPLE/: $cairn_target_dir. Other C libraries (musl) keep cargo's
# defaults. RUSTFLAGS, when set, wins over these, as cargo's rules say.
cairn_host=$(rustc -vV | sed -n 's/^host: //p')
cairn_rustflags_var=
cairn_target_dir=target
case "$cairn_host" in
*-linux-gnu)
    export CARGO_BUILD_TARGET="$cairn_host"
    cairn_rustflags_var="CARGO_TARGET_$(printf '%s' "$cairn_host" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
    export "$cairn_rustflags_var=-C target-feature=+crt-static -C relocation-model=static"
    cairn_target_dir="target/$cairn_host"
    ;;
esac
