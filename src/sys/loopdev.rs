//! Loop devices for the kernel squashfs mount (root only): a free device
//! from `/dev/loop-control` and LOOP_CONFIGURE, which attaches the image
//! and sets the flags in one ioctl (no window where the device is attached
//! but not yet autoclear). The structures are declared here because the
//! libc crate does not have them (linux/loop.h).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` of linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of linux/loop.h (Linux >= 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// ioctl(LOOP_CTL_GET_FREE): the number of a free loop device (created if
/// needed).
fn get_free(control: &File) -> io::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns an int; the
    // fd is a valid open /dev/loop-control.
    let n = unsafe { libc::ioctl(control.as_raw_fd(), super::ioctl_request(LOOP_CTL_GET_FREE)) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(n).map_err(|_| io::Error::other("negative loop device number"))
}

/// ioctl(LOOP_CONFIGURE): attach `backing` read-only with autoclear.
fn configure(device: &File, backing: &File) -> io::Result<()> {
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            // No LO_FLAGS_DIRECT_IO: page-cache reads are what the
            // squashfs mount wants (the image is shared by every job).
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which
    // `LoopConfig` mirrors field for field (repr(C)); the pointer is valid
    // for the duration of the call and the kernel does not keep it.
    let rc = unsafe {
        libc::ioctl(
            device.as_raw_fd(),
            super::ioctl_request(LOOP_CONFIGURE),
            &config as *const LoopConfig,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attach `image` to a free loop device, read-only and autoclear. Returns
/// the device path and its open fd: autoclear detaches the device when the
/// last user goes, so the fd must stay open until the device is mounted
/// (then the mount holds it, and the device goes with the last mount).
pub fn attach(image: &Path) -> io::Result<(PathBuf, OwnedFd)> {
    let backing = File::open(image)?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may take the free device between GET_FREE and
    // CONFIGURE (EBUSY): ask again.
    let mut last = io::Error::other("no free loop device");
    for _ in 0..16 {
        let n = get_free(&control)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = match OpenOptions::new().read(true).open(&path) {
            Ok(d) => d,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match configure(&device, &backing) {
            Ok(()) => return Ok((path, OwnedFd::from(device))),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
