//! cradle-init: PID 1 of a cradle pod, and vdocker, the Docker Engine API
//! subset served from inside the pod.
//!
//! * [`config`]: the versioned pod config schema (`/cradle/config.json`).
//! * [`pod`], [`container`], [`rootfs`], [`shim`], [`spawn`], [`reaper`],
//!   [`users`], [`logs`]: the container runtime (overlay roots, namespaces,
//!   pivot_root, users, restart policy, logs).
//! * [`exec`], [`archive`], [`vdocker`]: `docker exec`, `docker cp` and the
//!   HTTP API.
//! * [`init`], [`net`], [`control`]: what only PID 1 in a VM does (mounts,
//!   modules, netlink, control-port milestones, power-off).
//!
//! The same runtime also runs on an ordinary host (`cradle-init host`), which
//! is how the docker CLI is tested against vdocker without booting a VM.
//! The user documentation follows (it is also `docs/guest.md`).
//!
#![doc = include_str!("../../docs/guest.md")]
#![deny(missing_docs)]
#![recursion_limit = "256"]

pub mod archive;
pub mod config;
pub mod container;
pub mod control;
pub mod exec;
pub mod init;
pub mod logs;
pub mod net;
pub mod pod;
pub mod pty;
pub mod reaper;
pub mod rootfs;
pub mod shim;
pub mod spawn;
pub mod users;
pub mod vdocker;
