//! `kcradle run --devices systemd`, on machines without systemd as PID 1:
//! what `--dry-run` plans (environment files, systemctl command lines,
//! teardown) is checked with `systemd-analyze verify` against the real
//! template units, the units' command lines equal the child mode's, two
//! pods of the same name get distinct instances, and the daemons start
//! from those files as systemd would start them (READY=1, socket). A
//! real `run --devices systemd` without systemd is refused with one line,
//! exit 2, and nothing made.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin_dir, build_binaries, Netns};
use cradle_image::write::write_docker_archive;
use cradle_image::ImageConfig;
use cradle_testbed::daemon::Daemon;
use cradle_testbed::unit::TemplateUnit;
use cradle_vmm::launcher::pods::PodRecord;
use cradle_vmm::launcher::state::StateDir;

fn kcradle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kcradle"))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A bundle `parent/web` with a GFS and an LV volume.
fn summon(parent: &Path, state: &Path) -> PathBuf {
    fs::create_dir_all(parent).unwrap();
    let archive = parent.join("img.tar");
    let cfg = ImageConfig {
        cmd: Some(vec!["/bin/busybox".into(), "true".into()]),
        ..Default::default()
    };
    write_docker_archive(&archive, &cfg, &[common::web_layer("x\n")], "t/web:1").unwrap();
    let b = parent.join("web");
    let out = kcradle()
        .arg("summon")
        .arg(&b)
        .arg(format!("docker-archive:{}", archive.display()))
        .args(["-q", "-v", "gfs:shared:/shared", "-v", "lv:data:16M:/data"])
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b
}

