//! `kcradle run --devices systemd`: the device daemons as instances of
//! their template units (`virtiofsd-gfs@.service`, `blk-lv@.service`,
//! `net-tap@.service`, shipped in each daemon's crate) instead of children.
//!
//! Each daemon of [`daemons::plan`](super::daemons::plan) becomes the
//! instance `kcN-ID-NAME` (pod network index, pod id, daemon name): the
//! index is unique among the running pods of a state directory and the
//! daemon name within a pod, so two pods never share an instance. The
//! pod's parameters go into `/run/cradle/PROGRAM/INSTANCE.env`, which the
//! template reads after an operator's `/etc/cradle/PROGRAM/INSTANCE.env`;
//! the tag (virtiofsd-gfs) and serial (blk-lv) come from that file, never
//! from the instance name. `systemctl start` of a `Type=notify` unit
//! returns once the daemon listens; teardown is `systemctl stop`, then
//! `reset-failed` (no failed unit is left listed) and the file's removal.
//! The command line a unit runs is exactly the child mode's, which the
//! unit tests below check against the real templates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::daemons::DaemonSpec;

/// Where kcradle writes the units' environment files.
pub const ENV_ROOT: &str = "/run/cradle";

/// The longest unit name systemd accepts.
const UNIT_NAME_MAX: usize = 255;

/// Why the daemons could not run as systemd units.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// No systemd as PID 1 here.
    #[error("--devices systemd: systemd is not running on this machine (no /run/systemd/system); run without --devices systemd")]
    NotRunning,
    /// The units would run in another network namespace than the tap.
    #[error("--devices systemd: kcradle runs in another network namespace than systemd, so net-tap would not find the pod's tap")]
    OtherNetns,
    /// A value an environment file cannot carry as one plain word.
    #[error("--devices systemd: {0:?} holds whitespace, a quote, '\\', '$' or '`', which a systemd environment file cannot carry plainly")]
    BadValue(String),
    /// A unit name over systemd's limit.
    #[error("--devices systemd: unit name {0} is longer than 255 bytes (shorten the bundle or volume name)")]
    TooLong(String),
    /// A daemon kcradle has no template for.
    #[error("--devices systemd: no systemd unit for {0}")]
    NoTemplate(String),
    /// Another pod (or a pod killed with SIGKILL) holds the instance.
    #[error("{0} is active already (left by a killed pod? `systemctl stop {0}`)")]
    Active(String),
    /// Writing the environment file.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// `systemctl start` failed or the socket never appeared.
    #[error("{unit} did not start: {why} (see journalctl -u {unit})")]
    Start {
        /// The unit.
        unit: String,
        /// systemctl's first line, or the timeout.
        why: String,
    },
}

impl UnitError {
    /// 2 for what the user can fix, 1 for failures of this machine.
    pub fn exit_code(&self) -> u8 {
        match self {
            UnitError::NotRunning
            | UnitError::OtherNetns
            | UnitError::BadValue(_)
            | UnitError::TooLong(_)
            | UnitError::NoTemplate(_) => 2,
            _ => 1,
        }
    }
}

/// How one template takes its parameters: flags that become `${VAR}`
/// (one argument each, in this order in `ExecStart`), and the variable
/// holding every other argument (`$VAR`, split at whitespace).
struct Template {
    program: &'static str,
    vars: &'static [(&'static str, &'static str)],
    rest: &'static str,
}

const TEMPLATES: &[Template] = &[
    Template {
        program: "virtiofsd-gfs",
        vars: &[
            ("--socket", "GFS_SOCKET"),
            ("--shared-dir", "GFS_SHARED_DIR"),
            ("--tag", "GFS_TAG"),
        ],
        rest: "GFS_ARGS",
    },
    Template {
        program: "blk-lv",
        vars: &[
            ("--socket", "BLK_LV_SOCKET"),
            ("--path", "BLK_LV_PATH"),
            ("--serial", "BLK_LV_SERIAL"),
        ],
        rest: "BLK_LV_ARGS",
    },
    Template {
        program: "net-tap",
        vars: &[("--socket", "NET_TAP_SOCKET"), ("--tap", "NET_TAP_IFNAME")],
        rest: "NET_TAP_ARGS",
    },
];

