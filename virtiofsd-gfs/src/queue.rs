//! One descriptor chain → one FUSE request → one reply. The readable
//! descriptors are gathered (bounded by [`MAX_REQUEST`]), the reply is
//! scattered over the writable ones; every guest address goes through
//! `vm-memory`'s checked accessors, so a bad chain yields an error reply
//! (or used length 0), never an access outside guest memory.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::fs::FileSystem;
use crate::fuse::abi::{self, Wire};
use crate::fuse::server::MAX_REQUEST;
use crate::fuse::Server;

/// Why a chain could not be turned into a request (all guest-caused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Guest put a readable descriptor after a writable one.
    #[error("readable descriptor after a writable one")]
    Order,
    /// Guest sent a request larger than we accept.
    #[error("request larger than the maximum")]
    TooLarge,
    /// Guest gave an address outside its memory.
    #[error("descriptor outside guest memory")]
    BadAddress,
}

/// A chain's buffers, as (address, length, device-writable).
pub type Descs = Vec<(GuestAddress, u32, bool)>;

/// Gathers the readable part of a chain.
fn gather<M: GuestMemory>(mem: &M, descs: &Descs) -> Result<(Vec<u8>, usize), ChainError> {
    let mut req = Vec::new();
    let mut writable = 0usize;
    for &(addr, len, w) in descs {
        let len = len as usize;
        if w {
            writable = writable.saturating_add(len);
            continue;
        }
        if writable > 0 {
            return Err(ChainError::Order);
        }
        if req.len() + len > MAX_REQUEST {
            return Err(ChainError::TooLarge);
        }
        let at = req.len();
        req.resize(at + len, 0);
        mem.read_slice(&mut req[at..], addr)
            .map_err(|_| ChainError::BadAddress)?;
    }
    Ok((req, writable))
}

/// Writes `reply` over the writable descriptors; returns bytes written.
fn scatter<M: GuestMemory>(mem: &M, descs: &Descs, reply: &[u8]) -> Result<u32, ChainError> {
    let mut done = 0usize;
    for &(addr, len, w) in descs {
        if !w || done == reply.len() {
            continue;
        }
        let n = (len as usize).min(reply.len() - done);
        mem.write_slice(&reply[done..done + n], addr)
            .map_err(|_| ChainError::BadAddress)?;
        done += n;
    }
    Ok(done as u32)
}

fn error_reply(unique: u64, errno: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(abi::OutHeader::SIZE);
    abi::OutHeader {
        len: abi::OutHeader::SIZE as u32,
        error: -errno,
        unique,
    }
    .encode(&mut out);
    out
}