fn dry_run(b: &Path, state: &Path, systemd: bool) -> String {
    let mut cmd = kcradle();
    cmd.arg("run")
        .arg(b)
        .args(["--dry-run", "--sandbox", "none", "--state-dir"])
        .arg(state);
    if systemd {
        cmd.args(["--devices", "systemd"]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One unit of a dry run: its environment file and unit name.
#[derive(Debug)]
struct Planned {
    env_path: PathBuf,
    env: BTreeMap<String, String>,
    unit: String,
}

fn parse_units(plan: &str) -> (Vec<Planned>, Vec<String>) {
    let mut units = Vec::new();
    let mut teardown = Vec::new();
    let mut lines = plan.lines();
    let mut current: Option<Planned> = None;
    while let Some(l) = lines.next() {
        if l == "# on exit, in reverse order" {
            teardown = lines.by_ref().map(String::from).collect();
            break;
        }
        if let Some(p) = l.strip_prefix("# /") {
            current = Some(Planned {
                env_path: PathBuf::from(format!("/{p}")),
                env: BTreeMap::new(),
                unit: String::new(),
            });
        } else if let Some(u) = l.strip_prefix("systemctl start ") {
            let mut p = current.take().expect("start without an env file");
            p.unit = u.to_string();
            units.push(p);
        } else if let Some(c) = current.as_mut() {
            if let Some((k, v)) = l.split_once('=') {
                c.env.insert(k.to_string(), v.to_string());
            }
        }
    }
    (units, teardown)
}

/// The template of `program`, as installed: ExecStart pointing at the
/// built binary, environment files under `env_root` instead of /run/cradle.
fn template(program: &str, env_root: &Path) -> TemplateUnit {
    let file = match program {
        "virtiofsd-gfs" => "virtiofsd-gfs/virtiofsd-gfs@.service",
        "blk-lv" => "blk-lv/blk-lv@.service",
        "net-tap" => "net/net-tap@.service",
        other => panic!("no template for {other}"),
    };
    let unit = fs::read_to_string(workspace().join(file))
        .unwrap()
        .replace("/run/cradle/", &format!("{}/", env_root.display()));
    TemplateUnit::new(program, &unit)
        .with_binary(&bin_dir().join(program))
        .unwrap()
}

/// A planned unit's environment, as `ExecStart` expansion takes it.
fn env_pairs(env: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn program_and_instance(unit: &str) -> (&str, &str) {
    let (p, rest) = unit.split_once('@').unwrap();
    (p, rest.strip_suffix(".service").unwrap())
}

#[test]
fn planned_units_verify_and_run_the_child_command_lines() {
    build_binaries();
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let b = summon(&t.path().join("a"), &state);
    let plan = dry_run(&b, &state, true);
    let (units, teardown) = parse_units(&plan);
    let names: Vec<&str> = units.iter().map(|u| u.unit.as_str()).collect();
    assert_eq!(
        names,
        [
            "virtiofsd-gfs@kc0-web-fs-rootfs.service",
            "virtiofsd-gfs@kc0-web-fs-shared.service",
            "blk-lv@kc0-web-blk-data.service",
            "net-tap@kc0-web-net.service",
        ],
        "{plan}"
    );
    // Teardown: every unit stopped, its failure forgotten, its file gone,
    // in reverse order.
    let mut want = Vec::new();
    for u in units.iter().rev() {
        want.push(format!("systemctl stop {}", u.unit));
        want.push(format!("systemctl reset-failed {}", u.unit));
        want.push(format!("rm {}", u.env_path.display()));
    }
    assert_eq!(teardown, want);
    assert_eq!(units[0].env["GFS_TAG"], "rootfs");
    assert_eq!(units[1].env["GFS_TAG"], "gfs-shared");
    assert_eq!(units[2].env["BLK_LV_SERIAL"], "lv-data");

    // The child mode's command lines, for comparison.
    let children: Vec<Vec<String>> = dry_run(&b, &state, false)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(' ').map(String::from).collect())
        .collect();
    assert_eq!(children.len(), units.len());

    let env_root = t.path().join("run-cradle");
    let unit_dir = t.path().join("units");
    fs::create_dir_all(&unit_dir).unwrap();
    for (u, child) in units.iter().zip(&children) {
        let (program, instance) = program_and_instance(&u.unit);
        assert_eq!(
            u.env_path,
            Path::new("/run/cradle")
                .join(program)
                .join(format!("{instance}.env"))
        );
        // The file where the installed template looks for it.
        let env_file = env_root.join(program).join(format!("{instance}.env"));
        fs::create_dir_all(env_file.parent().unwrap()).unwrap();
        let text: String = u.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(&env_file, text).unwrap();
        let unit = template(program, &env_root);
        unit.verify(&unit_dir, &u.unit).unwrap();
        // The unit runs what the child mode runs.
        let argv = unit.exec_start(&env_pairs(&u.env), instance);
        assert_eq!(Path::new(&argv[0]), bin_dir().join(program));
        assert_eq!(child[0], program);
        assert_eq!(argv[1..], child[1..], "{}", u.unit);
    }

    // The storage daemons start from those files as systemd would start
    // them: READY=1 on NOTIFY_SOCKET, listening socket, exit 0 on SIGTERM.
    for u in &units[..3] {
        let (program, instance) = program_and_instance(&u.unit);
        let argv = template(program, &env_root).exec_start(&env_pairs(&u.env), instance);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        let mut daemon = Daemon::spawn_ready(&mut cmd, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}: {e}", u.unit));
        let sock = PathBuf::from(
            &u.env[if program == "blk-lv" {
                "BLK_LV_SOCKET"
            } else {
                "GFS_SOCKET"
            }],
        );
        assert!(sock.exists(), "{}: no socket", u.unit);
        let status = daemon
            .terminate(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}: {e}", u.unit));
        assert_eq!(status.code(), Some(0), "{}", u.unit);
        let _ = fs::remove_file(&sock);
    }

    // A second bundle named web, planned while the first runs (its live
    // record holds network index 0): other instances, other files; the
    // tag still comes from the file.
    let first = PodRecord {
        id: "web".into(),
        dir: fs::canonicalize(&b).unwrap(),
        pid: std::process::id(),
        net_index: 0,
        address: "169.254.128.2".into(),
        started: 0,
    };
    let st = StateDir {
        root: state.clone(),
    };
    first.create(&st).unwrap();
    let state2 = t.path().join("state-b");
    let b2 = summon(&t.path().join("b"), &state2);
    // Same state dir as the running pod: that is what allocates indexes.
    let (units2, _) = parse_units(&dry_run(&b2, &state, true));
    first.remove(&st);
    assert_eq!(units2.len(), units.len());
    for (a, b) in units.iter().zip(&units2) {
        assert_ne!(a.unit, b.unit);
        assert_ne!(a.env_path, b.env_path);
        assert!(b.unit.contains("@kc1-web-"), "{}", b.unit);
    }
    assert_eq!(units2[0].env["GFS_TAG"], "rootfs");
}

#[test]
fn devices_systemd_without_systemd_is_refused_with_nothing_made() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let b = summon(&t.path().join("a"), &state);
    let before_state: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // In a namespace of our own: were anything made, it is made there.
    let ns = Netns::new("sd");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(env!("CARGO_BIN_EXE_kcradle"))
        .arg("run")
        .arg(&b)
        .args(["--devices", "systemd", "--state-dir"])
        .arg(&state)
        .env("KCRADLE_BIN_DIR", bin_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    // This machine has no systemd as PID 1; a machine with one still
    // refuses, because kcradle is in another network namespace.
    let why = if Path::new("/run/systemd/system").is_dir() {
        "another network namespace"
    } else {
        "systemd is not running"
    };
    assert!(
        err.starts_with("kcradle: run: --devices systemd: ") && err.contains(why),
        "{err}"
    );
    // Nothing made: no pod record, initramfs, sockets, logs, env files,
    // tap or nftables table.
    let after_state: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after_state, before_state);
    for d in ["run", "logs"] {
        assert_eq!(fs::read_dir(b.join(d)).unwrap().count(), 0, "{d}");
    }
    assert!(!b.join("docker.sock").exists());
    for p in ["virtiofsd-gfs", "blk-lv", "net-tap"] {
        let leftovers: Vec<_> = fs::read_dir(Path::new("/run/cradle").join(p))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("kc0-web-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{p}: {leftovers:?}");
    }
    assert!(!ns.sh(&["ip", "-o", "link"]).contains("kc0"));
    assert!(!ns.sh(&["nft", "list", "tables"]).contains("kcradle"));
}
