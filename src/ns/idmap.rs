//! Id maps (pure): the lines written to `/proc/self/uid_map` and `gid_map`.
//!
//! An unprivileged process may map exactly one id, its own effective id, to
//! any id inside (user_namespaces(7)); so the map is always one line of
//! length 1: `INSIDE OUTSIDE 1`. The id inside is checked before the map
//! is written: the kernel refuses (u32)-1 there with a bare EINVAL.

/// `(uid_t)-1` / `(gid_t)-1`: the kernel's "no id" (what `chown(2)` takes
/// as "leave unchanged"); `uid_map` and `gid_map` refuse a range that
/// contains it.
pub const NO_ID: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdMapError {
    #[error(
        "{what} {id}: cannot be an id inside the user namespace ({id} is (u32)-1, the kernel's \"no id\", which uid_map and gid_map refuse; use 0 to {max})"
    )]
    Unmappable { what: String, id: u32, max: u32 },
}

/// An id asked for inside (`what` names where it came from: `--uid`,
/// `--gid`, the image's User), checked against what a map may hold.
pub fn check_inside(what: &str, id: u32) -> Result<u32, IdMapError> {
    if id == NO_ID {
        return Err(IdMapError::Unmappable {
            what: what.to_owned(),
            id,
            max: NO_ID - 1,
        });
    }
    Ok(id)
}

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
    fn minus_one_is_refused_naming_where_it_came_from() {
        assert_eq!(check_inside("--uid", 0), Ok(0));
        assert_eq!(check_inside("--uid", NO_ID - 1), Ok(NO_ID - 1));
        let err = check_inside("--gid", 4_294_967_295).expect_err("-1");
        let msg = err.to_string();
        assert!(
            msg.starts_with("--gid 4294967295: ") && msg.contains("0 to 4294967294"),
            "{msg}"
        );
    }

    #[test]
    fn explicit_gid_is_used() {
        let (u, g) = caller_maps(0, 0, Some(5), Some(7));
        assert_eq!(u, IdMap::single(5, 0));
        assert_eq!(g.line(), "7 0 1\n");
    }
}
