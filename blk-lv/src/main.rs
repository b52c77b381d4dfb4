//! `blk-lv` binary: flags → config, then run.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use blk_lv::config::Cli;
use blk_lv::device::Device;
use cradle_devices::daemon::{self, notify, sandbox, seccomp, signals};

fn main() -> ExitCode {
    daemon::main::<Cli, _, _>(blk_lv::print_capabilities, run)
}

fn run(cfg: blk_lv::config::Config) -> anyhow::Result<()> {
    let device =
        Arc::new(Device::open(&cfg).with_context(|| format!("opening {}", cfg.path.display()))?);
    let (mut listener, socket) = daemon::listen(&cfg.common)?;
    notify::init().context("connecting to NOTIFY_SOCKET")?;
    let mut shown: Vec<&std::path::Path> = vec![&cfg.path];
    if let Some(s) = &socket {
        shown.push(s);
    }
    sandbox::enter(cfg.common.sandbox, &shown)?;
    sandbox::drop_capabilities()?;
    seccomp::apply_with_ioctls(
        cfg.common.seccomp,
        blk_lv::SYSCALLS,
        &[blk_lv::engine::BLKDISCARD],
    )?;
    let drain_dev = device.clone();
    signals::on_terminate(move || {
        drain_dev.drain(signals::DRAIN_TIMEOUT);
    })?;
    tracing::info!(
        path = %cfg.path.display(),
        socket = ?socket,
        size = device.disk.size,
        direct = device.disk.direct,
        readonly = cfg.common.readonly,
        queues = cfg.common.num_queues,
        "serving"
    );
    notify::ready()?;
    blk_lv::serve(device, &mut listener)?;
    Ok(())
}