/// One daemon as a unit instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitPlan {
    /// `PROGRAM@INSTANCE.service`.
    pub unit: String,
    /// `ENV_ROOT/PROGRAM/INSTANCE.env`.
    pub env_path: PathBuf,
    /// Its variables, in file order.
    pub env: Vec<(String, String)>,
    /// The socket the daemon listens on.
    pub socket: PathBuf,
}

fn plain(v: &str) -> Result<(), UnitError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "\"'\\$`".contains(c);
    if v.is_empty() || v.contains(bad) {
        return Err(UnitError::BadValue(v.to_string()));
    }
    Ok(())
}

impl UnitPlan {
    /// The unit for `spec` of the pod with network index `index` and id
    /// `id`, its environment file under `env_root`.
    pub fn new(
        spec: &DaemonSpec,
        index: u32,
        id: &str,
        env_root: &Path,
    ) -> Result<Self, UnitError> {
        let t = TEMPLATES
            .iter()
            .find(|t| t.program == spec.program)
            .ok_or_else(|| UnitError::NoTemplate(spec.program.clone()))?;
        let instance = format!("kc{index}-{id}-{}", spec.name);
        let unit = format!("{}@{instance}.service", t.program);
        if unit.len() > UNIT_NAME_MAX {
            return Err(UnitError::TooLong(unit));
        }
        let mut env: Vec<(String, String)> = Vec::new();
        let mut rest: Vec<&str> = Vec::new();
        let mut args = spec.args.iter();
        while let Some(a) = args.next() {
            plain(a)?;
            match t.vars.iter().find(|(flag, _)| flag == a) {
                Some((_, var)) => {
                    let v = args.next().ok_or_else(|| {
                        UnitError::NoTemplate(format!("{} {a} without a value", spec.program))
                    })?;
                    plain(v)?;
                    env.push(((*var).to_string(), v.clone()));
                }
                None => rest.push(a),
            }
        }
        // ExecStart names every ${VAR}: each must be set, in its order.
        env.sort_by_key(|(k, _)| t.vars.iter().position(|(_, var)| var == k));
        if env.len() != t.vars.len() {
            return Err(UnitError::NoTemplate(format!(
                "{} without {}",
                spec.program,
                t.vars.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(" ")
            )));
        }
        env.push((t.rest.to_string(), rest.join(" ")));
        Ok(UnitPlan {
            env_path: env_root.join(t.program).join(format!("{instance}.env")),
            unit,
            env,
            socket: spec.socket.clone(),
        })
    }

    /// The environment file's text.
    pub fn env_file(&self) -> String {
        let mut s = String::from("# written by kcradle run --devices systemd\n");
        for (k, v) in &self.env {
            s.push_str(&format!("{k}={v}\n"));
        }
        s
    }

    /// The systemctl command lines that start it.
    pub fn start_commands(&self) -> Vec<Vec<String>> {
        vec![systemctl(&["start", &self.unit])]
    }

    /// The systemctl command lines that stop it and forget a failure.
    pub fn stop_commands(&self) -> Vec<Vec<String>> {
        vec![
            systemctl(&["stop", &self.unit]),
            systemctl(&["reset-failed", &self.unit]),
        ]
    }
}

fn systemctl(args: &[&str]) -> Vec<String> {
    std::iter::once("systemctl")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// Refuses early, before anything is made, where units cannot work: no
/// systemd as PID 1 (`sd_booted()`'s test), or kcradle in another network
/// namespace than PID 1 (the units' net-tap would not see the tap).
pub fn check_host() -> Result<(), UnitError> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(UnitError::NotRunning);
    }
    // Unreadable (not root): systemctl will say what is wrong.
    let ns = |p: &str| std::fs::read_link(p).ok();
    match (ns("/proc/self/ns/net"), ns("/proc/1/ns/net")) {
        (Some(me), Some(init)) if me != init => Err(UnitError::OtherNetns),
        _ => Ok(()),
    }
}

