//! `/etc/passwd` and `/etc/group` for the container (pure): the image's own
//! entries are kept, and the caller's entry (name, uid, gid, home, shell),
//! root and nobody are added when missing.

use std::path::PathBuf;

/// The user the job runs as, with the ids it has inside the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

fn has_entry(text: &str, name: &str, id: u32) -> bool {
    text.lines().any(|line| {
        let mut f = line.split(':');
        let n = f.next();
        let id_field = f.nth(1);
        n == Some(name) || id_field.and_then(|i| i.parse::<u32>().ok()) == Some(id)
    })
}

fn with_line(mut text: String, line: &str) -> String {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    text
}

/// The container's `/etc/passwd` from the image's (maybe empty) one.
pub fn passwd_for(image_passwd: &str, who: &Identity) -> String {
    let mut text = image_passwd.to_string();
    if !has_entry(&text, "root", 0) {
        text = with_line(text, "root:x:0:0:root:/root:/bin/sh");
    }
    if !has_entry(&text, &who.user, who.uid) {
        let line = format!(
            "{}:x:{}:{}:{}:{}:{}",
            who.user,
            who.uid,
            who.gid,
            who.user,
            who.home.display(),
            who.shell.display()
        );
        text = with_line(text, &line);
    }
    if !has_entry(&text, "nobody", 65534) {
        text = with_line(text, "nobody:x:65534:65534:nobody:/nonexistent:/bin/false");
    }
    text
}

/// The container's `/etc/group` from the image's (maybe empty) one.
pub fn group_for(image_group: &str, who: &Identity) -> String {
    let mut text = image_group.to_string();
    if !has_entry(&text, "root", 0) {
        text = with_line(text, "root:x:0:");
    }
    if !has_entry(&text, &who.group, who.gid) {
        text = with_line(text, &format!("{}:x:{}:", who.group, who.gid));
    }
    if !has_entry(&text, "nogroup", 65534) {
        text = with_line(text, "nogroup:x:65534:");
    }
    text
}

/// The home directory of `uid` according to a passwd file's text.
pub fn home_of(passwd: &str, uid: u32) -> Option<PathBuf> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| PathBuf::from(f[5]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(uid: u32, gid: u32) -> Identity {
        Identity {
            user: "alice".into(),
            group: "staff".into(),
            uid,
            gid,
            home: "/home/alice".into(),
            shell: "/bin/sh".into(),
        }
    }

    #[test]
    fn adds_caller_root_and_nobody_to_an_empty_file() {
        let p = passwd_for("", &alice(1000, 100));
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100:alice:/home/alice:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        );
        let g = group_for("", &alice(1000, 100));
        assert_eq!(g, "root:x:0:\nstaff:x:100:\nnogroup:x:65534:\n");
    }

    #[test]
    fn keeps_image_entries_and_does_not_duplicate() {
        let image = "root:x:0:0:root:/root:/bin/ash\ndaemon:x:1:1::/:/bin/false";
        let p = passwd_for(image, &alice(1000, 1000));
        assert!(p.starts_with("root:x:0:0:root:/root:/bin/ash\ndaemon:x:1:1::/:/bin/false\n"));
        assert_eq!(p.lines().filter(|l| l.starts_with("root:")).count(), 1);
        assert!(p.contains("alice:x:1000:1000:"));
    }

    #[test]
    fn uid_zero_keeps_the_image_root() {
        let image = "root:x:0:0:root:/root:/bin/sh\n";
        let p = passwd_for(image, &alice(0, 0));
        assert!(!p.contains("alice"));
        assert_eq!(home_of(&p, 0), Some(PathBuf::from("/root")));
    }

    #[test]
    fn home_lookup() {
        let p = passwd_for("", &alice(1000, 100));
        assert_eq!(home_of(&p, 1000), Some(PathBuf::from("/home/alice")));
        assert_eq!(home_of(&p, 4), None);
    }
}
