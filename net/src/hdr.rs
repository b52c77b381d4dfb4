//! The virtio-net header in front of every frame, the negotiated feature
//! set, and the size limits that follow from both.

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;

/// Size of the header with `num_buffers` (VERSION_1 or MRG_RXBUF).
pub const HDR_LEN: usize = 12;
/// Size of the legacy header without `num_buffers`.
pub const HDR_LEN_LEGACY: usize = 10;
/// Ethernet header plus one VLAN tag: what a frame may add to the MTU.
pub const L2_OVERHEAD: usize = 14 + 4;
/// Largest GSO frame the kernel builds or accepts (an IP packet of 64 KiB
/// plus the L2 header).
pub const MAX_GSO_FRAME: usize = 65535 + L2_OVERHEAD;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// The virtio-net header fields we look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHdr {
    /// `VIRTIO_NET_HDR_F_*`
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`
    pub gso_type: u8,
    /// segment size for GSO frames
    pub gso_size: u16,
}

impl NetHdr {
    /// Parses the first bytes of a header (at least 10).
    pub fn parse(b: &[u8]) -> Option<NetHdr> {
        if b.len() < HDR_LEN_LEGACY {
            return None;
        }
        Some(NetHdr {
            flags: b[0],
            gso_type: b[1],
            gso_size: u16::from_le_bytes([b[4], b[5]]),
        })
    }
}

/// Why a TX frame is refused before it reaches the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HdrError {
    /// Guest asked for checksum offload it did not negotiate (CSUM).
    #[error("guest asked for checksum offload without VIRTIO_NET_F_CSUM")]
    CsumNotNegotiated,
    /// Guest sent a GSO type it did not negotiate or that does not exist.
    #[error("guest sent GSO type {0:#x} that was not negotiated")]
    GsoNotNegotiated(u8),
    /// Guest sent a GSO frame with segment size 0.
    #[error("guest sent a GSO frame with gso_size 0")]
    GsoSizeZero,
    /// Guest sent a frame larger than the MTU (or 64 KiB for GSO).
    #[error("guest sent a {0}-byte frame over the limit")]
    TooLarge(usize),
}

/// The features this device offers and what the guest accepted, and the
/// limits derived from them. Immutable per negotiation; cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Bits acked by the driver.
    pub acked: u64,
    /// Device MTU (`--mtu`).
    pub mtu: u16,
}

impl Features {
    /// Device features to offer for `--offload on|off`.
    pub fn offered(offload: bool) -> u64 {
        let mut f = bit(VIRTIO_F_VERSION_1)
            | bit(VIRTIO_NET_F_MRG_RXBUF)
            | bit(VIRTIO_NET_F_MTU)
            | bit(VIRTIO_NET_F_MAC)
            | bit(VIRTIO_NET_F_STATUS)
            | bit(VIRTIO_NET_F_CTRL_VQ)
            | bit(VIRTIO_NET_F_MQ)
            | bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
            | bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC);
        if offload {
            f |= bit(VIRTIO_NET_F_CSUM)
                | bit(VIRTIO_NET_F_GUEST_CSUM)
                | bit(VIRTIO_NET_F_HOST_TSO4)
                | bit(VIRTIO_NET_F_HOST_TSO6)
                | bit(VIRTIO_NET_F_GUEST_TSO4)
                | bit(VIRTIO_NET_F_GUEST_TSO6);
        }
        f
    }

    /// Whether feature bit `b` was acked.
    pub fn has(&self, b: u32) -> bool {
        self.acked & bit(b) != 0
    }

    /// Header length on both queues and on the tap.
    pub fn hdr_len(&self) -> usize {
        if self.has(VIRTIO_F_VERSION_1) || self.has(VIRTIO_NET_F_MRG_RXBUF) {
            HDR_LEN
        } else {
            HDR_LEN_LEGACY
        }
    }

    /// Whether RX may spread one frame over several chains.
    pub fn mergeable(&self) -> bool {
        self.has(VIRTIO_NET_F_MRG_RXBUF)
    }

    /// Largest non-GSO frame (without header): the MTU the guest was told
    /// (at least 1500 when it did not negotiate MTU) plus L2 overhead.
    pub fn max_plain_frame(&self) -> usize {
        let mtu = if self.has(VIRTIO_NET_F_MTU) {
            usize::from(self.mtu)
        } else {
            usize::from(self.mtu).max(1500)
        };
        mtu + L2_OVERHEAD
    }

    /// Largest frame (without header) the tap may hand us for the guest.
    pub fn max_rx_frame(&self) -> usize {
        if self.has(VIRTIO_NET_F_GUEST_TSO4) || self.has(VIRTIO_NET_F_GUEST_TSO6) {
            MAX_GSO_FRAME
        } else {
            self.max_plain_frame()
        }
    }

    /// Checks a TX header against what was negotiated and the frame size.
    pub fn check_tx(&self, h: &NetHdr, frame_len: usize) -> Result<(), HdrError> {
        if u32::from(h.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 && !self.has(VIRTIO_NET_F_CSUM) {
            return Err(HdrError::CsumNotNegotiated);
        }
        let gso = u32::from(h.gso_type);
        let limit = match gso & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE if gso == VIRTIO_NET_HDR_GSO_NONE => self.max_plain_frame(),
            VIRTIO_NET_HDR_GSO_TCPV4 if self.has(VIRTIO_NET_F_HOST_TSO4) => MAX_GSO_FRAME,
            VIRTIO_NET_HDR_GSO_TCPV6 if self.has(VIRTIO_NET_F_HOST_TSO6) => MAX_GSO_FRAME,
            _ => return Err(HdrError::GsoNotNegotiated(h.gso_type)),
        };
        if gso & VIRTIO_NET_HDR_GSO_ECN != 0 && !self.has(VIRTIO_NET_F_HOST_ECN) {
            return Err(HdrError::GsoNotNegotiated(h.gso_type));
        }
        if gso != VIRTIO_NET_HDR_GSO_NONE && h.gso_size == 0 {
            return Err(HdrError::GsoSizeZero);
        }
        if frame_len > limit {
            return Err(HdrError::TooLarge(frame_len));
        }
        Ok(())
    }

    /// The tap offloads matching what the guest can receive.
    pub fn rx_offloads(&self) -> crate::tap::RxOffloads {
        crate::tap::RxOffloads {
            csum: self.has(VIRTIO_NET_F_GUEST_CSUM),
            tso4: self.has(VIRTIO_NET_F_GUEST_TSO4),
            tso6: self.has(VIRTIO_NET_F_GUEST_TSO6),
            ecn: self.has(VIRTIO_NET_F_GUEST_ECN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(bits: &[u32]) -> Features {
        Features {
            acked: bits.iter().fold(0, |a, b| a | bit(*b)),
            mtu: 1500,
        }
    }

    #[test]
    fn header_length_follows_version_and_mrg() {
        assert_eq!(feats(&[]).hdr_len(), 10);
        assert_eq!(feats(&[VIRTIO_F_VERSION_1]).hdr_len(), 12);
        assert_eq!(feats(&[VIRTIO_NET_F_MRG_RXBUF]).hdr_len(), 12);
    }

    #[test]
    fn tx_checks_refuse_unnegotiated_offloads_and_oversize() {
        let plain = feats(&[VIRTIO_F_VERSION_1]);
        let h = NetHdr::default();
        assert_eq!(plain.check_tx(&h, 1518), Ok(()));
        assert_eq!(plain.check_tx(&h, 1519), Err(HdrError::TooLarge(1519)));
        let csum = NetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM as u8,
            ..h
        };
        assert_eq!(plain.check_tx(&csum, 100), Err(HdrError::CsumNotNegotiated));
        let tso = NetHdr {
            flags: 1,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4 as u8,
            gso_size: 1448,
        };
        assert!(plain.check_tx(&tso, 60000).is_err());
        let off = feats(&[
            VIRTIO_F_VERSION_1,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
        ]);
        assert_eq!(off.check_tx(&tso, 60000), Ok(()));
        assert_eq!(
            off.check_tx(&tso, MAX_GSO_FRAME + 1),
            Err(HdrError::TooLarge(MAX_GSO_FRAME + 1))
        );
        let ecn = NetHdr {
            gso_type: (VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN) as u8,
            ..tso
        };
        assert!(off.check_tx(&ecn, 1000).is_err());
        let zero = NetHdr { gso_size: 0, ..tso };
        assert_eq!(off.check_tx(&zero, 1000), Err(HdrError::GsoSizeZero));
        let udp = NetHdr {
            gso_type: VIRTIO_NET_HDR_GSO_UDP as u8,
            ..tso
        };
        assert!(off.check_tx(&udp, 1000).is_err());
        let bogus = NetHdr {
            gso_type: 0x42,
            ..tso
        };
        assert!(off.check_tx(&bogus, 1000).is_err());
    }

    #[test]
    fn mtu_limits_follow_negotiation() {
        let mut f = feats(&[VIRTIO_NET_F_MTU]);
        f.mtu = 9000;
        assert_eq!(f.max_plain_frame(), 9018);
        f.mtu = 1280;
        assert_eq!(f.max_plain_frame(), 1298);
        let f = Features {
            acked: 0,
            mtu: 1280,
        };
        assert_eq!(f.max_plain_frame(), 1518);
        assert_eq!(
            feats(&[VIRTIO_NET_F_GUEST_TSO6]).max_rx_frame(),
            MAX_GSO_FRAME
        );
    }
}