/// Serves one chain; returns the used length to report and, for a chain
/// the guest built wrongly, why (it still got an error reply if it left
/// room for one).
pub fn serve_chain<M: GuestMemory, F: FileSystem>(
    mem: &M,
    descs: &Descs,
    server: &Server<F>,
) -> (u32, Result<(), ChainError>) {
    let (req, writable) = match gather(mem, descs) {
        Ok(x) => x,
        Err(e) => {
            // Answer what we can so the guest request does not hang.
            let n = scatter(mem, descs, &error_reply(0, libc::EINVAL)).unwrap_or(0);
            return (n, Err(e));
        }
    };
    let Some(mut reply) = server.handle(&req) else {
        return (0, Ok(()));
    };
    if reply.len() > writable {
        // The guest did not leave room for the answer: say so; if even the
        // header does not fit, say nothing.
        let unique = abi::OutHeader::decode(&reply).unique;
        reply = error_reply(unique, libc::ERANGE);
        if reply.len() > writable {
            return (0, Ok(()));
        }
    }
    match scatter(mem, descs, &reply) {
        Ok(n) => (n, Ok(())),
        Err(e) => (0, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::passthrough::{Config, PassthroughFs};
    use crate::fuse::abi::opcode as op;
    use crate::fuse::client::{request, Reply};
    use crate::fuse::ServerConfig;
    use vm_memory::GuestMemoryMmap;

    fn setup() -> (
        tempfile::TempDir,
        GuestMemoryMmap<()>,
        Server<PassthroughFs>,
    ) {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"data").unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x10000)]).unwrap();
        let s = Server::new(
            PassthroughFs::new(Config::new(t.path())).unwrap(),
            ServerConfig::default(),
        );
        let mut init = Vec::new();
        abi::InitInHead {
            major: 7,
            minor: 37,
            max_readahead: 0,
            flags: 0,
        }
        .encode(&mut init);
        s.handle(&request(op::INIT, 0, 1, 0, 0, &init)).unwrap();
        (t, mem, s)
    }

    #[test]
    fn split_request_and_reply_across_descriptors() {
        let (_t, mem, s) = setup();
        let req = request(op::LOOKUP, 1, 42, 0, 0, b"f\0");
        // Header split over two descriptors, reply over three.
        mem.write_slice(&req[..10], GuestAddress(0x1000)).unwrap();
        mem.write_slice(&req[10..], GuestAddress(0x2000)).unwrap();
        let descs = vec![
            (GuestAddress(0x1000), 10, false),
            (GuestAddress(0x2000), (req.len() - 10) as u32, false),
            (GuestAddress(0x3000), 16, true),
            (GuestAddress(0x4000), 64, true),
            (GuestAddress(0x5000), 4096, true),
        ];
        let (n, ok) = serve_chain(&mem, &descs, &s);
        assert_eq!(ok, Ok(()));
        assert_eq!(n, 16 + 128);
        let mut out = vec![0u8; n as usize];
        mem.read_slice(&mut out[..16], GuestAddress(0x3000))
            .unwrap();
        mem.read_slice(&mut out[16..80], GuestAddress(0x4000))
            .unwrap();
        mem.read_slice(&mut out[80..], GuestAddress(0x5000))
            .unwrap();
        let r = Reply::parse(&out).unwrap();
        assert_eq!((r.error, r.unique), (0, 42));
    }

    #[test]
    fn hostile_chains() {
        let (_t, mem, s) = setup();
        let req = request(op::LOOKUP, 1, 42, 0, 0, b"f\0");
        mem.write_slice(&req, GuestAddress(0x1000)).unwrap();
        let r = (GuestAddress(0x1000), req.len() as u32, false);
        // Outside guest memory.
        let bad = vec![
            (GuestAddress(0xffff_0000), 64, false),
            (GuestAddress(0x3000), 64, true),
        ];
        assert_eq!(
            serve_chain(&mem, &bad, &s),
            (16, Err(ChainError::BadAddress))
        );
        let mut hdr = [0u8; 16];
        mem.read_slice(&mut hdr, GuestAddress(0x3000)).unwrap();
        assert_eq!(abi::OutHeader::decode(&hdr).error, -libc::EINVAL);
        // Crossing the end of guest memory.
        let cross = vec![(GuestAddress(0x10ff0), 64, false)];
        assert_eq!(
            serve_chain(&mem, &cross, &s),
            (0, Err(ChainError::BadAddress))
        );
        // Readable after writable.
        let order = vec![(GuestAddress(0x3000), 64, true), r];
        assert_eq!(serve_chain(&mem, &order, &s), (16, Err(ChainError::Order)));
        // Oversized.
        let big = vec![(GuestAddress(0x1000), u32::MAX, false)];
        assert_eq!(serve_chain(&mem, &big, &s), (0, Err(ChainError::TooLarge)));
        // Reply space too small for the entry: ERANGE header.
        let small = vec![r, (GuestAddress(0x3000), 20, true)];
        assert_eq!(serve_chain(&mem, &small, &s), (16, Ok(())));
        mem.read_slice(&mut hdr, GuestAddress(0x3000)).unwrap();
        assert_eq!(abi::OutHeader::decode(&hdr).error, -libc::ERANGE);
        // No room at all: used length 0. Writable outside memory: error.
        assert_eq!(serve_chain(&mem, &vec![r], &s), (0, Ok(())));
        let wbad = vec![r, (GuestAddress(0xffff_0000), 4096, true)];
        assert_eq!(
            serve_chain(&mem, &wbad, &s),
            (0, Err(ChainError::BadAddress))
        );
        // Nothing readable at all.
        assert_eq!(
            serve_chain(&mem, &vec![(GuestAddress(0x3000), 64, true)], &s),
            (16, Ok(()))
        );
    }
}
