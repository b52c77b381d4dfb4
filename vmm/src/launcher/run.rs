//! `kcradle run DIR`: daemons, host network, docker.sock and the VM for a
//! bundle, torn down in reverse on every way out.
//!
//! Order: boot artifacts (cached) → pod record → tap + nftables → device
//! daemons (each waited for) → pod config archive → docker.sock proxy →
//! the VMM (`kcradle-vmm`, or `kcradle boot`) as a child, jailed in the
//! empty `run/jail/` unless `--no-jail` (its console on our stdout) → wait. SIGINT,
//! SIGTERM and SIGHUP are forwarded to the VMM as SIGTERM (it stops the VM
//! and exits 128+N); the children run in their own process group so a
//! terminal's Ctrl-C reaches only us and the teardown order stays ours.
//! [`Pod`]'s `Drop` is the one teardown path: proxy, VMM, daemons
//! (SIGTERM, then SIGKILL after 5 s), network, sockets, record.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::bundle::{Bundle, BundleError, Layout};
use super::daemons::{self, DaemonError};
use super::initrd::{self, InitrdError};
use super::net::{NetError, PodNet};
use super::pods::PodRecord;
use super::proxy::DockerProxy;
use super::state::StateDir;
use super::units::{self, UnitError, UnitPlan};

/// How the device daemons run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Devices {
    /// As children of `kcradle run`, logging to `DIR/logs/`.
    #[default]
    Children,
    /// As instances of their systemd template units (see [`units`]).
    Systemd,
}

/// What `kcradle run` was asked for.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The bundle.
    pub dir: PathBuf,
    /// Kernel image; the installed Debian cloud kernel when absent.
    pub kernel: Option<PathBuf>,
    /// State directory.
    pub state: StateDir,
    /// `--sandbox` given to every daemon (their default when absent).
    pub sandbox: Option<String>,
    /// Children or systemd units.
    pub devices: Devices,
    /// Print the daemons' plan and change nothing.
    pub dry_run: bool,
    /// Jail the VMM (`kcradle boot --jail`) in an empty directory.
    pub jail: bool,
}

/// Why the pod could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not a bundle, or a bad one.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// This bundle runs already.
    #[error("{0}: already running (pid {1})")]
    Running(PathBuf, u32),
    /// Every pod network slot is taken.
    #[error("no free pod network")]
    NoNetwork,
    /// Kernel or initramfs.
    #[error(transparent)]
    Initrd(#[from] InitrdError),
    /// Host network.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A device daemon.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// A device daemon as a systemd unit.
    #[error(transparent)]
    Unit(#[from] UnitError),
    /// Local I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

impl RunError {
    /// 2 for what the user can fix (bundle, running already, kernel), 1
    /// for failures of this machine.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Bundle(_) | RunError::Running(..) | RunError::Initrd(_) => 2,
            RunError::Unit(e) => e.exit_code(),
            _ => 1,
        }
    }
}

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the previous handler is not needed.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn term(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling our own child by pid; it has not been reaped
        // yet (we still own its `Child`), so the pid is not reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

fn stop_child(mut child: Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    term(&child);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Everything a running pod holds; dropping it tears it all down.
struct Pod {
    state: StateDir,
    layout: Layout,
    record: Option<PodRecord>,
    net: Option<PodNet>,
    daemons: Vec<Child>,
    units: Vec<UnitPlan>,
    proxy: Option<DockerProxy>,
    vmm: Option<Child>,
    /// The VMM's jail directory, once made.
    jail: Option<PathBuf>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.proxy.take();
        if let Some(vmm) = self.vmm.take() {
            stop_child(vmm, Duration::from_secs(15));
        }
        // Its mounts lived in the VMM's own namespace, gone with it.
        if let Some(jail) = self.jail.take() {
            let _ = std::fs::remove_dir(jail);
        }
        for d in self.daemons.drain(..).rev() {
            stop_child(d, Duration::from_secs(5));
        }
        for u in self.units.drain(..).rev() {
            units::stop(&u);
        }
        if let Some(net) = self.net.take() {
            net.teardown();
        }
        if let Ok(rd) = std::fs::read_dir(self.layout.run()) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        if let Some(r) = self.record.take() {
            r.remove(&self.state);
        }
    }
}

fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(s)) => u8::try_from(128 + s).unwrap_or(1),
        _ => 1,
    }
}

/// The VMM: `kcradle-vmm` when it sits next to this `kcradle` (the same
/// build; the lean binary of the two), else `kcradle boot`.
fn vmm_command() -> Result<Command, RunError> {
    let exe = std::env::current_exe().map_err(|e| RunError::Io("kcradle".into(), e))?;
    let lean = exe.with_file_name("kcradle-vmm");
    Ok(if lean.is_file() {
        Command::new(lean)
    } else {
        let mut cmd = Command::new(exe);
        cmd.arg("boot");
        cmd
    })
}

