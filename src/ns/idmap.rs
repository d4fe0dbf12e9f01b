//! Id maps (pure): the lines written to `/proc/self/uid_map` and `gid_map`.
//!
//! An unprivileged process may map exactly one id, its own effective id, to
//! any id inside (user_namespaces(7)); so the map is always one line of
//! length 1: `INSIDE OUTSIDE 1`.

/// One contiguous id range: `inside` in the namespace is `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl IdMap {
    /// Map one host id to one id inside.
    pub fn single(inside: u32, outside: u32) -> Self {
        IdMap {
            inside,
            outside,
            count: 1,
        }
    }

    /// The map file line, newline-terminated.
    pub fn line(&self) -> String {
        format!("{} {} {}\n", self.inside, self.outside, self.count)
    }
}

/// The uid and gid maps of a run: the caller's ids mapped to `inside_uid` /
/// `inside_gid` (by default the caller's own).
pub fn caller_maps(
    host_uid: u32,
    host_gid: u32,
    inside_uid: Option<u32>,
    inside_gid: Option<u32>,
) -> (IdMap, IdMap) {
    (
        IdMap::single(inside_uid.unwrap_or(host_uid), host_uid),
        IdMap::single(inside_gid.unwrap_or(host_gid), host_gid),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_maps_the_caller_to_itself() {
        let (u, g) = caller_maps(1001, 1002, None, None);
        assert_eq!(u.line(), "1001 1001 1\n");
        assert_eq!(g.line(), "1002 1002 1\n");
    }

    #[test]
    fn uid_zero_gives_a_root_looking_user() {
        let (u, g) = caller_maps(1001, 1002, Some(0), None);
        assert_eq!(u.line(), "0 1001 1\n");
        assert_eq!(g.line(), "1002 1002 1\n");
    }

    #[test]
    fn explicit_gid_is_used() {
        let (u, g) = caller_maps(0, 0, Some(5), Some(7));
        assert_eq!(u, IdMap::single(5, 0));
        assert_eq!(g.line(), "7 0 1\n");
    }
}
