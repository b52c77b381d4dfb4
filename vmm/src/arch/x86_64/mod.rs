//! x86-64 boot setup: the guest-memory structures (GDT, IDT, page tables) and
//! the vCPU register state that the 64-bit Linux boot protocol expects, plus
//! the real-mode state used by the real-mode payload tests.

pub mod acpi;
pub mod bootparams;
pub mod cpuid;
pub mod e820;
pub mod error;
pub mod fpu;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod msr;
pub mod paging;
pub mod regs;
pub mod sregs;

pub use error::ArchError;
pub use fpu::setup_fpu;
pub use regs::{setup_real_mode_regs, setup_regs, BootRegs};
pub use sregs::{setup_long_mode, setup_pvh_mode, setup_real_mode};