/// Makes the VMM's jail: an empty directory only root can enter. An empty
/// one left by a killed run is reused; one holding anything is refused
/// (the VMM's root must be empty).
fn make_jail(jail: &Path) -> Result<(), RunError> {
    let fail = |e| RunError::Io(format!("VMM jail {}", jail.display()), e);
    match std::fs::remove_dir(jail) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(jail)
        .map_err(fail)
}

/// The pod config with the network and modules `run` decided.
fn final_pod_config(
    layout: &Layout,
    net: &PodNet,
    modules: &[String],
) -> Result<Vec<u8>, RunError> {
    let path = layout.pod_json();
    let raw = std::fs::read(&path).map_err(|e| RunError::Io(path.display().to_string(), e))?;
    let mut pod: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|e| RunError::Bundle(BundleError::Invalid(path.clone(), e.to_string())))?;
    pod["network"] = json!({
        "interfaces": [{"name": "eth0", "addresses": [format!("{}/30", net.guest_ip)], "mtu": 1500}],
        "gateway": net.host_ip.to_string(),
    });
    pod["modules"] = json!(modules);
    Ok(serde_json::to_vec_pretty(&pod).unwrap_or_default())
}

/// The daemons of the pod, with `--sandbox` applied.
fn daemon_plan(
    o: &RunOptions,
    bundle: &Bundle,
    layout: &Layout,
    net: &PodNet,
) -> Vec<daemons::DaemonSpec> {
    let mut plan = daemons::plan(bundle, layout, net);
    if let Some(mode) = &o.sandbox {
        for spec in &mut plan {
            spec.args.extend(["--sandbox".to_string(), mode.clone()]);
        }
    }
    plan
}

fn unit_plan(
    plan: &[daemons::DaemonSpec],
    bundle: &Bundle,
    index: u32,
) -> Result<Vec<UnitPlan>, UnitError> {
    plan.iter()
        .map(|s| UnitPlan::new(s, index, &bundle.id, Path::new(units::ENV_ROOT)))
        .collect()
}

/// `--dry-run`: the network and daemons `run` would set up now (the
/// daemons' command lines, or with `--devices systemd` the environment
/// files, systemctl commands and teardown), as text.
fn dry_run(o: &RunOptions, bundle: &Bundle, layout: &Layout) -> Result<String, RunError> {
    let index = PodRecord::free_index(&o.state).ok_or(RunError::NoNetwork)?;
    let net = PodNet::new(&bundle.id, index);
    let plan = daemon_plan(o, bundle, layout, &net);
    let mut out = format!(
        "# network: tap {}, host {}/30, guest {}, nftables table ip {}\n",
        net.tap, net.host_ip, net.guest_ip, net.table
    );
    match o.devices {
        Devices::Children => {
            out.push_str(&format!(
                "# daemons, children of kcradle run, logs in {}\n",
                layout.logs().display()
            ));
            for s in &plan {
                out.push_str(&format!("{} {}\n", s.program, s.args.join(" ")));
            }
        }
        Devices::Systemd => {
            let units = unit_plan(&plan, bundle, index)?;
            for u in &units {
                out.push_str(&format!("# {}\n{}", u.env_path.display(), u.env_file()));
                for c in u.start_commands() {
                    out.push_str(&format!("{}\n", c.join(" ")));
                }
                out.push('\n');
            }
            out.push_str("# on exit, in reverse order\n");
            for u in units.iter().rev() {
                for c in u.stop_commands() {
                    out.push_str(&format!("{}\n", c.join(" ")));
                }
                out.push_str(&format!("rm {}\n", u.env_path.display()));
            }
        }
    }
    Ok(out)
}

