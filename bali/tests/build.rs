//! `bali build` end to end: a busybox base made here, every instruction,
//! then the output read back with tar and `bali verify`.

mod common;
use common::*;
use cradle_testbed::registry::DockerRegistry;
use std::fs;
use std::path::Path;
use std::process::Command;

const DOCKERFILE: &str = r#"# every supported instruction
ARG BASE=docker-archive:base.tar
FROM ${BASE}
ARG GREETING=hi
ENV APP_HOME=/srv/app \
    MODE="two words"
WORKDIR $APP_HOME
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["touch", "/exec-form-by-name"]
RUN echo "$GREETING from run" > run.txt && id -u > uid.txt && pwd > pwd.txt
COPY hello.txt ./
COPY --chown=app:app dir /srv/app/dir/
COPY --chmod=600 hello.txt /secret.txt
COPY --chown=1234 hello.txt /chowned-num.txt
COPY --chown=app:root hello.txt /chowned-grp.txt
ADD archive.tar.gz /opt/
ADD plain.txt /opt/plain.txt
COPY *.md /multi/
USER app
RUN id -u > /tmp/user-run.txt && echo "$MODE $HOME" > /tmp/env.txt && test -s /etc/resolv.conf
LABEL org.example.name="bali test" version=1
EXPOSE 8080 53/udp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $GREETING"]
"#;

fn context(dir: &Path) {
    busybox_docker_archive(&dir.join("base.tar"));
    fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    fs::write(dir.join("plain.txt"), "plain\n").unwrap();
    fs::write(dir.join("a.md"), "a\n").unwrap();
    fs::write(dir.join("b.md"), "b\n").unwrap();
    fs::write(dir.join("ignored.md"), "no\n").unwrap();
    fs::write(dir.join("debug.log"), "no\n").unwrap();
    fs::create_dir_all(dir.join("dir/sub")).unwrap();
    fs::write(dir.join("dir/sub/a.txt"), "a\n").unwrap();
    fs::write(dir.join("dir/skip.log"), "no\n").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "x/y.txt", &b"y\n"[..]).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    fs::write(dir.join("archive.tar.gz"), gz.finish().unwrap()).unwrap();
    fs::write(
        dir.join(".dockerignore"),
        "*.log\n**/*.log\nignored.md\nbase.tar.none\n",
    )
    .unwrap();
    fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
}

