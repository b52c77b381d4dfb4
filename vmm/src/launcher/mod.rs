//! The launcher: `kcradle summon` turns an image into a bundle directory,
//! `kcradle run` starts the device daemons, the host network
//! and the VM for a bundle. The user manual is `docs/kcradle-launcher.md`.

pub mod bundle;
pub mod cli;
pub mod daemons;
pub mod initrd;
pub mod net;
pub mod pod;
pub mod pods;
pub mod progress;
pub mod proxy;
pub mod run;
pub mod spec;
pub mod state;
pub mod summon;
pub mod units;
