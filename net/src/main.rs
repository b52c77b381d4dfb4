//! `net-tap` binary: flags → config, then run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cradle_devices::daemon::{self, notify, sandbox, seccomp, signals};
use net_tap::config::Cli;
use net_tap::device::Device;

fn main() -> ExitCode {
    daemon::main::<Cli, _, _>(net_tap::print_capabilities, run)
}

fn run(cfg: net_tap::config::Config) -> anyhow::Result<()> {
    let device = Arc::new(Device::open(&cfg).context("opening the tap")?);
    let (public, socket) = daemon::listen(&cfg.common)?;
    notify::init().context("connecting to NOTIFY_SOCKET")?;
    net_tap::compat::isolate_netns();
    // The tap queues are open: the sandbox shows only the socket.
    let shown: Vec<&std::path::Path> = socket.iter().map(|s| s.as_path()).collect();
    sandbox::enter(cfg.common.sandbox, &shown)?;
    sandbox::drop_capabilities()?;
    seccomp::apply_with_ioctls(cfg.common.seccomp, net_tap::SYSCALLS, &net_tap::ioctls())?;
    let dev = device.clone();
    // Before any other thread exists, so that every thread blocks SIGTERM.
    signals::on_terminate(move || net_tap::backend::log_counters(&dev))?;
    let mut listener = net_tap::compat::relay(public).context("starting the relay")?;
    tracing::info!(
        tap = device.tap.name(),
        created = device.tap.created,
        socket = ?socket,
        mac = %cfg.mac,
        mtu = cfg.mtu,
        queue_pairs = cfg.queue_pairs,
        offload = cfg.offload,
        "serving"
    );
    notify::ready()?;
    net_tap::serve(device, &mut listener)?;
    Ok(())
}
