//! Host `mpirun` (OpenMPI 4.1 of bookworm) launching ranks in containers:
//! `mpirun -np 4 cairn run --join mpi.sqfs -- /opt/ring` over shared memory
//! (vader BTL with the CMA single-copy mechanism). The image is the MPI
//! fixture (tests/fixtures/mpi-image.sh, cached by content hash): its ring
//! program checks a token ring, an allreduce and `process_vm_readv` between
//! neighbouring ranks, which only works when the ranks share one user
//! namespace. As root and as the ordinary user; nothing of cairn is left
//! afterwards.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn usable(who: &Who) -> bool {
    namespaces_work(who, "-Urm") && require(Path::new("/dev/fuse").exists(), "/dev/fuse")
}

/// Loop devices backed by `img` (a kernel mount as root).
fn loops(img: &Path) -> String {
    let out = output(Command::new("losetup").arg("-j").arg(img));
    stdout_of(&out).trim().to_owned()
}

#[test]
fn mpirun_ranks_in_joined_containers_pass_messages_and_use_cma() {
    if !require(
        have_tool("mpirun"),
        "mpirun (openmpi-bin, tests/setup-host.sh)",
    ) {
        return;
    }
    let img = mpi_image();
    if !require(
        img.is_some(),
        "the MPI image (tests/fixtures/mpi-image.sh, built as root)",
    ) {
        return;
    }
    let img = img.expect("checked");
    for who in callers().into_iter().filter(usable) {
        for mode in ["fuse", "auto"] {
            let mut cmd = command_as(&who, "mpirun");
            if is_root() && matches!(who, Who::Me) {
                cmd.arg("--allow-run-as-root");
            }
            // 2 cores here: 4 ranks need --oversubscribe. Shared memory only,
            // with CMA as vader's single-copy mechanism (an error, not a
            // silent fallback, if process_vm_readv were refused).
            cmd.args(["--oversubscribe", "-np", "4"])
                .args(["--mca", "btl", "self,vader"])
                .args(["--mca", "btl_vader_single_copy_mechanism", "cma"])
                .args(["-x", "CAIRN_JOIN_LINGER_MS=300"])
                .args(["-x", &format!("{WARM_LINGER_VAR}={WARM_LINGER_OFF}")])
                .arg(cairn_bin())
                .args(["run", "--join", "--mount", mode])
                .arg(img)
                .args(["--", "/opt/ring"]);
            let out = output_within(&mut cmd, 120);
            let what = format!(
                "mpirun -np 4 cairn run --join --mount {mode} as {}",
                who.label()
            );
            assert_success(&out, &what);
            let stdout = stdout_of(&out);
            assert!(
                stdout.contains("ring ok: sum 10 over 4 ranks"),
                "{what}\n{stdout}"
            );
            for rank in 0..4 {
                assert!(
                    stdout.contains(&format!("allreduce ok: rank {rank} sum 6")),
                    "{what}: allreduce of rank {rank}\n{stdout}"
                );
                assert!(
                    stdout.contains(&format!("cma ok: rank {rank} read 65536 bytes")),
                    "{what}: cma of rank {rank}\n{stdout}"
                );
            }
            assert!(!stdout.contains("FAILED"), "{what}\n{stdout}");
            // One mount namespace among the four ranks.
            let namespaces: std::collections::BTreeSet<&str> = stdout
                .lines()
                .filter(|l| l.starts_with("rank "))
                .filter_map(|l| l.split(" ns ").nth(1))
                .collect();
            assert_eq!(namespaces.len(), 1, "{what}: {namespaces:?}\n{stdout}");
            let ns = namespaces.iter().next().expect("one namespace");
            assert!(ns.starts_with("mnt:["), "{what}: {ns}");
            assert_eq!(
                stdout.lines().filter(|l| l.starts_with("rank ")).count(),
                4,
                "{what}\n{stdout}"
            );
            // Nothing left: no process holds the image, no loop device.
            assert!(
                wait_until(20, || processes_mapping(img, None).is_empty()
                    && loops(img).is_empty()),
                "{what}: left over: processes {:?}, loops {}",
                processes_mapping(img, None),
                loops(img)
            );
        }
    }
}