fn run_quiet(argv: &[String]) -> Result<std::process::Output, std::io::Error> {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
}

/// Writes the environment file and starts the unit; on error the caller
/// still [`stop`]s it (the file may exist).
pub fn start(p: &UnitPlan) -> Result<(), UnitError> {
    let active =
        run_quiet(&systemctl(&["is-active", "--quiet", &p.unit])).is_ok_and(|o| o.status.success());
    if active {
        return Err(UnitError::Active(p.unit.clone()));
    }
    let io = |e| UnitError::Io(p.env_path.clone(), e);
    if let Some(dir) = p.env_path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = p.env_path.with_extension("env.tmp");
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(p.env_file().as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &p.env_path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    let _ = std::fs::remove_file(&p.socket);
    for argv in p.start_commands() {
        let out = run_quiet(&argv).map_err(|e| UnitError::Start {
            unit: p.unit.clone(),
            why: e.to_string(),
        })?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("systemctl failed")
                .to_string();
            return Err(UnitError::Start {
                unit: p.unit.clone(),
                why,
            });
        }
    }
    // Type=notify: the socket listens once start returned; allow a moment
    // for a unit edited to another type.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.socket.exists() {
        if Instant::now() > deadline {
            return Err(UnitError::Start {
                unit: p.unit.clone(),
                why: "no socket after 10 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Stops the unit, forgets a failure, removes its environment file.
pub fn stop(p: &UnitPlan) {
    for argv in p.stop_commands() {
        let _ = run_quiet(&argv);
    }
    let _ = std::fs::remove_file(&p.env_path);
}

#[cfg(test)]
mod tests {
    use super::super::daemons::Device;
    use super::*;

    const GFS_UNIT: &str = include_str!("../../../virtiofsd-gfs/virtiofsd-gfs@.service");
    const BLK_UNIT: &str = include_str!("../../../blk-lv/blk-lv@.service");
    const NET_UNIT: &str = include_str!("../../../net/net-tap@.service");

    fn spec(program: &str, name: &str, args: &[&str]) -> DaemonSpec {
        DaemonSpec {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            socket: "/b/run/x.sock".into(),
            device: Device::Disk {
                socket: "/b/run/x.sock".into(),
            },
        }
    }

    /// `ExecStart` of a template, expanded as systemd does with the
    /// environment (`${V}` one argument, `$V` split at whitespace).
    fn expand(unit: &str, env: &[(String, String)]) -> Vec<String> {
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let get = |n: &str| {
            env.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{n} not in the environment file"))
        };
        let mut out = Vec::new();
        for w in exec.split_whitespace() {
            assert!(
                !w.contains("%i"),
                "the instance name reaches the daemon: {w}"
            );
            if let Some(n) = w.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                out.push(get(n));
            } else if let Some(n) = w.strip_prefix('$') {
                out.extend(get(n).split_whitespace().map(String::from));
            } else {
                out.push(w.to_string());
            }
        }
        out
    }

    /// The unit runs exactly the child mode's command line.
    #[test]
    fn units_run_the_child_command_line() {
        let cases = [
            (
                GFS_UNIT,
                spec(
                    "virtiofsd-gfs",
                    "fs-rootfs",
                    &[
                        "--socket",
                        "/b/run/fs-rootfs.sock",
                        "--shared-dir",
                        "/b/rootfs",
                        "--tag",
                        "rootfs",
                        "--readonly",
                        "--cache",
                        "always",
                        "--sandbox",
                        "chroot",
                    ],
                ),
                "/usr/local/bin/virtiofsd-gfs",
            ),
            (
                BLK_UNIT,
                spec(
                    "blk-lv",
                    "blk-data",
                    &[
                        "--socket",
                        "/b/run/blk-data.sock",
                        "--path",
                        "/b/volumes/data.img",
                        "--serial",
                        "lv-data",
                    ],
                ),
                "/usr/local/bin/blk-lv",
            ),
            (
                NET_UNIT,
                spec(
                    "net-tap",
                    "net",
                    &[
                        "--socket",
                        "/b/run/net.sock",
                        "--tap",
                        "kc3-web",
                        "--mac",
                        "02:00:00:00:00:03",
                    ],
                ),
                "/usr/local/bin/net-tap",
            ),
        ];
        for (unit, s, bin) in cases {
            let p = UnitPlan::new(&s, 3, "web", Path::new("/run/cradle")).unwrap();
            let mut want = vec![bin.to_string()];
            want.extend(s.args.iter().cloned());
            assert_eq!(expand(unit, &p.env), want, "{}", p.unit);
            assert_eq!(
                p.env_path,
                Path::new("/run/cradle")
                    .join(&s.program)
                    .join(format!("kc3-web-{}.env", s.name))
            );
            // The template reads that file.
            let read = format!("EnvironmentFile=-/run/cradle/{}/%i.env", s.program);
            assert!(unit.contains(&read), "{}", p.unit);
        }
    }

    #[test]
    fn names_files_and_commands() {
        let s = spec(
            "virtiofsd-gfs",
            "fs-rootfs",
            &[
                "--socket",
                "/b/run/fs-rootfs.sock",
                "--shared-dir",
                "/b/rootfs",
                "--tag",
                "rootfs",
                "--readonly",
            ],
        );
        let a = UnitPlan::new(&s, 0, "web", Path::new("/run/cradle")).unwrap();
        let b = UnitPlan::new(&s, 1, "web", Path::new("/run/cradle")).unwrap();
        assert_eq!(a.unit, "virtiofsd-gfs@kc0-web-fs-rootfs.service");
        assert_ne!(a.unit, b.unit, "two pods, two instances");
        assert_ne!(a.env_path, b.env_path);
        assert_eq!(
            a.env_file(),
            "# written by kcradle run --devices systemd\nGFS_SOCKET=/b/run/fs-rootfs.sock\n\
             GFS_SHARED_DIR=/b/rootfs\nGFS_TAG=rootfs\nGFS_ARGS=--readonly\n"
        );
        assert_eq!(
            a.start_commands(),
            [[
                "systemctl",
                "start",
                "virtiofsd-gfs@kc0-web-fs-rootfs.service"
            ]]
        );
        assert_eq!(
            a.stop_commands(),
            [
                [
                    "systemctl",
                    "stop",
                    "virtiofsd-gfs@kc0-web-fs-rootfs.service"
                ],
                [
                    "systemctl",
                    "reset-failed",
                    "virtiofsd-gfs@kc0-web-fs-rootfs.service"
                ]
            ]
        );
    }

    #[test]
    fn refuses_what_a_unit_cannot_carry() {
        let with = |path: &str| {
            spec(
                "blk-lv",
                "blk-d",
                &["--socket", "/s", "--path", path, "--serial", "lv-d"],
            )
        };
        for bad in ["/a b/x.img", "/a\"b", "/a$b", "/a\\b", "/a\nb"] {
            let e = UnitPlan::new(&with(bad), 0, "p", Path::new("/run/cradle")).unwrap_err();
            assert!(matches!(e, UnitError::BadValue(_)), "{bad:?}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
        let long = "v".repeat(240);
        let e = UnitPlan::new(
            &spec(
                "blk-lv",
                &long,
                &["--socket", "/s", "--path", "/p", "--serial", "s"],
            ),
            0,
            "p",
            Path::new("/run/cradle"),
        )
        .unwrap_err();
        assert!(matches!(e, UnitError::TooLong(_)));
        let e = UnitPlan::new(
            &spec("blk-lv", "x", &["--socket", "/s"]),
            0,
            "p",
            Path::new("/r"),
        )
        .unwrap_err();
        assert!(matches!(e, UnitError::NoTemplate(_)));
    }
}
