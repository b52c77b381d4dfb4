//! Reads `ceph.conf` and the keyring into memory before the sandbox, so
//! that the Ceph client, started inside it, needs no file at all: the
//! options are handed to libcephfs one by one (`ceph_conf_set`) and the
//! secret as the `key` option.

use std::io;
use std::path::{Path, PathBuf};

use super::MountError;

/// Where libcephfs looks when no `--ceph-conf` is given.
pub const DEFAULT_CONF: &str = "/etc/ceph/ceph.conf";

/// Options that name files: meaningless in the sandbox's empty root.
const FILE_OPTIONS: &[&str] = &["keyring", "keyfile", "admin_socket", "log_file", "run_dir"];

fn canonical(key: &str) -> String {
    key.trim().replace([' ', '-'], "_")
}

fn unreadable(p: &Path, source: io::Error) -> MountError {
    MountError::Setup {
        what: format!("reading {}", p.display()),
        source,
    }
}

/// `key = value` pairs of the sections that apply to `client.<id>`, in
/// order (`global`, then `client`, then `client.<id>`: later wins).
pub fn parse(text: &str, id: &str) -> Vec<(String, String)> {
    let mine = format!("client.{id}");
    let mut by_section: [Vec<(String, String)>; 3] = Default::default();
    let mut cur: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let s = s.trim();
            cur = match s {
                "global" => Some(0),
                "client" => Some(1),
                _ if s == mine => Some(2),
                _ => None,
            };
            continue;
        }
        let (Some(i), Some((k, v))) = (cur, line.split_once('=')) else {
            continue;
        };
        let v = v.split(['#', ';']).next().unwrap_or("").trim();
        by_section[i].push((canonical(k), v.trim_matches('"').to_string()));
    }
    by_section.into_iter().flatten().collect()
}

/// The `key` of `client.<id>` in a keyring file's text.
pub fn keyring_secret(text: &str, id: &str) -> Option<String> {
    parse(text, id)
        .into_iter()
        .rev()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v)
}

/// Everything the client needs, read now: the options from `conf`
/// (without file-naming ones) and the secret from `keyring` (default: the
/// conf's `keyring`, then `/etc/ceph/ceph.client.<id>.keyring`).
pub fn load(
    conf: Option<&Path>,
    keyring: Option<&Path>,
    id: &str,
) -> Result<Vec<(String, String)>, MountError> {
    let conf_path = conf.unwrap_or(Path::new(DEFAULT_CONF));
    let text = std::fs::read_to_string(conf_path).map_err(|e| unreadable(conf_path, e))?;
    let all = parse(&text, id);
    let conf_keyring = all
        .iter()
        .rev()
        .find(|(k, v)| k == "keyring" && !v.contains('$'))
        .map(|(_, v)| PathBuf::from(v));
    let mut opts: Vec<(String, String)> = all
        .into_iter()
        .filter(|(k, _)| !FILE_OPTIONS.contains(&k.as_str()))
        .collect();
    let key_path = match keyring {
        Some(k) => Some(k.to_path_buf()),
        None => conf_keyring.or_else(|| {
            let p = PathBuf::from(format!("/etc/ceph/ceph.client.{id}.keyring"));
            p.exists().then_some(p)
        }),
    };
    if let Some(p) = key_path {
        let text = std::fs::read_to_string(&p).map_err(|e| unreadable(&p, e))?;
        let secret = keyring_secret(&text, id).ok_or_else(|| MountError::Setup {
            what: format!("{}: no key for client.{id}", p.display()),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        })?;
        opts.push(("key".into(), secret));
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_that_apply_in_order_and_file_options_dropped() {
        let t = tempfile::tempdir().unwrap();
        let conf = t.path().join("ceph.conf");
        let kr = t.path().join("keyring");
        std::fs::write(
            &conf,
            "# comment\n[global]\nmon host = v1:127.0.0.1:6789\nlog file = /x\n\
             keyring = /nonexistent\n[osd.0]\nosd data = /y\n[client]\n\
             client mount timeout = 5 ; why\n[client.vm]\nclient-mount-timeout = 7\n",
        )
        .unwrap();
        std::fs::write(
            &kr,
            "[client.other]\n\tkey = NOPE\n[client.vm]\n\tkey = \"AQB==\"\n\tcaps mds = \"allow\"\n",
        )
        .unwrap();
        let o = load(Some(&conf), Some(&kr), "vm").unwrap();
        assert_eq!(
            o,
            vec![
                ("mon_host".into(), "v1:127.0.0.1:6789".into()),
                ("client_mount_timeout".into(), "5".into()),
                ("client_mount_timeout".into(), "7".into()),
                ("key".into(), "AQB==".into()),
            ]
        );
        // The conf's keyring is used when none is given: missing here.
        assert!(load(Some(&conf), None, "vm").is_err());
        assert!(load(Some(&t.path().join("none")), Some(&kr), "vm").is_err());
        assert!(load(Some(&conf), Some(&kr), "nobody").is_err());
    }
}