/// Runs the pod to its end; returns the exit status for kcradle.
pub fn run(o: &RunOptions) -> Result<u8, RunError> {
    let dir = std::fs::canonicalize(&o.dir)
        .map_err(|e| RunError::Bundle(BundleError::NotABundle(o.dir.clone(), e)))?;
    let bundle = Bundle::load(&dir)?;
    let layout = Layout::new(&dir);
    if o.dry_run {
        print!("{}", dry_run(o, &bundle, &layout)?);
        return Ok(0);
    }
    if o.devices == Devices::Systemd {
        units::check_host()?;
    }
    if let Some(r) = PodRecord::find(&o.state, &dir) {
        return Err(RunError::Running(dir, r.pid));
    }
    let (kernel, release) = match &o.kernel {
        Some(k) => {
            let rel = initrd::release_of(k).ok_or_else(|| {
                InitrdError::NoModules(format!("of {} (name it vmlinuz-RELEASE)", k.display()))
            })?;
            (k.clone(), rel)
        }
        None => initrd::default_kernel()?,
    };
    let (base_initrd, modules) = initrd::guest_initramfs(&o.state.initramfs(), &release)?;
    let index = PodRecord::free_index(&o.state).ok_or(RunError::NoNetwork)?;
    let net = PodNet::new(&bundle.id, index);
    // Planned before anything is made, so a bundle units cannot carry is
    // refused with nothing to undo.
    let plan = daemon_plan(o, &bundle, &layout, &net);
    let unit_plans = match o.devices {
        Devices::Children => Vec::new(),
        Devices::Systemd => unit_plan(&plan, &bundle, index)?,
    };
    catch_signals();

    let mut pod = Pod {
        state: o.state.clone(),
        layout: layout.clone(),
        record: None,
        net: None,
        daemons: Vec::new(),
        units: Vec::new(),
        proxy: None,
        vmm: None,
        jail: None,
    };
    let record = PodRecord {
        id: bundle.id.clone(),
        dir: dir.clone(),
        pid: std::process::id(),
        net_index: index,
        address: net.guest_ip.to_string(),
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    record
        .create(&o.state)
        .map_err(|e| RunError::Io(format!("pod record {}", bundle.id), e))?;
    pod.record = Some(record);
    for d in [layout.run(), layout.logs()] {
        std::fs::create_dir_all(&d).map_err(|e| RunError::Io(d.display().to_string(), e))?;
    }

    net.setup(&bundle.publish)?;
    pod.net = Some(net.clone());

    for (i, spec) in plan.iter().enumerate() {
        match unit_plans.get(i) {
            Some(u) => {
                pod.units.push(u.clone());
                units::start(u)?;
            }
            None => pod.daemons.push(daemons::start(spec, &layout.logs())?),
        }
        if SIGNALLED.load(Ordering::SeqCst) != 0 {
            return Ok(128 + SIGNALLED.load(Ordering::SeqCst) as u8);
        }
    }

    let pod_cpio = layout.run().join("pod.cpio");
    initrd::pod_archive(&pod_cpio, &final_pod_config(&layout, &net, &modules)?)?;
    let sock = layout.docker_sock();
    pod.proxy = Some(
        DockerProxy::start(&sock, (net.guest_ip, 1).into())
            .map_err(|e| RunError::Io(sock.display().to_string(), e))?,
    );

    let mut cmd = vmm_command()?;
    cmd.arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&base_initrd)
        .arg("--initrd")
        .arg(&pod_cpio)
        .args(["--cmdline", "console=ttyS0 reboot=k panic=-1 quiet"])
        .args(["--cpus", &bundle.cpus.to_string()])
        .args(["--memory", &format!("{}M", bundle.memory_mib)])
        .args(["--serial", "stdio"])
        .process_group(0);
    for spec in &plan {
        cmd.args(spec.device.boot_args());
    }
    if o.jail {
        let jail = layout.vmm_jail();
        make_jail(&jail)?;
        pod.jail = Some(jail.clone());
        cmd.arg("--jail").arg(jail);
    }
    let vmm = cmd
        .spawn()
        .map_err(|e| RunError::Io("kcradle boot".into(), e))?;
    pod.vmm = Some(vmm);
    let mut forwarded = false;
    loop {
        let Some(vmm) = pod.vmm.as_mut() else {
            return Ok(1);
        };
        match vmm.try_wait() {
            Ok(Some(status)) => {
                pod.vmm = None;
                return Ok(exit_code(status));
            }
            Ok(None) => {}
            Err(e) => return Err(RunError::Io("waiting for the VMM".into(), e)),
        }
        if !forwarded && SIGNALLED.load(Ordering::SeqCst) != 0 {
            term(vmm);
            forwarded = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kcradle stop DIR`: SIGTERM to the pod's `kcradle run`, then wait for
/// it to finish its teardown (at most `timeout`).
pub fn stop(state: &StateDir, dir: &Path, timeout: Duration) -> Result<bool, RunError> {
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| RunError::Bundle(BundleError::NotABundle(dir.to_path_buf(), e)))?;
    Bundle::load(&dir)?;
    let Some(r) = PodRecord::find(state, &dir) else {
        return Ok(false);
    };
    if let Ok(pid) = i32::try_from(r.pid) {
        // SAFETY: plain kill(2) on the pid the pod recorded for itself.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + timeout;
    while PodRecord::find(state, &dir).is_some() {
        if Instant::now() > deadline {
            return Err(RunError::Io(
                format!("pod {}", r.id),
                std::io::Error::new(std::io::ErrorKind::TimedOut, "did not stop in time"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(true)
}

/// `kcradle rm DIR`: deletes a bundle that is not running. LV files under
/// another `--lv-root` and GFS volumes are kept: they outlive bundles.
pub fn remove(state: &StateDir, dir: &Path) -> Result<(), RunError> {
    let canon = std::fs::canonicalize(dir)
        .map_err(|e| RunError::Bundle(BundleError::NotABundle(dir.to_path_buf(), e)))?;
    Bundle::load(&canon)?;
    if let Some(r) = PodRecord::find(state, &canon) {
        return Err(RunError::Running(canon, r.pid));
    }
    std::fs::remove_dir_all(&canon).map_err(|e| RunError::Io(canon.display().to_string(), e))
}
