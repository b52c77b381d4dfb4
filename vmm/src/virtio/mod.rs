//! Virtio devices for the guest: the virtio-pci modern transport the guest
//! drives, and the backends behind it (vhost-user daemons). The VMM only
//! handles the control path; queues go straight between guest memory and
//! the daemon through ioeventfds (kicks) and irqfds (MSI-X interrupts).

pub mod msix;
pub mod pci;
pub mod vhost_user;

use vmm_sys_util::eventfd::EventFd;

/// `VIRTIO_F_VERSION_1`: the modern interface, required.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Device status: the guest noticed the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the guest has a driver for it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready; queues may run.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device failed and must be reset.
pub const STATUS_NEEDS_RESET: u8 = 0x40;
/// Device status: the driver gave up on the device.
pub const STATUS_FAILED: u8 = 0x80;
/// "No MSI-X vector" in vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// What the driver set up for one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Largest size the device allows.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// Whether the driver enabled it.
    pub ready: bool,
    /// MSI-X vector for used-buffer notifications.
    pub msix_vector: u16,
    /// Guest-physical address of the descriptor table.
    pub desc: u64,
    /// Guest-physical address of the available (driver) ring.
    pub avail: u64,
    /// Guest-physical address of the used (device) ring.
    pub used: u64,
}

impl QueueState {
    /// A queue as reset leaves it.
    pub fn new(max_size: u16) -> Self {
        QueueState {
            max_size,
            size: max_size,
            ready: false,
            msix_vector: NO_VECTOR,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// One enabled queue handed to a backend at activation.
#[derive(Debug)]
pub struct ActiveQueue<'a> {
    /// Queue index.
    pub index: usize,
    /// Its configuration.
    pub state: QueueState,
    /// Signalled (by KVM, through an ioeventfd) when the guest kicks it.
    pub kick: &'a EventFd,
    /// Signalling it raises the queue's MSI-X interrupt (an irqfd).
    pub call: &'a EventFd,
}

/// A device behind the transport.
pub trait VirtioBackend: Send {
    /// Virtio device type (2: block, 26: fs, 1: net).
    fn device_type(&self) -> u16;
    /// Features offered to the guest.
    fn features(&self) -> u64;
    /// Number of queues.
    fn num_queues(&self) -> u16;
    /// Largest queue size.
    fn max_queue_size(&self) -> u16;
    /// Size of the device-specific config space.
    fn config_len(&self) -> u32;
    /// Reads device config at `offset`; out-of-range bytes read as zero.
    fn read_config(&mut self, offset: u64, data: &mut [u8]);
    /// Writes device config at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the negotiated `features` and the enabled
    /// queues. An error marks the device NEEDS_RESET; the VM keeps running.
    fn activate(&mut self, features: u64, queues: &[ActiveQueue<'_>]) -> Result<(), String>;
    /// Stops the device (driver reset).
    fn reset(&mut self);
    /// A socket whose hang-up means the backend is gone (a vhost-user
    /// daemon's connection); `None` for backends that cannot vanish.
    fn hangup_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}
