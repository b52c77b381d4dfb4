//! `virtiofsd-gfs` binary: flags → config, then run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cradle_devices::daemon::{self, notify, sandbox, seccomp, signals};
use virtiofsd_gfs::config::{set_rlimit_nofile, Backend, Cli, Config};
use virtiofsd_gfs::fs::ceph::{self, CephFs};
use virtiofsd_gfs::fs::passthrough::PassthroughFs;
use virtiofsd_gfs::fs::FileSystem;
use virtiofsd_gfs::fuse::Server;

fn main() -> ExitCode {
    daemon::main::<Cli, _, _>(virtiofsd_gfs::print_capabilities, run)
}

/// Serves with the backend the flags chose.
fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    match cfg.backend.clone() {
        Backend::Passthrough => run_passthrough(cfg),
        Backend::Cephfs(c) => run_cephfs(cfg, c),
    }
}

fn run_passthrough(cfg: Config) -> anyhow::Result<ExitCode> {
    let nofile = set_rlimit_nofile(cfg.rlimit_nofile).context("setting RLIMIT_NOFILE")?;
    let fs = PassthroughFs::new(cfg.fs.clone())
        .with_context(|| format!("opening {}", cfg.fs.root.display()))?;
    let mut caps = virtiofsd_gfs::CAPABILITIES.to_vec();
    if fs.uses_file_handles() {
        caps.push(virtiofsd_gfs::CAP_DAC_READ_SEARCH);
    }
    let server = Arc::new(Server::new(fs, cfg.server));
    let (mut listener, socket) = daemon::listen(&cfg.common)?;
    notify::init().context("connecting to NOTIFY_SOCKET")?;
    // Everything served is reachable through descriptors opened above
    // (the tree, /proc/self/fd): the sandbox's root holds nothing.
    sandbox::enter(cfg.common.sandbox, &[])?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        sandbox::drop_capabilities_except(&caps)?;
    } else {
        // Unprivileged: nothing to act on behalf of others with anyway.
        sandbox::drop_capabilities()?;
    }
    seccomp::apply(cfg.common.seccomp, virtiofsd_gfs::SYSCALLS)?;
    tracing::info!(
        shared_dir = %cfg.fs.root.display(),
        socket = ?socket,
        nofile,
        "serving"
    );
    serve(server, cfg, &mut listener)
}

/// The native backend: libcephfs is loaded (it is not linked, so the
/// passthrough backend maps none of it) and every file (conf, keyring) is
/// read first, then the sandbox is entered *before* the Ceph client starts
/// its threads, so none of them ever sees the host tree; the client only
/// needs the network.
fn run_cephfs(cfg: Config, ccfg: ceph::Config) -> anyhow::Result<ExitCode> {
    let prepared = match ceph::prepare(ccfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let (mut listener, socket) = daemon::listen(&cfg.common)?;
    notify::init().context("connecting to NOTIFY_SOCKET")?;
    sandbox::enter(cfg.common.sandbox, &[])?;
    // Permissions are Ceph's (the caller's uid/gid go with each call):
    // the daemon needs no capability at all.
    sandbox::drop_capabilities()?;
    let fs = match CephFs::connect(prepared) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    seccomp::apply(cfg.common.seccomp, virtiofsd_gfs::CEPH_SYSCALLS)?;
    tracing::info!(socket = ?socket, "serving CephFS");
    let server = Arc::new(Server::new(fs, cfg.server));
    serve(server, cfg, &mut listener)
}

fn serve<F: FileSystem + 'static>(
    server: Arc<Server<F>>,
    cfg: Config,
    listener: &mut vhost::vhost_user::Listener,
) -> anyhow::Result<ExitCode> {
    let drain = server.clone();
    signals::on_terminate(move || {
        if !drain.drain(signals::DRAIN_TIMEOUT) {
            tracing::warn!("requests still in flight at exit");
        }
    })?;
    tracing::info!(
        cache = ?cfg.fs.cache,
        readonly = cfg.server.readonly,
        request_queues = cfg.device.request_queues,
        thread_pool = cfg.device.thread_pool_size,
        "ready"
    );
    notify::ready()?;
    virtiofsd_gfs::serve(server, cfg.device, listener)?;
    Ok(ExitCode::SUCCESS)
}
