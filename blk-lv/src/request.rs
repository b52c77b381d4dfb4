//! Parsing a virtio-blk descriptor chain into a typed [`Request`]. Every
//! check on guest input happens here, before any I/O is issued.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, Permissions};

/// Sector size of the virtio-blk protocol (independent of `blk_size`).
pub const SECTOR: u64 = 512;
/// Size of `struct virtio_blk_outhdr`.
pub const HEADER_LEN: u32 = 16;
/// Size of `struct virtio_blk_discard_write_zeroes`.
pub const SEGMENT_LEN: u32 = 16;
/// Length of the `GET_ID` answer.
pub const ID_LEN: usize = 20;
/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
const FLAG_UNMAP: u32 = 1;

/// What the device accepts; derived from the disk and the flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Disk size in 512-byte sectors.
    pub capacity: u64,
    /// Maximum data descriptors per request (config `seg_max`).
    pub seg_max: u32,
    /// Writes, discards and write-zeroes are refused.
    pub readonly: bool,
    /// Maximum sectors per discard segment.
    pub max_discard_sectors: u32,
    /// Maximum sectors per write-zeroes segment.
    pub max_write_zeroes_sectors: u32,
}

/// A validated request, ready for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub kind: Kind,
    /// Guest address of the status byte.
    pub status: GuestAddress,
}

/// The operation of a validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Read into `bufs` from byte `offset`.
    Read {
        /// Byte offset on the disk.
        offset: u64,
        /// Device-writable data buffers.
        bufs: Vec<(GuestAddress, u32)>,
        /// Total bytes.
        len: u32,
    },
    /// Write `bufs` at byte `offset`.
    Write {
        /// Byte offset on the disk.
        offset: u64,
        /// Device-readable data buffers.
        bufs: Vec<(GuestAddress, u32)>,
        /// Total bytes.
        len: u32,
    },
    /// Make completed writes durable.
    Flush,
    /// Write the serial into `buf` (up to `len` bytes, at most 20).
    GetId {
        /// Device-writable buffer.
        buf: GuestAddress,
        /// Bytes to write.
        len: u32,
    },
    /// Deallocate a byte range.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
    /// Zero a byte range, deallocating it if `unmap`.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
        /// The driver allows deallocation.
        unmap: bool,
    },
}

/// Why a request was refused. Each variant maps to a status via
/// [`ParseError::status`] and to one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Guest gave a chain whose last descriptor is not a device-writable status byte in guest memory.
    #[error("no usable status descriptor")]
    NoStatus,
    /// Guest gave a header descriptor shorter than 16 bytes, or not device-readable.
    #[error("bad request header")]
    BadHeader,
    /// Guest gave a data descriptor outside guest memory.
    #[error("data buffer outside guest memory")]
    BadBuffer,
    /// Guest gave a data descriptor in the wrong direction for the request type.
    #[error("data buffer has the wrong direction")]
    BadDirection,
    /// Guest gave more data descriptors than seg_max.
    #[error("too many segments")]
    TooManySegments,
    /// Guest gave a data length that is not a multiple of 512 (or is zero, or over 4 GiB).
    #[error("bad data length")]
    BadLength,
    /// Guest addressed sectors beyond the end of the disk.
    #[error("sector out of range")]
    OutOfRange,
    /// Guest asked to modify a read-only disk.
    #[error("disk is read-only")]
    ReadOnly,
    /// Guest gave a discard/write-zeroes payload that is malformed (size, count, flags).
    #[error("bad discard/write-zeroes segment")]
    BadSegment,
    /// Guest asked for a request type we do not implement.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

/// Status byte values.
pub mod status {
    /// `VIRTIO_BLK_S_OK`.
    pub const OK: u8 = 0;
    /// `VIRTIO_BLK_S_IOERR`.
    pub const IOERR: u8 = 1;
    /// `VIRTIO_BLK_S_UNSUPP`.
    pub const UNSUPP: u8 = 2;
}

impl ParseError {
    /// The status byte to answer with.
    pub fn status(&self) -> u8 {
        match self {
            ParseError::Unsupported(_) => status::UNSUPP,
            _ => status::IOERR,
        }
    }
}

