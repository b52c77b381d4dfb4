//! The real docker CLI against vdocker in host mode: ps, inspect, logs,
//! exec (piped stdin, and -t under a pseudo-terminal), cp both ways, kill,
//! wait, attach, and the error shape of an unknown endpoint.

mod common;
use common::{err_text, ok, text, HostPod};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const POD: &str = r#"{"version":1,"id":"cli","hostname":"clihost","shutdown_grace_secs":2,
  "containers":[
    {"name":"main","image":{"rootfs":{"dir":"ROOTFS"},"reference":"busybox:test"},
     "process":{"cmd":["sh","-c","echo out1; echo err1 >&2; trap 'echo caught-term; exit 0' TERM; while :; do sleep 0.1; done"],
                "env":["GREETING=hello"],"workdir":"/data"}},
    {"name":"short","image":{"rootfs":{"dir":"ROOTFS"}},
     "process":{"cmd":["sh","-c","exit 3"]}},
    {"name":"counter","image":{"rootfs":{"dir":"ROOTFS"}},
     "process":{"cmd":["sh","-c","for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done"]}},
    {"name":"echoer","image":{"rootfs":{"dir":"ROOTFS"}},
     "process":{"cmd":["sh","-c","while read l; do echo got:$l; [ \"$l\" = quit ] && exit 5; done"],"open_stdin":true}},
    {"name":"sleeper","image":{"rootfs":{"dir":"ROOTFS"}},
     "process":{"cmd":["sleep","600"]}}
  ]}"#;

fn start() -> HostPod {
    let p = HostPod::start(POD);
    p.wait_console("[main] out1", Duration::from_secs(20));
    p.wait_console("[main!] err1", Duration::from_secs(20));
    p
}

