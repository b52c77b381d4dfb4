//! Container semantics in host mode, checked on the console mirror and the
//! pod's exit status: what Docker would run, as whom, where, how often.

mod common;
use common::HostPod;
use std::time::Duration;

fn pod(containers: &str) -> String {
    format!(
        r#"{{"version":1,"id":"sem","hostname":"semhost","shutdown_grace_secs":2,"containers":[{containers}]}}"#
    )
}

#[test]
fn entrypoint_cmd_env_workdir_and_named_user() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"c","critical":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"entrypoint":["/bin/sh","-c"],
              "cmd":["echo argv=$0:$1 A=$A HOME=$HOME host=$(hostname) cwd=$(pwd) ids=$(id -u):$(id -g):$(id -G | tr ' ' ,); test -f /proc/1/stat && echo pid1=$(cat /proc/1/comm)","x","y"],
              "env":["A=b c"],"workdir":"/srv/app","user":"app"}}"#,
    ));
    assert_eq!(p.wait(Duration::from_secs(30)), 0, "{}", p.console());
    let c = p.console();
    assert!(
        c.contains("[c] argv=x:y A=b c HOME=/home/app host=semhost cwd=/srv/app ids=1000:1000:"),
        "{c}"
    );
    // Supplementary groups come from /etc/group membership.
    assert!(c.contains("50") && c.contains("pid1="), "{c}");
}

#[test]
fn numeric_user_with_group_and_unknown_user() {
    let mut p = HostPod::start(&pod(r#"{"name":"num","image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["sh","-c","echo ids=$(id -u):$(id -g) home=$HOME"],"user":"4242:staff"}},
           {"name":"bad","image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["true"],"user":"nosuchuser"}}"#));
    let status = p.wait(Duration::from_secs(30));
    let c = p.console();
    assert!(c.contains("[num] ids=4242:50 home=/"), "{c}");
    assert!(c.contains("unable to find user nosuchuser"), "{c}");
    // No critical container: the first failed one gives the status.
    assert_eq!(status, 1, "{c}");
}

#[test]
fn missing_command_exits_127() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"x","critical":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["no-such-binary"]}}"#,
    ));
    assert_eq!(p.wait(Duration::from_secs(30)), 127);
    assert!(p.console().contains("executable file not found in $PATH"));
}

#[test]
fn restart_policy_stops_at_max_restarts() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"r","critical":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "restart":{"policy":"on-failure","max_restarts":2,"delay_ms":50},
            "process":{"cmd":["sh","-c","echo run; date +%s%N >> /state; wc -l < /state; exit 4"]}}"#,
    ));
    assert_eq!(p.wait(Duration::from_secs(30)), 4);
    let c = p.console();
    // Three runs (one start, two restarts); the writable layer survives
    // restarts, so the third run sees three lines.
    assert_eq!(c.matches("[r] run").count(), 3, "{c}");
    assert!(c.contains("[r] 3"), "{c}");
}

#[test]
fn on_success_policy_does_not_restart_a_failure() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"s","critical":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "restart":{"policy":"on-success","max_restarts":5},
            "process":{"cmd":["sh","-c","echo once; exit 6"]}}"#,
    ));
    assert_eq!(p.wait(Duration::from_secs(30)), 6);
    assert_eq!(p.console().matches("[s] once").count(), 1);
}

#[test]
fn critical_exit_ends_the_pod_and_stops_the_others() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"sidecar","image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["sh","-c","trap 'echo sidecar-term; exit 0' TERM; while :; do sleep 0.1; done"]}},
           {"name":"main","critical":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["sh","-c","sleep 1; exit 9"]}}"#,
    ));
    let start = std::time::Instant::now();
    assert_eq!(p.wait(Duration::from_secs(30)), 9, "{}", p.console());
    // The sidecar got SIGTERM (forwarded by its namespace init) and left
    // within the grace period instead of being killed after it.
    assert!(
        p.console().contains("[sidecar] sidecar-term"),
        "{}",
        p.console()
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn orphans_are_reaped_by_the_namespace_init() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"z","critical":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["sh","-c","sh -c 'sleep 3 & echo $! > /orphan'; o=$(cat /orphan); echo ppid=$(cut -d' ' -f4 /proc/$o/stat); while [ -e /proc/$o ] && [ \"$(cut -d' ' -f3 /proc/$o/stat 2>/dev/null)\" != Z ]; do sleep 0.05; done; sleep 0.5; if [ -e /proc/$o ]; then echo zombie=$(cut -d' ' -f3 /proc/$o/stat); else echo reaped; fi"]}}"#,
    ));
    assert_eq!(p.wait(Duration::from_secs(30)), 0, "{}", p.console());
    let c = p.console();
    assert!(c.contains("[z] ppid=1"), "{c}");
    assert!(c.contains("[z] reaped"), "{c}");
}

