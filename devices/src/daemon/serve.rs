//! The listening socket and the accept loop: one vhost-user connection at
//! a time, and a fresh backend for each, so a VM restart does not need a
//! new daemon.

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringEpollHandler, VringRwLock};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use super::{CommonArgs, DaemonError};

/// Guest memory as the backend sees it.
pub type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// What the accept loop needs from a device backend beyond
/// [`VhostUserBackend`].
pub trait DaemonBackend:
    VhostUserBackend<Bitmap = (), Vring = VringRwLock<GuestMemory>> + Clone + 'static
{
    /// Called once per connection, after the worker threads exist and
    /// before the frontend is accepted: register extra fds (io_uring
    /// completion eventfds, taps) with the workers' epoll loops. Tokens
    /// must be greater than `num_queues()`. The default registers nothing.
    fn attach(&self, _handlers: &[Arc<VringEpollHandler<Self>>]) -> std::io::Result<()> {
        Ok(())
    }

    /// Called when the frontend has gone, before the workers are told to
    /// exit: finish (or cancel) in-flight requests. The default does nothing.
    fn detach(&self) {}
}

/// Per-worker exit eventfds, for [`VhostUserBackend::exit_event`]: the
/// accept loop uses them to stop a connection's workers.
#[derive(Debug)]
pub struct ExitEvents {
    events: Vec<(EventConsumer, EventNotifier)>,
}

impl ExitEvents {
    /// One exit event per worker thread.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let events = (0..threads)
            .map(|_| new_event_consumer_and_notifier(EventFlag::CLOEXEC | EventFlag::NONBLOCK))
            .collect::<Result<_, _>>()?;
        Ok(ExitEvents { events })
    }

    /// What [`VhostUserBackend::exit_event`] returns for `thread`.
    pub fn get(&self, thread: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (c, n) = self.events.get(thread)?;
        Some((c.try_clone().ok()?, n.try_clone().ok()?))
    }
}

/// Binds `--socket` (removing a stale socket file first) or adopts the
/// listening socket inherited as `--fd`. Returns the listener and the path
/// it was bound at.
pub fn listen(args: &CommonArgs) -> Result<(Listener, Option<PathBuf>), DaemonError> {
    if let Some(fd) = args.fd {
        // Refuse an fd that is not an open socket rather than wrapping junk.
        // SAFETY: fstat only writes into the stat buffer we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `st` is a valid out pointer.
        if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(DaemonError::Socket {
                path: format!("fd {fd}"),
                cause: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a socket"),
            });
        }
        // SAFETY: the supervisor passed us ownership of this listening socket
        // fd, checked above to be a socket; nothing else in the process owns it.
        let l = unsafe { UnixListener::from_raw_fd(fd) };
        return Ok((Listener::from(l), None));
    }
    let path = args.socket.clone().ok_or(DaemonError::NoSocket)?;
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).map_err(|cause| DaemonError::Socket {
        path: path.display().to_string(),
        cause,
    })?;
    Ok((Listener::from(l), Some(path)))
}

/// Serves one frontend after the other, forever. `make` builds a fresh
/// backend for each connection around that connection's guest memory.
/// Returns only on an error the daemon cannot recover from.
pub fn serve<B, F>(name: &str, listener: &mut Listener, mut make: F) -> Result<(), DaemonError>
where
    B: DaemonBackend,
    F: FnMut(GuestMemory) -> std::io::Result<B>,
{
    loop {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let backend = make(mem.clone()).map_err(DaemonError::Backend)?;
        let mut daemon = VhostUserDaemon::new(name.to_string(), backend.clone(), mem)
            .map_err(|e| DaemonError::VhostUser(e.to_string()))?;
        let handlers = daemon.get_epoll_handlers();
        backend.attach(&handlers).map_err(DaemonError::Backend)?;
        daemon
            .start(listener)
            .map_err(|e| DaemonError::VhostUser(e.to_string()))?;
        tracing::info!("frontend connected");
        match daemon.wait() {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => tracing::info!("frontend disconnected"),
            Err(e) => tracing::warn!(error = %e, "frontend connection ended with an error"),
        }
        backend.detach();
        for h in &handlers {
            h.send_exit_event();
        }
    }
}
