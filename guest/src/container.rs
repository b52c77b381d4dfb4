//! One supervised container: start through the shim, log its output, wait
//! for its exit, apply the restart policy, answer signals.

use crate::config::{ContainerConfig, RestartPolicyName};
use crate::logs::{Logs, Stream};
use crate::shim::{ContainerSpec, ProcessSpec};
use crate::spawn::{self, ShimKind};
use chrono::{DateTime, Utc};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Docker's container status words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not started yet.
    Created,
    /// Its process runs.
    Running,
    /// Waiting out the restart delay.
    Restarting,
    /// Ended for good (or until a restart).
    Exited,
}

impl Status {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        }
    }
}

/// Mutable state, what `docker inspect` shows under `State`.
#[derive(Debug, Clone)]
pub struct State {
    /// Status.
    pub status: Status,
    /// Host pid of the container's namespace init (0 when not running).
    pub pid: i32,
    /// Last exit code.
    pub exit_code: i32,
    /// Why the last start failed, if it did.
    pub error: String,
    /// Last start.
    pub started_at: Option<DateTime<Utc>>,
    /// Last exit.
    pub finished_at: Option<DateTime<Utc>>,
    /// Restarts so far.
    pub restart_count: u32,
    /// Ended by `docker kill` with a stop signal: not restarted.
    pub manually_stopped: bool,
    /// Exits so far (lets waiters tell one exit from the next).
    pub exits: u64,
}

/// A container of the pod.
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Its config.
    pub config: ContainerConfig,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Hostname inside.
    pub hostname: String,
    /// The prepared rootfs.
    pub rootfs: PathBuf,
    /// Environment as started (config env plus Docker's additions).
    pub env: Vec<String>,
    /// Its logs.
    pub logs: Logs,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    stdin: Mutex<Option<Arc<Mutex<File>>>>,
    pty: Mutex<Option<Arc<OwnedFd>>>,
    stop: watch::Sender<bool>,
    on_start: Box<dyn Fn() + Send + Sync>,
}

/// Signals after which `docker kill` keeps the container stopped.
fn is_stop_signal(sig: i32) -> bool {
    [libc::SIGKILL, libc::SIGTERM, libc::SIGINT, libc::SIGQUIT].contains(&sig)
}