fn build(keydir: &Path, ctx: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = bali(keydir);
    c.arg("build").arg(out).args(extra).arg(ctx);
    run(c)
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn every_instruction_from_docker_archive() {
    let keys = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let outdir = tempfile::tempdir().unwrap();
    context(ctx.path());
    let out = outdir.path().join("app.tar.gz");
    let o = build(
        keys.path(),
        ctx.path(),
        &out,
        &["--build-arg", "GREETING=hello"],
    );
    assert!(o.status.success());
    assert!(
        leftovers(outdir.path()).is_empty(),
        "{:?}",
        leftovers(outdir.path())
    );

    // tar lists it.
    let t = Command::new("tar").arg("tzf").arg(&out).output().unwrap();
    assert!(t.status.success());
    let list = String::from_utf8(t.stdout).unwrap();
    for want in [
        ".bali/config.json",
        "srv/app/hello.txt",
        "srv/app/dir/sub/a.txt",
        "opt/x/y.txt",
        "opt/plain.txt",
        "multi/a.md",
        "multi/b.md",
        "bin/busybox",
        "bin/ls",
        "exec-form-by-name",
    ] {
        assert!(
            list.lines().any(|l| l == want),
            "{want} missing from:\n{list}"
        );
    }
    for unwanted in ["debug.log", "skip.log", "ignored.md", "resolv.conf"] {
        assert!(
            !list.contains(unwanted),
            "{unwanted} should not be in the image"
        );
    }

    let img = read_image(&out);
    let text = |p: &str| String::from_utf8(img[p].3.clone()).unwrap();
    assert_eq!(text("srv/app/run.txt"), "hello from run\n");
    assert_eq!(text("srv/app/uid.txt"), "0\n");
    assert_eq!(text("srv/app/pwd.txt"), "/srv/app\n");
    assert_eq!(text("tmp/user-run.txt"), "1000\n");
    assert_eq!(text("tmp/env.txt"), "two words /home/app\n");
    let (uid, gid, _, _) = img["srv/app/dir/sub/a.txt"];
    assert_eq!((uid, gid), (1000, 1000));
    assert_eq!(img["srv/app/hello.txt"].0, 0);
    assert_eq!(img["secret.txt"].2 & 0o7777, 0o600);
    assert_eq!(
        (img["chowned-num.txt"].0, img["chowned-num.txt"].1),
        (1234, 1234)
    );
    assert_eq!(
        (img["chowned-grp.txt"].0, img["chowned-grp.txt"].1),
        (1000, 0)
    );

    let cfg: serde_json::Value = serde_json::from_slice(&img[".bali/config.json"].3).unwrap();
    assert_eq!(cfg["entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["cmd"], serde_json::json!(["echo $GREETING"]));
    assert_eq!(cfg["workingDir"], "/srv/app");
    assert_eq!(cfg["user"], "app");
    assert_eq!(cfg["labels"]["org.example.name"], "bali test");
    assert_eq!(cfg["labels"]["version"], "1");
    assert_eq!(
        cfg["exposedPorts"],
        serde_json::json!(["53/udp", "8080/tcp"])
    );
    let env: Vec<String> = serde_json::from_value(cfg["env"].clone()).unwrap();
    for e in [
        "PATH=/bin",
        "BASE_VAR=base",
        "APP_HOME=/srv/app",
        "MODE=two words",
    ] {
        assert!(env.contains(&e.to_string()), "{e} not in {env:?}");
    }
    // ARG values are not part of the image.
    assert!(!env.iter().any(|e| e.starts_with("GREETING")));

    let mut v = bali(keys.path());
    v.arg("verify")
        .arg(&out)
        .args(["--key", &key_id(keys.path())]);
    assert!(run(v).status.success());

    // A bali image as the base of the next build keeps its config.
    fs::rename(&out, ctx.path().join("app.tar.gz")).unwrap();
    fs::write(
        ctx.path().join("Dockerfile2"),
        "FROM bali:app.tar.gz\nUSER root\nRUN cat /srv/app/run.txt > /from-bali.txt\nUSER app\n\
         ENTRYPOINT []\nCMD [\"cat\", \"/from-bali.txt\"]\n",
    )
    .unwrap();
    let out2 = outdir.path().join("two.tar.gz");
    let f = ctx.path().join("Dockerfile2");
    let o = build(keys.path(), ctx.path(), &out2, &["-f", f.to_str().unwrap()]);
    assert!(o.status.success());
    let img = read_image(&out2);
    assert_eq!(img["from-bali.txt"].3, b"hello from run\n");
    let cfg: serde_json::Value = serde_json::from_slice(&img[".bali/config.json"].3).unwrap();
    assert_eq!(cfg["user"], "app");
    // It runs: CMD by name through PATH, as the image's user.
    let mut r = bali(keys.path());
    r.arg("run").arg(&out2);
    let o = run(r);
    assert!(o.status.success());
    assert_eq!(o.stdout, b"hello from run\n");

    // A base signed by another key is refused.
    let other = tempfile::tempdir().unwrap();
    let o = build(
        other.path(),
        ctx.path(),
        &out2,
        &["-f", f.to_str().unwrap()],
    );
    assert_bad(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 1"));
}

#[test]
fn output_inside_the_context_is_not_copied_into_itself() {
    let keys = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_docker_archive(&ctx.path().join("base.tar"));
    fs::write(ctx.path().join("f.txt"), "f\n").unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM docker-archive:base.tar\nCOPY . /ctx/\nCOPY * /star/\n",
    )
    .unwrap();
    let out = ctx.path().join("out.tar.gz");
    assert!(build(keys.path(), ctx.path(), &out, &[]).status.success());
    let img = read_image(&out);
    assert_eq!(img["ctx/f.txt"].3, b"f\n");
    assert_eq!(img["star/f.txt"].3, b"f\n");
    assert!(
        !img.keys().any(|k| k.contains(".bali-build")),
        "the build copied its own working dir"
    );
}

#[test]
fn from_oci_layout() {
    let keys = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let cfg = cradle_image::ImageConfig {
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    cradle_image::write::write_oci_layout(
        &ctx.path().join("layout"),
        &cfg,
        &[busybox_layer()],
        "v1",
        true,
    )
    .unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM oci:layout:v1\nRUN echo ok > /ok\n",
    )
    .unwrap();
    let out = ctx.path().join("o.tar.gz");
    assert!(build(keys.path(), ctx.path(), &out, &[]).status.success());
    assert_eq!(read_image(&out)["ok"].3, b"ok\n");
}

#[test]
fn from_a_loopback_registry() {
    let reg = DockerRegistry::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_docker_archive(&ctx.path().join("base.tar"));
    reg.push_from(ctx.path(), "docker-archive:base.tar", "base/busybox:1")
        .unwrap();
    fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/base/busybox:1\nRUN echo pulled > /pulled\n",
            reg.addr()
        ),
    )
    .unwrap();
    let out = ctx.path().join("o.tar.gz");
    assert!(build(keys.path(), ctx.path(), &out, &[]).status.success());
    let img = read_image(&out);
    assert_eq!(img["pulled"].3, b"pulled\n");
    assert!(img.contains_key("bin/busybox"));
    let cfg: serde_json::Value = serde_json::from_slice(&img[".bali/config.json"].3).unwrap();
    assert!(cfg["env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("BASE_VAR=base")));
    // An unknown tag is one clear error.
    fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\n", reg.reference("base/busybox:nope")),
    )
    .unwrap();
    let o = build(keys.path(), ctx.path(), &out, &[]);
    assert_bad(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("404"));
}

#[test]
fn failures_name_the_line_and_leave_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let outdir = tempfile::tempdir().unwrap();
    context(ctx.path());
    let out = outdir.path().join("x.tar.gz");
    for (df, line, what) in [
        (
            "FROM docker-archive:base.tar\nRUN true\nHEALTHCHECK CMD true\n",
            3,
            "unsupported instruction HEALTHCHECK",
        ),
        ("FROM docker-archive:base.tar\n\nRUN exit 3\n", 3, "failed"),
        (
            "FROM docker-archive:base.tar\nCOPY nope.txt /\n",
            2,
            "not found",
        ),
        (
            "FROM docker-archive:base.tar\nCOPY debug.log /\n",
            2,
            "excluded by .dockerignore",
        ),
        (
            "FROM docker-archive:base.tar\nCOPY ../../etc/passwd /\n",
            2,
            "outside the build context",
        ),
        ("FROM docker-archive:missing.tar\n", 1, "missing.tar"),
        (
            "FROM docker-archive:base.tar\nUSER nobody\nRUN true\n",
            3,
            "nobody",
        ),
        (
            "FROM docker-archive:base.tar\nFROM scratch\n",
            2,
            "multi-stage",
        ),
        ("FROM docker-archive:base.tar\nEXPOSE 99999\n", 2, "EXPOSE"),
    ] {
        fs::write(ctx.path().join("Dockerfile"), df).unwrap();
        let o = build(keys.path(), ctx.path(), &out, &[]);
        assert_bad(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("line {line}")), "{df:?}: {err}");
        assert_eq!(err.matches(what).count(), 1, "{df:?}: {err}");
        assert!(!out.exists());
        assert!(
            leftovers(outdir.path()).is_empty(),
            "{:?}",
            leftovers(outdir.path())
        );
    }
    let mut c = bali(keys.path());
    c.args(["build", "x.tar.gz", "--build-arg", "NOEQUALS"])
        .arg(ctx.path());
    assert_bad(&run(c));
}
