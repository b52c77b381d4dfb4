//! The few devices the VMM emulates itself; every virtio device is a
//! vhost-user daemon instead.

pub mod acpi_pm;
pub mod bus;
pub mod i8042;
pub mod serial;