#[test]
fn bad_config_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.json");
    std::fs::write(&cfg, r#"{"version":9,"id":"x","containers":[]}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cradle-init"))
        .args(["host", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("version 9"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cradle-init"))
        .args(["host", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn volumes_overlay_upper_on_a_volume_and_plain_dir_roots() {
    let mut p = HostPod::start(
        r#"{"version":1,"id":"vol","shutdown_grace_secs":2,
        "volumes":[
          {"name":"shared","source":{"dir":{"path":"SHARED"}},"mount_point":"/shared"},
          {"name":"ro","source":{"dir":{"path":"SHARED"}},"mount_point":"/ro","read_only":true},
          {"name":"scratch","source":"tmpfs","mount_point":"/scratch"},
          {"name":"up","source":"tmpfs"}],
        "containers":[
          {"name":"a","image":{"rootfs":{"dir":"ROOTFS"},"upper_volume":"up"},
           "process":{"cmd":["sh","-c","echo from-a > /shared/a.txt; (echo x > /ro/x) 2>/dev/null || echo ro-refused; echo s > /scratch/s && echo scratch=$(cat /scratch/s); echo layer > /in-upper; grep ' / ' /proc/mounts | cut -d' ' -f3; ls /scratch /ro"]}},
          {"name":"b","critical":true,"image":{"rootfs":{"dir":"ROOTFS"},"overlay":false},
           "process":{"cmd":["sh","-c","sleep 0.5; echo plain > /written-by-b; cat /shared/a.txt"]}}]}"#,
    );
    assert_eq!(p.wait(Duration::from_secs(30)), 0, "{}", p.console());
    let c = p.console();
    assert!(c.contains("[a] ro-refused"), "{c}");
    assert!(c.contains("[a] scratch=s"), "{c}");
    assert!(c.contains("[a] overlay"), "{c}");
    assert!(c.contains("[b] from-a"), "{c}");
    let shared = p.dir.path().join("shared");
    assert_eq!(
        std::fs::read_to_string(shared.join("a.txt")).unwrap(),
        "from-a\n"
    );
    assert!(!shared.join("x").exists());
    // Without overlay the container wrote into the image directory itself;
    // with it, the image stayed untouched.
    let root = p.dir.path().join("rootfs");
    assert_eq!(
        std::fs::read_to_string(root.join("written-by-b")).unwrap(),
        "plain\n"
    );
    assert!(!root.join("in-upper").exists());
}

#[test]
fn docker_default_capabilities_unless_privileged() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"plain","image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["sh","-c","grep CapBnd /proc/self/status; mkdir -p /m; mount -t tmpfs none /m 2>/dev/null && echo plain-mounted || echo plain-refused"]}},
           {"name":"priv","privileged":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["sh","-c","mkdir -p /m; mount -t tmpfs none /m && echo priv-mounted"]}}"#,
    ));
    assert_eq!(p.wait(Duration::from_secs(30)), 0, "{}", p.console());
    let c = p.console();
    assert!(c.contains("[plain] CapBnd:\t00000000a80425fb"), "{c}");
    assert!(c.contains("[plain] plain-refused"), "{c}");
    assert!(c.contains("[priv] priv-mounted"), "{c}");
}

#[test]
fn initramfs_subcommand_packs_init_modules_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pod.json");
    std::fs::write(
        &cfg,
        r#"{"version":1,"id":"p","containers":[{"name":"a","image":{"rootfs":{"dir":"/img"}},"process":{"cmd":["true"]}}]}"#,
    )
    .unwrap();
    let kernel = cradle_testbed::Kernel::debian().expect("Debian cloud kernel");
    let out = dir.path().join("initrd.cpio");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cradle-init"))
        .args(["initramfs", "--out"])
        .arg(&out)
        .arg("--kernel-modules")
        .arg(&kernel.modules)
        .args(["--modules", "virtio_net,overlay", "--config"])
        .arg(&cfg)
        .arg("--tree")
        .arg(format!(
            "{}:/img",
            common::busybox_rootfs(dir.path()).display()
        ))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let list = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -t --quiet < {}", out.display()))
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&list.stdout);
    for want in [
        "init",
        "img/bin/busybox",
        "img/bin/sh",
        "img/etc/passwd",
        "lib/modules/virtio_net.ko",
        "lib/modules/net_failover.ko",
        "lib/modules/overlay.ko",
        "cradle/modules.order",
    ] {
        assert!(names.lines().any(|l| l == want), "{want}: {names}");
    }
    // The config is a second archive after the first one's trailer.
    let data = std::fs::read(&out).unwrap();
    let tail = String::from_utf8_lossy(&data[data.len().saturating_sub(2048)..]).into_owned();
    let at = tail
        .find("cradle/config.json")
        .expect("config archive at the end");
    assert!(tail[at..].contains("\"id\": \"p\""), "{tail}");
    assert!(tail[at..].contains("TRAILER!!!"), "{tail}");
    // A bad tree argument and a bad config are usage errors.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_cradle-init"))
        .args(["initramfs", "--out", "/dev/null", "--tree", "relative"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    std::fs::write(&cfg, "{}").unwrap();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_cradle-init"))
        .args(["initramfs", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn pod_mounts_stay_out_of_the_host_mount_table() {
    let mut p = HostPod::start(&pod(
        r#"{"name":"long","critical":true,"image":{"rootfs":{"dir":"ROOTFS"}},
            "process":{"cmd":["sleep","30"]}}"#,
    ));
    p.wait_running("long");
    let run = p.run_dir();
    let run = run.to_str().unwrap();
    // The container root is mounted, but only in the pod's own namespace.
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !ours.contains(run),
        "pod mounts leaked into the host:\n{ours}"
    );
    let theirs = std::fs::read_to_string(format!("/proc/{}/mountinfo", p.pid())).unwrap();
    assert!(theirs.contains(run), "no container root mounted:\n{theirs}");
    // Even killed outright, the pod leaves no mount behind.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &p.pid().to_string()])
        .status();
    let _ = p.wait(Duration::from_secs(10));
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!after.contains(run), "{after}");
}
