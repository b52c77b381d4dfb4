//! The few devices the VMM emulates itself; every virtio device is a
//! vhost-user daemon instead.

pub mod bus;
pub mod serial;
