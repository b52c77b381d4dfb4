//! Resolving `USER`, `--user` and `--chown` specs against an image's
//! `/etc/passwd` and `/etc/group`, as Docker does.

use std::path::Path;

/// A resolved identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` when a name was used).
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd`, if known.
    pub home: Option<String>,
}

/// A user spec the image cannot satisfy. The doc comment is the message.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// no such user name
    #[error("user {0:?} not found in the image's /etc/passwd")]
    UnknownUser(String),
    /// no such group name
    #[error("group {0:?} not found in the image's /etc/group")]
    UnknownGroup(String),
    /// a passwd line with a non-numeric uid
    #[error("bad uid for {0} in the image's /etc/passwd")]
    BadUid(String),
}

fn read_db(root: &Path, file: &str) -> String {
    let parts = cradle_image::unpack::clean_path(file.as_bytes()).unwrap_or_default();
    let Some((name, parents)) = parts.split_last() else {
        return String::new();
    };
    match cradle_image::unpack::resolve_in_root(root, parents, false) {
        Ok(rel) => {
            let p = root.join(rel).join(name);
            // Not following a final symlink: it would resolve on the host.
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() => std::fs::read_to_string(&p).unwrap_or_default(),
                _ => String::new(),
            }
        }
        Err(_) => String::new(),
    }
}

/// Resolves `user[:group]` (names or numbers) inside the rootfs at `root`.
pub fn resolve(root: &Path, spec: &str) -> Result<Ident, UserError> {
    let passwd = read_db(root, "etc/passwd");
    let group = read_db(root, "etc/group");
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let pw_entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let (uid, pw_gid, home, name) = match (user.parse::<u32>(), &pw_entry) {
        (_, Some(f)) => (
            f[2].parse()
                .map_err(|_| UserError::BadUid(user.to_string()))?,
            f[3].parse().ok(),
            Some(f[5].to_string()),
            Some(f[0].to_string()),
        ),
        (Ok(n), None) => (n, None, None, None),
        (Err(_), None) => return Err(UserError::UnknownUser(user.to_string())),
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        },
        None => pw_gid.unwrap_or(0),
    };
    let mut groups = vec![gid];
    if let (Some(name), None) = (&name, grp) {
        for f in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(Ident {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_groups() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nweb:x:34:\nlog:x:40:www,x\n",
        )
        .unwrap();
        let r = |s| resolve(d.path(), s);
        assert_eq!(
            r("www").unwrap(),
            Ident {
                uid: 33,
                gid: 34,
                groups: vec![34, 40],
                home: Some("/var/www".into())
            }
        );
        assert_eq!(r("33").unwrap().gid, 34);
        assert_eq!(r("www:root").unwrap().gid, 0);
        assert_eq!(
            r("1000:1000").unwrap(),
            Ident {
                uid: 1000,
                gid: 1000,
                groups: vec![1000],
                home: None
            }
        );
        assert!(r("nobody").is_err());
        assert!(r("www:nogroup").is_err());
    }
}