impl Container {
    /// A container ready to be supervised; `on_start` runs at each start
    /// (the control-port milestone).
    pub fn new(
        pod_id: &str,
        config: ContainerConfig,
        hostname: &str,
        rootfs: PathBuf,
        log_limit: usize,
        mirror: bool,
        on_start: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        use sha2::Digest;
        let created = Utc::now();
        let id = hex::encode(sha2::Sha256::digest(
            format!(
                "{pod_id}/{}/{}",
                config.name,
                created.timestamp_nanos_opt().unwrap_or(0)
            )
            .as_bytes(),
        ));
        let mut env = config.process.env.clone();
        let has = |env: &[String], k: &str| env.iter().any(|e| e.starts_with(&format!("{k}=")));
        if !has(&env, "PATH") {
            env.insert(0, format!("PATH={}", crate::shim::DEFAULT_PATH));
        }
        if !has(&env, "HOSTNAME") {
            env.insert(1, format!("HOSTNAME={hostname}"));
        }
        if config.process.tty && !has(&env, "TERM") {
            env.push("TERM=xterm".into());
        }
        Self {
            id,
            logs: Logs::new(&config.name, log_limit, mirror),
            created,
            hostname: hostname.to_string(),
            rootfs,
            env,
            state: Mutex::new(State {
                status: Status::Created,
                pid: 0,
                exit_code: 0,
                error: String::new(),
                started_at: None,
                finished_at: None,
                restart_count: 0,
                manually_stopped: false,
                exits: 0,
            }),
            changed: watch::channel(0).0,
            stdin: Mutex::new(None),
            pty: Mutex::new(None),
            stop: watch::channel(false).0,
            on_start,
            config,
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A copy of the state.
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.send_modify(|n| *n += 1);
    }

    /// A receiver that changes at every start and exit.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The stdin writer of the running process, when it has one.
    pub fn stdin(&self) -> Option<Arc<Mutex<File>>> {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resizes the container's terminal.
    pub fn resize(&self, h: u16, w: u16) -> Result<(), String> {
        match &*self.pty.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(pty) => spawn::resize(pty, h, w).map_err(|e| e.to_string()),
            None => Err("the container has no tty".into()),
        }
    }

    /// Sends `sig` to the container's command. Errors when not running.
    pub fn kill(&self, sig: i32) -> Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.status != Status::Running || st.pid <= 0 {
            return Err(format!("container {} is not running", self.id));
        }
        if is_stop_signal(sig) {
            st.manually_stopped = true;
        }
        // The namespace init forwards it to the command; SIGKILL kills the
        // init, and with it the whole PID namespace.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(st.pid),
            nix::sys::signal::Signal::try_from(sig).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())
    }

    /// Asks the supervisor to stop: no more restarts, SIGTERM now, SIGKILL
    /// after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.send_replace(true);
        let mut w = self.watch();
        if self.kill(libc::SIGTERM).is_err() {
            return;
        }
        let done = async {
            while self.state().status == Status::Running {
                if w.changed().await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(grace, done).await.is_err() {
            let _ = self.kill(libc::SIGKILL);
        }
    }

    /// The process spec of this container.
    pub fn process_spec(&self) -> ProcessSpec {
        let p = &self.config.process;
        ProcessSpec {
            argv: p.argv(),
            env: self.env.clone(),
            workdir: p.workdir.clone().unwrap_or_else(|| "/".into()),
            user: p.user.clone(),
            tty: p.tty,
        }
    }

    /// Runs the container until it ends for good; returns its last exit
    /// code.
    pub async fn supervise(self: Arc<Self>) -> i32 {
        let mut stop = self.stop.subscribe();
        loop {
            let code = self.run_once().await;
            let st = self.state();
            let again = !*stop.borrow()
                && !st.manually_stopped
                && self.config.restart.should_restart(code, st.restart_count);
            if !again {
                return code;
            }
            self.update(|s| s.status = Status::Restarting);
            let delay = Duration::from_millis(self.config.restart.delay_ms);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => {
                    self.update(|s| s.status = Status::Exited);
                    return code;
                }
            }
            self.update(|s| s.restart_count += 1);
        }
    }

    async fn run_once(self: &Arc<Self>) -> i32 {
        let spec = ContainerSpec {
            rootfs: self.rootfs.clone(),
            hostname: self.hostname.clone(),
            process: self.process_spec(),
        };
        let json = match serde_json::to_string(&spec) {
            Ok(j) => j,
            Err(e) => return self.start_failed(e.to_string(), 1),
        };
        let p = &self.config.process;
        let tty = if p.tty {
            spawn::Tty::InShim
        } else {
            spawn::Tty::None
        };
        let started = match spawn::spawn_shim(ShimKind::Container, json, tty, p.open_stdin).await {
            Ok(s) => s,
            Err(e) => return self.start_failed(e.to_string(), 1),
        };
        let mut readers = Vec::new();
        for (stream, file) in started.io.outputs {
            readers.push(self.log_output(stream, file));
        }
        *self.stdin.lock().unwrap_or_else(|p| p.into_inner()) =
            started.io.stdin.map(|f| Arc::new(Mutex::new(f)));
        *self.pty.lock().unwrap_or_else(|p| p.into_inner()) = started.io.pty;
        let err = started.error.clone();
        self.update(|s| {
            s.status = Status::Running;
            s.pid = started.target_pid.unwrap_or(0);
            s.started_at = Some(Utc::now());
            s.error = err.map(|e| e.0).unwrap_or_default();
        });
        if started.error.is_none() {
            (self.on_start)();
        }
        let code = started.exit.await.unwrap_or(255);
        *self.stdin.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Drain the output before announcing the exit, so `docker wait`
        // followed by `docker logs` sees everything; a leaked descriptor
        // cannot hold the exit back for long.
        let drain = futures_util::future::join_all(readers);
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        *self.pty.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.update(|s| {
            s.status = Status::Exited;
            s.pid = 0;
            s.exit_code = code;
            s.finished_at = Some(Utc::now());
            s.exits += 1;
        });
        code
    }

    fn start_failed(&self, message: String, code: i32) -> i32 {
        tracing::error!(container = self.name(), "start failed: {message}");
        self.update(|s| {
            s.status = Status::Exited;
            s.error = message;
            s.exit_code = code;
            s.finished_at = Some(Utc::now());
            s.exits += 1;
        });
        code
    }

    fn log_output(
        self: &Arc<Self>,
        stream: Stream,
        file: File,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let mut rx = spawn::pump(stream, file);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((s, data)) = rx.recv().await {
                this.logs.write(s, &data);
            }
            let _ = done_tx.send(());
        });
        done_rx
    }

    /// Docker's name of the restart policy.
    pub fn restart_policy_name(&self) -> &'static str {
        match self.config.restart.policy {
            RestartPolicyName::No => "no",
            RestartPolicyName::OnFailure => "on-failure",
            RestartPolicyName::OnSuccess => "on-success",
            RestartPolicyName::Always => "always",
        }
    }
}