#[test]
fn ps_and_inspect() {
    let p = start();
    ok(p.docker(&["wait", "short"]));
    let ps = ok(p.docker(&["ps", "--format", "{{.Names}} {{.Image}} {{.Status}}"]));
    assert!(ps.contains("main busybox:test Up"), "{ps}");
    let all = ok(p.docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
    assert!(all.contains("short Exited (3)"), "{all}");
    assert!(!ps.contains("short"), "{ps}");
    let fmt = "{{.State.Running}} {{.Config.Tty}} {{.Config.WorkingDir}} {{.Name}} {{len .Id}}";
    let insp = ok(p.docker(&["inspect", "-f", fmt, "main"]));
    assert_eq!(insp.trim(), "true false /data /main 64");
    let pid = ok(p.docker(&["inspect", "-f", "{{.State.Pid}}", "main"]));
    assert!(pid.trim().parse::<u32>().unwrap() > 1);
    // Id prefixes work like Docker's.
    let id = ok(p.docker(&["inspect", "-f", "{{.Id}}", "main"]));
    let by_prefix = ok(p.docker(&["inspect", "-f", "{{.Name}}", &id[..12]]));
    assert_eq!(by_prefix.trim(), "/main");
    let missing = p.docker(&["inspect", "nosuch"]);
    assert!(!missing.status.success());
    assert!(
        err_text(&missing).contains("No such"),
        "{}",
        err_text(&missing)
    );
}

#[test]
fn logs_streams_tail_timestamps_and_follow() {
    let p = start();
    let out = p.docker(&["logs", "main"]);
    assert!(out.status.success());
    assert_eq!(text(&out), "out1\n");
    assert_eq!(err_text(&out), "err1\n");
    // -f on a running container streams until it exits.
    let follow = ok(p.docker(&["logs", "-f", "counter"]));
    assert_eq!(follow, "line1\nline2\nline3\nline4\nline5\n");
    let tail = ok(p.docker(&["logs", "--tail", "2", "counter"]));
    assert_eq!(tail, "line4\nline5\n");
    let ts = ok(p.docker(&["logs", "-t", "--tail", "1", "counter"]));
    let (stamp, rest) = ts.split_once(' ').unwrap();
    assert_eq!(rest, "line5\n");
    assert!(stamp.len() == 30 && stamp.ends_with('Z'), "{stamp}");
    // --since after everything was written gives nothing.
    let none = ok(p.docker(&["logs", "--since", "2999-01-01T00:00:00Z", "counter"]));
    assert_eq!(none, "");
}

#[test]
fn exec_with_piped_stdin_env_and_exit_codes() {
    let p = start();
    let out = p.docker_with_stdin(
        &[
            "exec",
            "-i",
            "main",
            "sh",
            "-c",
            "tr a-z A-Z; echo $GREETING in $(pwd) >&2",
        ],
        Some(b"piped input\n"),
    );
    assert!(out.status.success(), "{}", err_text(&out));
    assert_eq!(text(&out), "PIPED INPUT\n");
    assert_eq!(err_text(&out), "hello in /data\n");
    let code = p.docker(&["exec", "main", "sh", "-c", "exit 7"]);
    assert_eq!(code.status.code(), Some(7));
    let user = ok(p.docker(&[
        "exec",
        "-u",
        "app",
        "-w",
        "/tmp",
        "main",
        "sh",
        "-c",
        "id -un; pwd",
    ]));
    assert_eq!(user, "app\n/tmp\n");
    // The exec sees the container's PID namespace and hostname.
    let ps = ok(p.docker(&["exec", "main", "sh", "-c", "hostname; cat /proc/1/comm"]));
    assert!(ps.starts_with("clihost\n"), "{ps}");
    let missing = p.docker(&["exec", "main", "nosuchcmd"]);
    assert_eq!(missing.status.code(), Some(127), "{}", err_text(&missing));
    let stopped = p.docker(&["exec", "short", "true"]);
    assert!(!stopped.status.success());
    assert!(
        err_text(&stopped).contains("not running"),
        "{}",
        err_text(&stopped)
    );
}

#[test]
fn exec_tty_under_a_pseudo_terminal() {
    let p = start();
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", "script", "-qec"])
        .arg(p.docker_cmdline("exec -t main sh -c 'tty; echo term=$TERM; exit 4'"))
        .arg("/dev/null");
    let out = common::run(cmd, None);
    let t = text(&out);
    assert!(t.contains("/dev/pts/"), "{t} {}", err_text(&out));
    assert!(t.contains("term=xterm"), "{t}");
    assert_eq!(out.status.code(), Some(4), "{t}");
}

#[test]
fn cp_a_tree_both_ways() {
    let p = start();
    let src = p.dir.path().join("src/tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        src.join("sub/script.sh"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    std::fs::write(src.join("plain"), "data").unwrap();
    std::fs::set_permissions(src.join("plain"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("sub/script.sh", src.join("link")).unwrap();
    ok(p.docker(&["cp", src.to_str().unwrap(), "main:/data/"]));
    let inside = ok(p.docker(&[
        "exec", "main", "sh", "-c",
        "stat -c '%n %a' /data/tree/sub/script.sh /data/tree/plain; readlink /data/tree/link; /data/tree/link",
    ]));
    assert_eq!(
        inside,
        "/data/tree/sub/script.sh 751\n/data/tree/plain 600\nsub/script.sh\nhi\n"
    );
    ok(p.docker(&[
        "exec",
        "main",
        "sh",
        "-c",
        "mkdir -p /made/d && echo made > /made/d/f && chmod 640 /made/d/f && ln -s d/f /made/l",
    ]));
    let dst = p.dir.path().join("out");
    ok(p.docker(&["cp", "main:/made", dst.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(dst.join("d/f")).unwrap(), "made\n");
    let mode = std::fs::metadata(dst.join("d/f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(
        std::fs::read_link(dst.join("l")).unwrap().to_str(),
        Some("d/f")
    );
    // A single file out, into a new name.
    let one = p.dir.path().join("hostname.txt");
    ok(p.docker(&["cp", "main:/etc/hostname", one.to_str().unwrap()]));
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "clihost\n");
    let missing = p.docker(&["cp", "main:/nonexistent", dst.to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(
        err_text(&missing).contains("Could not find the file"),
        "{}",
        err_text(&missing)
    );
}

#[test]
fn kill_wait_and_signal_forwarding() {
    let p = start();
    assert_eq!(ok(p.docker(&["wait", "short"])).trim(), "3");
    ok(p.docker(&["kill", "-s", "TERM", "main"]));
    assert_eq!(ok(p.docker(&["wait", "main"])).trim(), "0");
    assert!(ok(p.docker(&["logs", "main"])).contains("caught-term"));
    ok(p.docker(&["kill", "sleeper"]));
    assert_eq!(ok(p.docker(&["wait", "sleeper"])).trim(), "137");
    let again = p.docker(&["kill", "sleeper"]);
    assert!(!again.status.success());
    assert!(
        err_text(&again).contains("is not running"),
        "{}",
        err_text(&again)
    );
}

#[test]
fn attach_feeds_stdin_and_returns_the_exit_code() {
    let p = start();
    let out = p.docker_with_stdin(&["attach", "echoer"], Some(b"ping\nquit\n"));
    assert_eq!(text(&out), "got:ping\ngot:quit\n", "{}", err_text(&out));
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn unknown_endpoint_gives_a_docker_error() {
    let p = start();
    let out = p.docker(&["images"]);
    assert!(!out.status.success());
    let e = err_text(&out);
    assert!(
        e.contains("Error response from daemon: page not found: vdocker does not implement GET"),
        "{e}"
    );
    let v = ok(p.docker(&["version", "--format", "{{.Server.APIVersion}}"]));
    assert_eq!(v.trim(), "1.43");
}

#[test]
fn attach_to_a_tty_container_under_a_pseudo_terminal_with_resize() {
    let p = HostPod::start(
        r#"{"version":1,"id":"tty","containers":[
        {"name":"tb","image":{"rootfs":{"dir":"ROOTFS"}},
         "process":{"cmd":["sh","-c","read l; stty size; echo got:$l; exit 6"],"tty":true,"open_stdin":true}},
        {"name":"keeper","image":{"rootfs":{"dir":"ROOTFS"}},"process":{"cmd":["sleep","600"]}}]}"#,
    );
    // script gives docker a terminal of 33x99, which attach sends as a
    // resize; the typed line arrives through the container's pty.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!(
        "(sleep 1; printf 'hello\\r'; sleep 3) | timeout 30 script -qec 'stty rows 33 cols 99; {}' /dev/null",
        p.docker_cmdline("attach tb")
    ));
    let out = common::run(cmd, None);
    let t = text(&out).replace('\r', "");
    assert!(t.contains("33 99\ngot:hello\n"), "{t:?} {}", err_text(&out));
    assert_eq!(out.status.code(), Some(6), "{t:?}");
    assert_eq!(
        ok(p.docker(&["inspect", "-f", "{{.Config.Tty}}", "tb"])).trim(),
        "true"
    );
    // The raw (unframed) log of a tty container.
    assert!(ok(p.docker(&["logs", "tb"])).contains("got:hello"));
}
