//! poll(2): waiting for a descriptor to become readable or to hang up,
//! again after a signal.

use std::os::fd::BorrowedFd;

/// poll(2) for readability; returns which of `fds` are readable (or hung
/// up). `timeout_ms` < 0 waits forever.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> nix::Result<Vec<bool>> {
    use nix::poll::{PollFd, PollFlags};
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    poll_until_events(&mut polls, timeout_ms)?;
    Ok(polls
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}

/// poll(2) `polls`, again after a signal; `timeout_ms` < 0 waits forever.
fn poll_until_events(polls: &mut [nix::poll::PollFd<'_>], timeout_ms: i32) -> nix::Result<()> {
    use nix::poll::PollTimeout;
    let timeout = if timeout_ms < 0 {
        PollTimeout::NONE
    } else {
        PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX)
    };
    loop {
        match nix::poll::poll(polls, timeout) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// poll(2) for a hangup only (the peer closed its end), ignoring data:
/// true when it came, false at the timeout. `timeout_ms` < 0 waits forever.
pub fn poll_hangup(fd: BorrowedFd<'_>, timeout_ms: i32) -> nix::Result<bool> {
    use nix::poll::{PollFd, PollFlags};
    // No requested events: poll reports POLLHUP and POLLERR regardless.
    let mut polls = [PollFd::new(fd, PollFlags::empty())];
    poll_until_events(&mut polls, timeout_ms)?;
    Ok(polls[0].revents().is_some_and(|r| !r.is_empty()))
}