/// Result of parsing: the request, or an error together with where to
/// write its status (`None` when the chain has no usable status byte and
/// must be returned with used length 0).
pub type Parsed = Result<Request, (ParseError, Option<GuestAddress>)>;

/// Parses the descriptors of one chain (in order) against `mem`.
pub fn parse<M>(descs: &[Descriptor], mem: &M, limits: &Limits) -> Parsed
where
    M: GuestMemoryBackend,
{
    // Status: the last descriptor, device-writable, at least 1 byte, in memory.
    let status = match descs.last() {
        Some(d) if d.is_write_only() && d.len() >= 1 && mem.check_range(d.addr(), 1) => d.addr(),
        _ => return Err((ParseError::NoStatus, None)),
    };
    let fail = |e: ParseError| Err((e, Some(status)));
    if descs.len() < 2 {
        return fail(ParseError::BadHeader);
    }
    let head = &descs[0];
    if head.is_write_only() || head.len() < HEADER_LEN {
        return fail(ParseError::BadHeader);
    }
    let mut hdr = [0u8; HEADER_LEN as usize];
    if mem.read_slice(&mut hdr, head.addr()).is_err() {
        return fail(ParseError::BadHeader);
    }
    let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let sector = u64::from_le_bytes([
        hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
    ]);
    let data = &descs[1..descs.len() - 1];

    let kind = match kind {
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
            let write = kind == VIRTIO_BLK_T_OUT;
            if write && limits.readonly {
                return fail(ParseError::ReadOnly);
            }
            let (bufs, len) = match data_bufs(data, mem, limits, !write) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            if len == 0 || u64::from(len) % SECTOR != 0 {
                return fail(ParseError::BadLength);
            }
            let end = sector.checked_add(u64::from(len) / SECTOR);
            if end.is_none_or(|e| e > limits.capacity) {
                return fail(ParseError::OutOfRange);
            }
            let offset = sector * SECTOR; // sector < capacity, so no overflow.
            if write {
                Kind::Write { offset, bufs, len }
            } else {
                Kind::Read { offset, bufs, len }
            }
        }
        VIRTIO_BLK_T_FLUSH => Kind::Flush,
        VIRTIO_BLK_T_GET_ID => {
            let [d] = data else {
                return fail(ParseError::BadLength);
            };
            if !d.is_write_only() {
                return fail(ParseError::BadDirection);
            }
            let len = d.len().min(ID_LEN as u32);
            if !mem.check_range(d.addr(), len as usize) {
                return fail(ParseError::BadBuffer);
            }
            Kind::GetId { buf: d.addr(), len }
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            let discard = kind == VIRTIO_BLK_T_DISCARD;
            if limits.readonly {
                return fail(ParseError::ReadOnly);
            }
            // We advertise max_discard_seg = max_write_zeroes_seg = 1.
            let [d] = data else {
                return fail(ParseError::BadSegment);
            };
            if d.is_write_only() {
                return fail(ParseError::BadDirection);
            }
            if d.len() != SEGMENT_LEN {
                return fail(ParseError::BadSegment);
            }
            let mut seg = [0u8; SEGMENT_LEN as usize];
            if mem.read_slice(&mut seg, d.addr()).is_err() {
                return fail(ParseError::BadBuffer);
            }
            let start = u64::from_le_bytes([
                seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
            ]);
            let count = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
            let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
            let max = if discard {
                limits.max_discard_sectors
            } else {
                limits.max_write_zeroes_sectors
            };
            // Discard must not carry UNMAP; no other flag bit exists.
            let allowed = if discard { 0 } else { FLAG_UNMAP };
            if flags & !allowed != 0 {
                return Err((ParseError::Unsupported(kind), Some(status)));
            }
            if count == 0 || count > max {
                return fail(ParseError::BadSegment);
            }
            if start
                .checked_add(u64::from(count))
                .is_none_or(|e| e > limits.capacity)
            {
                return fail(ParseError::OutOfRange);
            }
            let (offset, len) = (start * SECTOR, u64::from(count) * SECTOR);
            if discard {
                Kind::Discard { offset, len }
            } else {
                Kind::WriteZeroes {
                    offset,
                    len,
                    unmap: flags & FLAG_UNMAP != 0,
                }
            }
        }
        other => return Err((ParseError::Unsupported(other), Some(status))),
    };
    Ok(Request { kind, status })
}

