//! cradle-vmm: the minimal KVM VMM behind `kcradle`.
//!
//! The VMM owns KVM, guest memory, the vCPUs and the few devices that must
//! live next to the vCPU (serial, control port, PCI transport); every virtio
//! device is a separate vhost-user daemon. This crate grows in steps: the x86
//! vCPU setup, a single-vCPU VM for hand-written payloads and the KVM probe
//! come first.
#![deny(missing_docs)]

pub mod arch;
pub mod boot;
pub mod boot_cli;
pub mod config;
pub mod control;
pub mod devices;
pub mod exit;
pub mod irq;
pub mod jail;
pub mod kick;
pub mod launch;
pub mod launcher;
pub mod memory;
pub mod minivm;
pub mod payload;
pub mod pci;
pub mod probe;
pub mod seccomp;
pub mod signals;
pub mod vcpu;
pub mod virtio;
pub mod vm;
