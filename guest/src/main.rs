//! `cradle-init`: PID 1 of a cradle pod (no arguments, as `/init`), or
//! `cradle-init host` to run a pod and vdocker on an ordinary host.

use anyhow::Context;
use clap::{Parser, Subcommand};
use cradle_guest::{archive, config::PodConfig, init, logs, pod, reaper, shim, vdocker};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "cradle-init",
    version,
    about = "PID 1 of a cradle pod, and vdocker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pod on this host and serve vdocker; exits with the pod's status.
    Host {
        /// The pod config (JSON).
        #[arg(long)]
        config: PathBuf,
        /// Address for vdocker (port 0 picks one; printed on stderr).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory for the containers' roots [default: /run/cradle/ID-PID].
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
    /// Write a guest initramfs: a cradle-init as /init, kernel modules (with
    /// their dependencies) loaded first at boot, and optionally the pod config.
    Initramfs {
        /// Output file (newc cpio, uncompressed).
        #[arg(long)]
        out: PathBuf,
        /// The cradle-init to pack [default: this binary].
        #[arg(long)]
        binary: Option<PathBuf>,
        /// The guest kernel's modules directory (`/lib/modules/VERSION`).
        #[arg(long)]
        kernel_modules: Option<PathBuf>,
        /// Modules to include, comma-separated [default with --kernel-modules:
        /// virtio_pci,virtio_net,virtio_blk,virtiofs,overlay].
        #[arg(long, value_delimiter = ',', requires = "kernel_modules")]
        modules: Vec<String>,
        /// Append this pod config as /cradle/config.json.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also pack a host directory tree, `HOST_DIR:GUEST_DIR` (repeatable),
        /// e.g. an image rootfs when there is no virtiofs.
        #[arg(long = "tree", value_parser = parse_tree)]
        trees: Vec<(PathBuf, String)>,
    },
    /// PID-1 mode (what `/init` does when run without arguments as PID 1).
    Init {
        /// The pod config.
        #[arg(long, default_value = init::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__shim") => shim::container_main(),
        Some("__exec") => shim::exec_main(),
        Some("__archive") => archive::helper_main(&args[2..]),
        _ => {}
    }
    if std::process::id() == 1 {
        // The kernel passes unknown cmdline words as arguments: ignore them.
        init::run(None);
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Init { config } => init::run(Some(config)),
        Cmd::Initramfs {
            out,
            binary,
            kernel_modules,
            modules,
            config,
            trees,
        } => {
            let config = config.map(|c| match PodConfig::load(&c) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("cradle-init: {e}");
                    std::process::exit(2);
                }
            });
            if let Err(e) = write_initramfs(&out, binary, kernel_modules, modules, config, &trees) {
                eprintln!("cradle-init: {e:#}");
                std::process::exit(1);
            }
        }
        Cmd::Host {
            config,
            listen,
            run_dir,
        } => {
            init::logging();
            let config = match PodConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("cradle-init: {e}");
                    std::process::exit(2);
                }
            };
            match host(config, listen, run_dir) {
                Ok(status) => {
                    logs::flush_console(std::time::Duration::from_secs(2));
                    std::process::exit(status)
                }
                Err(e) => {
                    eprintln!("cradle-init: {e:#}");
                    std::process::exit(1);
                }
            }
        }
    }
}

fn parse_tree(s: &str) -> Result<(PathBuf, String), String> {
    match s.split_once(':') {
        Some((h, g)) if !h.is_empty() && g.starts_with('/') => {
            Ok((PathBuf::from(h), g.to_string()))
        }
        _ => Err(format!("{s:?} is not HOST_DIR:/GUEST_DIR")),
    }
}

fn write_initramfs(
    out: &std::path::Path,
    binary: Option<PathBuf>,
    kernel_modules: Option<PathBuf>,
    mut modules: Vec<String>,
    config: Option<PodConfig>,
    trees: &[(PathBuf, String)],
) -> anyhow::Result<()> {
    use cradle_guest::initramfs;
    use std::io::Write;
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe().context("locating this binary")?,
    };
    let index = match &kernel_modules {
        Some(dir) => Some(cradle_initramfs::ModuleIndex::load(dir)?),
        None => None,
    };
    if modules.is_empty() {
        modules = initramfs::DEFAULT_MODULES
            .iter()
            .map(|m| m.to_string())
            .collect();
    }
    let mut fs = initramfs::base(&binary, index.as_ref().map(|i| (i, &modules[..])))?;
    for (host, guest) in trees {
        initramfs::add_tree(&mut fs, host, guest)?;
    }
    let mut data = fs.write_to(Vec::new())?;
    if let Some(cfg) = &config {
        data.extend(initramfs::config_archive(cfg)?);
    }
    let mut f =
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&data)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn host(
    config: PodConfig,
    listen: Option<SocketAddr>,
    run_dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    // Orphans of our shims come to us rather than to the host's init.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // The pod's mounts (container roots, volumes) live in a mount namespace
    // of our own, so they vanish with us even if we are killed outright,
    // and the host's mount table never sees them.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making / private in the pod's mount namespace")?;
    let run_dir = run_dir.unwrap_or_else(|| {
        PathBuf::from(format!("/run/cradle/{}-{}", config.id, std::process::id()))
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        tokio::spawn(reaper::run());
        let pod = pod::Pod::create(config, &run_dir, &pod::HostSources, true, Arc::new(|_| {}))?;
        if let Some(addr) = listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding vdocker to {addr}"))?;
            eprintln!("vdocker listening on {}", listener.local_addr()?);
            tokio::spawn(vdocker::serve(listener, pod.clone()));
        }
        init::stop_on_signals(pod.clone());
        Ok(pod.run().await)
    })
}
