//! A bounds-checked cursor over a request body. Every read that would run
//! past the end fails with [`Malformed`] instead of panicking.

use std::ffi::CStr;

use super::abi::Wire;

/// The guest sent a request body shorter than its opcode needs, or a name
/// that is not a proper C string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Reads wire structs, names and payloads from a request body in order.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not consumed yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Decodes the next fixed-size struct.
    pub fn read<T: Wire>(&mut self) -> Result<T, Malformed> {
        let b = self.bytes(T::SIZE)?;
        Ok(T::decode(b))
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// Takes everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Takes a NUL-terminated string (the NUL is consumed, not returned).
    pub fn cstr(&mut self) -> Result<&'a CStr, Malformed> {
        let nul = self.buf.iter().position(|&b| b == 0).ok_or(Malformed)?;
        let (s, rest) = self.buf.split_at(nul + 1);
        self.buf = rest;
        CStr::from_bytes_with_nul(s).map_err(|_| Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::abi::{ForgetIn, MkdirIn};

    #[test]
    fn short_struct_is_malformed() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.read::<ForgetIn>(), Err(Malformed));
    }

    #[test]
    fn struct_then_name() {
        let mut b = [0o755u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        b.extend_from_slice(b"dir\0junk");
        let mut r = Reader::new(&b);
        assert_eq!(r.read::<MkdirIn>().unwrap().mode, 0o755);
        assert_eq!(r.cstr().unwrap().to_bytes(), b"dir");
        assert_eq!(r.rest(), b"junk");
    }

    #[test]
    fn unterminated_name_is_malformed() {
        let mut r = Reader::new(b"abc");
        assert_eq!(r.cstr(), Err(Malformed));
        assert_eq!(r.remaining(), 3);
    }
}
