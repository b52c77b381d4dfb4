//! `docker exec` instances: created by `POST /containers/{id}/exec`, run by
//! `POST /exec/{id}/start` in the container's namespaces through `__exec`.

use crate::container::{Container, Status};
use crate::logs::Stream;
use crate::shim::{ExecSpec, ProcessSpec};
use crate::spawn::{self, ShimKind};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The body of `POST /containers/{id}/exec` (Docker's field names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    /// Connect stdin.
    pub attach_stdin: bool,
    /// Connect stdout.
    pub attach_stdout: bool,
    /// Connect stderr.
    pub attach_stderr: bool,
    /// Allocate a pty.
    pub tty: bool,
    /// Command.
    pub cmd: Vec<String>,
    /// Extra `KEY=VALUE` entries on top of the container's env.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Working directory; the container's when empty.
    pub working_dir: String,
    /// User; the container's when empty.
    pub user: String,
    /// Initial terminal size `[height, width]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u16; 2]>,
    /// Accepted and ignored (all execs run with the container's rights).
    pub privileged: bool,
    /// Accepted and ignored.
    pub detach_keys: String,
}

/// What `GET /exec/{id}/json` reports.
#[derive(Debug, Clone, Default)]
pub struct ExecState {
    /// Started and not yet exited.
    pub running: bool,
    /// Exit code once it exited.
    pub exit_code: Option<i32>,
    /// Host pid of the command while it runs.
    pub pid: i32,
    /// `start` was called (an exec runs once).
    pub started: bool,
}

/// An exec instance.
pub struct Exec {
    /// 64 hex digits.
    pub id: String,
    /// Where it runs.
    pub container: Arc<Container>,
    /// How it was created.
    pub config: ExecConfig,
    state: Mutex<ExecState>,
    pty: Mutex<Option<Arc<OwnedFd>>>,
    size: Mutex<Option<(u16, u16)>>,
    exit: watch::Sender<Option<i32>>,
}

/// The runtime's ends of a started exec.
pub struct ExecIo {
    /// Writer to the command's stdin (when AttachStdin).
    pub stdin: Option<File>,
    /// Readers of its output.
    pub outputs: Vec<(Stream, File)>,
    /// Becomes `Some(code)` when it exits.
    pub exit: watch::Receiver<Option<i32>>,
}

impl Exec {
    /// A new, not yet started exec on `container`.
    pub fn new(container: Arc<Container>, config: ExecConfig) -> Self {
        use sha2::Digest;
        let seed = format!(
            "{}/{:?}/{}",
            container.id,
            config.cmd,
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        );
        Self {
            id: hex::encode(sha2::Sha256::digest(seed.as_bytes())),
            size: Mutex::new(config.console_size.map(|[h, w]| (h, w))),
            container,
            config,
            state: Mutex::new(ExecState::default()),
            pty: Mutex::new(None),
            exit: watch::channel(None).0,
        }
    }

    /// A copy of its state.
    pub fn state(&self) -> ExecState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resizes its pty, or remembers the size until it starts.
    pub fn resize(&self, h: u16, w: u16) -> Result<(), String> {
        *self.size.lock().unwrap_or_else(|p| p.into_inner()) = Some((h, w));
        match &*self.pty.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(pty) => spawn::resize(pty, h, w).map_err(|e| e.to_string()),
            None if self.config.tty => Ok(()),
            None => Err("the exec has no tty".into()),
        }
    }

    /// Starts it. Errors (Docker's 409 cases) when already started or when
    /// the container is not running.
    pub async fn start(self: &Arc<Self>) -> Result<ExecIo, String> {
        let st = self.container.state();
        if st.status != Status::Running || st.pid <= 0 {
            return Err(format!("container {} is not running", self.container.id));
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.started {
                return Err(format!("exec {} has already been started", self.id));
            }
            s.started = true;
            s.running = true;
        }
        let base = self.container.process_spec();
        let mut env = self.container.env.clone();
        env.extend(self.config.env.clone().unwrap_or_default());
        if self.config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let spec = ExecSpec {
            target_pid: st.pid,
            process: ProcessSpec {
                argv: self.config.cmd.clone(),
                env,
                workdir: if self.config.working_dir.is_empty() {
                    base.workdir
                } else {
                    self.config.working_dir.clone()
                },
                user: if self.config.user.is_empty() {
                    base.user
                } else {
                    Some(self.config.user.clone())
                },
                tty: self.config.tty,
            },
        };
        let json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        let tty = if self.config.tty {
            spawn::Tty::From(format!("/proc/{}/root/dev/pts/ptmx", st.pid).into())
        } else {
            spawn::Tty::None
        };
        let started =
            match spawn::spawn_shim(ShimKind::Exec, json, tty, self.config.attach_stdin).await {
                Ok(s) => s,
                Err(e) => {
                    self.finish(126);
                    return Err(e.to_string());
                }
            };
        if let Some(pty) = &started.io.pty {
            if let Some((h, w)) = *self.size.lock().unwrap_or_else(|p| p.into_inner()) {
                let _ = spawn::resize(pty, h, w);
            }
        }
        *self.pty.lock().unwrap_or_else(|p| p.into_inner()) = started.io.pty.clone();
        self.state.lock().unwrap_or_else(|p| p.into_inner()).pid = started.target_pid.unwrap_or(0);
        let this = self.clone();
        let exit = started.exit;
        tokio::spawn(async move {
            let code = exit.await.unwrap_or(255);
            this.finish(code);
        });
        // A start error was already written by the shim on the exec's
        // stderr, where Docker prints it too.
        let outputs = started.io.outputs;
        Ok(ExecIo {
            stdin: started.io.stdin,
            outputs,
            exit: self.exit.subscribe(),
        })
    }

    fn finish(&self, code: i32) {
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.running = false;
            s.exit_code = Some(code);
            s.pid = 0;
        }
        *self.pty.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.exit.send_replace(Some(code));
    }
}
