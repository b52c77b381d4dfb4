//! The control port: the I/O port through which the guest init will report
//! milestones (init started, container started) and the pod's exit status to
//! the VMM (issue #6). Only the port and the access width are fixed so far;
//! the payload tests already exercise a 32-bit write to it.

/// I/O port of the control device. 0x600 is unused by the PC platform
/// devices the VMM emulates (serial, i8042, PCI config, PIT, RTC).
pub const CONTROL_PORT: u16 = 0x600;

/// Decodes a guest write to [`CONTROL_PORT`]. Only 32-bit writes carry a
/// value; any other width is hostile or a bug and is ignored (`None`).
pub fn decode_write(data: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = data.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dword_writes_decode() {
        assert_eq!(decode_write(&[0x78, 0x56, 0x34, 0x12]), Some(0x1234_5678));
        assert_eq!(decode_write(&[1]), None);
        assert_eq!(decode_write(&[1, 2]), None);
        assert_eq!(decode_write(&[1, 2, 3, 4, 5, 6, 7, 8]), None);
    }
}
