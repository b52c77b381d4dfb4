//! Command-line arguments of the launcher subcommands and their entry
//! points; `main.rs` only dispatches to them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use cradle_image::registry::DOCKER_HUB;

use super::pod::ProcessOverrides;
use super::pods::PodRecord;
use super::progress::layer_progress;
use super::run::{remove, run, stop, Devices, RunOptions};
use super::spec::{parse_env, Entrypoint, PublishSpec, VolumeSpec};
use super::state::StateDir;
use super::summon::{summon, SummonOptions};
use crate::config::MemorySize;
use std::time::Duration;

/// Where the state directory is (shared by the launcher subcommands).
#[derive(Debug, Args, Clone)]
pub struct StateArgs {
    /// State directory (layer cache, GFS volumes, running pods); default
    /// $KCRADLE_STATE_DIR, /var/lib/kcradle for root.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `kcradle summon DIR IMAGE [options] [--cmd ARG...]`.
#[derive(Debug, Args)]
pub struct SummonArgs {
    /// Bundle directory to create (must not exist).
    pub dir: PathBuf,
    /// docker-archive:PATH, oci:PATH[:TAG], docker://HOST[:PORT]/REPO[:TAG|@DIGEST] or REPO[:TAG].
    pub image: String,
    /// Environment variable for the container: KEY=VALUE (or KEY, taken from here).
    #[arg(long, short = 'e', value_parser = parse_env)]
    pub env: Vec<String>,
    /// vCPUs of the pod's VM.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub cpus: u8,
    /// Guest RAM: 512M, 2G, or a number of MiB.
    #[arg(long, default_value = "512M")]
    pub memory: MemorySize,
    /// gfs:NAME:/path[:ro] (shared tree GFS_ROOT/NAME) or lv:NAME:SIZE:/path (block volume).
    #[arg(long, short = 'v')]
    pub volume: Vec<VolumeSpec>,
    /// HOSTPORT:PORT[/tcp|/udp]: forward a host port to the pod.
    #[arg(long, short = 'p')]
    pub publish: Vec<PublishSpec>,
    /// Replace the image's entrypoint: one executable or a JSON array.
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Option<Entrypoint>,
    /// Root of GFS volumes [default: STATE/gfs].
    #[arg(long, value_name = "DIR")]
    pub gfs_root: Option<PathBuf>,
    /// Directory for LV volume files [default: DIR/volumes].
    #[arg(long, value_name = "DIR")]
    pub lv_root: Option<PathBuf>,
    /// Registry for references without a host [default: $KCRADLE_REGISTRY or docker.io].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub registry: Option<String>,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
    /// Replace the image's cmd with the rest of the command line (give it last).
    #[arg(long, num_args = 1.., allow_hyphen_values = true, value_name = "ARG")]
    pub cmd: Option<Vec<String>>,
}

/// Runs `kcradle summon`; exit 0, or 2 (bad input) / 1 (local failure)
/// with one line on stderr.
pub fn run_summon(a: SummonArgs) -> ExitCode {
    let registry = a
        .registry
        .or_else(|| {
            std::env::var("KCRADLE_REGISTRY")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DOCKER_HUB.to_string());
    let opts = SummonOptions {
        dir: a.dir,
        image: a.image,
        cpus: a.cpus,
        memory: a.memory.0,
        volumes: a.volume,
        publish: a.publish,
        process: ProcessOverrides {
            entrypoint: a.entrypoint.map(|e| e.0),
            cmd: a.cmd,
            env: a.env,
        },
        gfs_root: a.gfs_root,
        lv_root: a.lv_root,
        default_registry: registry,
        state: StateDir::resolve(a.state.state_dir.as_deref()),
    };
    match summon(&opts, layer_progress(a.quiet)) {
        Ok(b) => {
            if !a.quiet {
                eprintln!(
                    "kcradle: summoned {} ({} layers) into {}",
                    b.image.reference,
                    b.image.layers,
                    opts.dir.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kcradle: summon: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `kcradle run DIR`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Bundle directory made by `kcradle summon`.
    pub dir: PathBuf,
    /// Kernel (vmlinuz-RELEASE; its modules come from /lib/modules/RELEASE)
    /// [default: the installed Debian cloud kernel].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Sandbox mode for every device daemon: namespace (their default),
    /// chroot (where pivot_root cannot work, e.g. a host running from an
    /// initramfs) or none.
    #[arg(long, value_parser = ["namespace", "chroot", "none"])]
    pub sandbox: Option<String>,
    /// How the device daemons run: as children of kcradle, or as
    /// instances of their systemd units (needs systemd as PID 1).
    #[arg(long, value_enum, default_value_t = Devices::Children)]
    pub devices: Devices,
    /// Print the network and the daemons' plan (command lines, or
    /// environment files and systemctl commands) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run the VMM unjailed (by default it runs pivoted into an empty
    /// DIR/run/jail, in its own mount namespace, with no capabilities).
    #[arg(long)]
    pub no_jail: bool,
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
}

/// Runs `kcradle run`; exits with the pod's status.
pub fn run_run(a: RunArgs) -> ExitCode {
    let opts = RunOptions {
        dir: a.dir,
        kernel: a.kernel,
        state: StateDir::resolve(a.state.state_dir.as_deref()),
        sandbox: a.sandbox,
        devices: a.devices,
        dry_run: a.dry_run,
        jail: !a.no_jail,
    };
    match run(&opts) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("kcradle: run: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `kcradle stop DIR` / `kcradle rm DIR`.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Bundle directory.
    pub dir: PathBuf,
    /// The state directory.
    #[command(flatten)]
    pub state: StateArgs,
}

/// Runs `kcradle stop`: 0 once stopped, 1 when it was not running.
pub fn run_stop(a: DirArgs) -> ExitCode {
    let state = StateDir::resolve(a.state.state_dir.as_deref());
    match stop(&state, &a.dir, Duration::from_secs(60)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("kcradle: stop: {}: not running", a.dir.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kcradle: stop: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `kcradle rm`.
pub fn run_rm(a: DirArgs) -> ExitCode {
    let state = StateDir::resolve(a.state.state_dir.as_deref());
    match remove(&state, &a.dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcradle: rm: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `kcradle ps`: one line per running pod.
pub fn run_ps(a: StateArgs) -> ExitCode {
    let state = StateDir::resolve(a.state_dir.as_deref());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{:<20} {:>8} {:<16} {:>8}  BUNDLE",
        "ID", "PID", "ADDRESS", "UP"
    );
    for r in PodRecord::list(&state) {
        println!(
            "{:<20} {:>8} {:<16} {:>7}s  {}",
            r.id,
            r.pid,
            r.address,
            now.saturating_sub(r.started),
            r.dir.display()
        );
    }
    ExitCode::SUCCESS
}