/// Checks the data descriptors of a read or write: count, direction, in
/// guest memory, total under 4 GiB.
fn data_bufs<M: GuestMemoryBackend>(
    data: &[Descriptor],
    mem: &M,
    limits: &Limits,
    device_writes: bool,
) -> Result<(Vec<(GuestAddress, u32)>, u32), ParseError> {
    if data.len() > limits.seg_max as usize {
        return Err(ParseError::TooManySegments);
    }
    let mut bufs = Vec::with_capacity(data.len());
    let mut total: u32 = 0;
    for d in data {
        if d.is_write_only() != device_writes {
            return Err(ParseError::BadDirection);
        }
        if d.len() == 0 {
            continue;
        }
        let access = if device_writes {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !GuestMemory::check_range(mem, d.addr(), d.len() as usize, access) {
            return Err(ParseError::BadBuffer);
        }
        total = total.checked_add(d.len()).ok_or(ParseError::BadLength)?;
        bufs.push((d.addr(), d.len()));
    }
    Ok((bufs, total))
}

/// Writes the status byte; a failure means the guest moved its memory
/// away, and is ignored (there is no one left to tell).
pub fn write_status<M: GuestMemoryBackend>(mem: &M, at: GuestAddress, status: u8) {
    let _ = mem.write_obj(status, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x11_0000;
    const STATUS: u64 = 0x12_0000;
    const W: u16 = VRING_DESC_F_WRITE as u16;

    /// (type, sector, descriptors, expected error, expected status address)
    type Case = (
        u32,
        u64,
        Vec<(u64, u32, u16)>,
        ParseError,
        Option<GuestAddress>,
    );

    fn limits() -> Limits {
        Limits {
            capacity: 2048,
            seg_max: 4,
            readonly: false,
            max_discard_sectors: 1024,
            max_write_zeroes_sectors: 1024,
        }
    }

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
    }

    /// Builds the chain with virtio-queue's driver-side mock and parses it.
    fn parse_chain(
        m: &GuestMemoryMmap<()>,
        kind: u32,
        sector: u64,
        descs: &[(u64, u32, u16)],
        l: &Limits,
    ) -> Parsed {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        m.write_slice(&h, GuestAddress(HDR)).unwrap();
        let q = MockSplitQueue::new(m, 16);
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .map(|&(a, len, f)| RawDescriptor::from(Descriptor::new(a, len, f, 0)))
            .collect();
        let chain = q.build_desc_chain(&raw).unwrap();
        let descs: Vec<Descriptor> = chain.collect();
        parse(&descs, m, l)
    }

    #[test]
    fn read_request() {
        let m = mem();
        let r = parse_chain(
            &m,
            VIRTIO_BLK_T_IN,
            8,
            &[(HDR, 16, 0), (DATA, 4096, W), (STATUS, 1, W)],
            &limits(),
        );
        let r = r.unwrap();
        assert_eq!(r.status, GuestAddress(STATUS));
        assert_eq!(
            r.kind,
            Kind::Read {
                offset: 4096,
                bufs: vec![(GuestAddress(DATA), 4096)],
                len: 4096
            }
        );
    }

    #[test]
    fn write_zeroes_with_unmap() {
        let m = mem();
        let mut seg = [0u8; 16];
        seg[0..8].copy_from_slice(&10u64.to_le_bytes());
        seg[8..12].copy_from_slice(&4u32.to_le_bytes());
        seg[12..16].copy_from_slice(&1u32.to_le_bytes());
        m.write_slice(&seg, GuestAddress(DATA)).unwrap();
        let r = parse_chain(
            &m,
            VIRTIO_BLK_T_WRITE_ZEROES,
            0,
            &[(HDR, 16, 0), (DATA, 16, 0), (STATUS, 1, W)],
            &limits(),
        );
        assert_eq!(
            r.unwrap().kind,
            Kind::WriteZeroes {
                offset: 5120,
                len: 2048,
                unmap: true
            }
        );
        // The same flag on a discard is unsupported.
        let r = parse_chain(
            &m,
            VIRTIO_BLK_T_DISCARD,
            0,
            &[(HDR, 16, 0), (DATA, 16, 0), (STATUS, 1, W)],
            &limits(),
        );
        assert_eq!(
            r.unwrap_err().0,
            ParseError::Unsupported(VIRTIO_BLK_T_DISCARD)
        );
    }

    #[test]
    fn each_malformed_case_has_its_error() {
        let m = mem();
        let l = limits();
        let st = Some(GuestAddress(STATUS));
        let cases: Vec<Case> = vec![
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, 0), (DATA, 512, W)],
                ParseError::BadLength,
                Some(GuestAddress(DATA)),
            ),
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, 0), (DATA, 512, 0)],
                ParseError::NoStatus,
                None,
            ),
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, 0), (1 << 30, 1, W)],
                ParseError::NoStatus,
                None,
            ),
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 12, 0), (DATA, 512, W), (STATUS, 1, W)],
                ParseError::BadHeader,
                st,
            ),
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, 0), (1 << 30, 512, W), (STATUS, 1, W)],
                ParseError::BadBuffer,
                st,
            ),
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, 0), (DATA, 511, W), (STATUS, 1, W)],
                ParseError::BadLength,
                st,
            ),
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, W)],
                ParseError::BadDirection,
                st,
            ),
            (
                VIRTIO_BLK_T_OUT,
                0,
                vec![(HDR, 16, 0), (DATA, 512, W), (STATUS, 1, W)],
                ParseError::BadDirection,
                st,
            ),
            (
                VIRTIO_BLK_T_IN,
                2047,
                vec![(HDR, 16, 0), (DATA, 1024, W), (STATUS, 1, W)],
                ParseError::OutOfRange,
                st,
            ),
            (
                VIRTIO_BLK_T_IN,
                u64::MAX,
                vec![(HDR, 16, 0), (DATA, 512, W), (STATUS, 1, W)],
                ParseError::OutOfRange,
                st,
            ),
            (
                VIRTIO_BLK_T_IN,
                0,
                vec![
                    (HDR, 16, 0),
                    (DATA, 512, W),
                    (DATA, 512, W),
                    (DATA, 512, W),
                    (DATA, 512, W),
                    (DATA, 512, W),
                    (STATUS, 1, W),
                ],
                ParseError::TooManySegments,
                st,
            ),
            (
                VIRTIO_BLK_T_DISCARD,
                0,
                vec![(HDR, 16, 0), (DATA, 32, 0), (STATUS, 1, W)],
                ParseError::BadSegment,
                st,
            ),
            (
                VIRTIO_BLK_T_GET_ID,
                0,
                vec![(HDR, 16, 0), (DATA, 20, 0), (STATUS, 1, W)],
                ParseError::BadDirection,
                st,
            ),
            (
                77,
                0,
                vec![(HDR, 16, 0), (STATUS, 1, W)],
                ParseError::Unsupported(77),
                st,
            ),
        ];
        for (kind, sector, descs, err, at) in cases {
            let got = parse_chain(&m, kind, sector, &descs, &l);
            assert_eq!(got, Err((err, at)), "{kind} {descs:?}");
        }
    }

    #[test]
    fn readonly_refuses_writes_discards_and_zeroes() {
        let m = mem();
        let l = Limits {
            readonly: true,
            ..limits()
        };
        for kind in [
            VIRTIO_BLK_T_OUT,
            VIRTIO_BLK_T_DISCARD,
            VIRTIO_BLK_T_WRITE_ZEROES,
        ] {
            let got = parse_chain(
                &m,
                kind,
                0,
                &[(HDR, 16, 0), (DATA, 16, 0), (STATUS, 1, W)],
                &l,
            );
            assert_eq!(got.unwrap_err().0, ParseError::ReadOnly);
        }
        let got = parse_chain(
            &m,
            VIRTIO_BLK_T_FLUSH,
            0,
            &[(HDR, 16, 0), (STATUS, 1, W)],
            &l,
        );
        assert_eq!(got.unwrap().kind, Kind::Flush);
    }
}
