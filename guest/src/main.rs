//! `cradle-init`: PID 1 of a cradle pod (no arguments, as `/init`), or
//! `cradle-init host` to run a pod and vdocker on an ordinary host.

use anyhow::Context;
use clap::{Parser, Subcommand};
use cradle_guest::{archive, config::PodConfig, init, pod, reaper, shim, vdocker};
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
                Ok(status) => std::process::exit(status),
                Err(e) => {
                    eprintln!("cradle-init: {e:#}");
                    std::process::exit(1);
                }
            }
        }
    }
}

fn host(
    config: PodConfig,
    listen: Option<SocketAddr>,
    run_dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    // Orphans of our shims come to us rather than to the host's init.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
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
