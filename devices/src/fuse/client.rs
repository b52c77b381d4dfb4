//! A minimal FUSE client: encodes requests and decodes replies. The fs
//! daemon's tests use it in-process against its server and over virtqueues
//! through [`crate::driver::fs`]; the perf harness builds its load on it.

use super::abi::{self, opcode as op, Wire};

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `-errno` or 0.
    pub error: i32,
    /// Echo of the request's unique id.
    pub unique: u64,
    /// Bytes after the header.
    pub body: Vec<u8>,
}

impl Reply {
    /// Decodes a reply; `None` if it is shorter than a header or its
    /// length field disagrees with its size.
    pub fn parse(b: &[u8]) -> Option<Reply> {
        if b.len() < abi::OutHeader::SIZE {
            return None;
        }
        let h = abi::OutHeader::decode(b);
        if h.len as usize != b.len() {
            return None;
        }
        Some(Reply {
            error: h.error,
            unique: h.unique,
            body: b[abi::OutHeader::SIZE..].to_vec(),
        })
    }

    /// The body, or the positive errno.
    pub fn ok(self) -> Result<Vec<u8>, i32> {
        if self.error == 0 {
            Ok(self.body)
        } else {
            Err(-self.error)
        }
    }
}

/// A decoded entry reply (LOOKUP, MKDIR, ...).
#[derive(Debug, Clone, Copy)]
pub struct EntryOut {
    /// Node id.
    pub nodeid: u64,
    /// Attributes.
    pub attr: abi::Attr,
}

impl EntryOut {
    /// Decodes an entry reply body.
    pub fn parse(b: &[u8]) -> Result<EntryOut, i32> {
        if b.len() < 128 {
            return Err(libc::EPROTO);
        }
        let h = abi::EntryOutHead::decode(b);
        Ok(EntryOut {
            nodeid: h.nodeid,
            attr: abi::Attr::decode(&b[40..]),
        })
    }
}

/// Encodes one request (header + `body`).
pub fn request(opcode: u32, nodeid: u64, unique: u64, uid: u32, gid: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(abi::InHeader::SIZE + body.len());
    abi::InHeader {
        len: (abi::InHeader::SIZE + body.len()) as u32,
        opcode,
        unique,
        nodeid,
        uid,
        gid,
        pid: 1,
        total_extlen: 0,
        padding: 0,
    }
    .encode(&mut out);
    out.extend_from_slice(body);
    out
}

/// Concatenates a wire struct and NUL-terminated names.
pub fn body<T: Wire>(head: Option<T>, names: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(h) = head {
        h.encode(&mut out);
    }
    for n in names {
        out.extend_from_slice(n);
        out.push(0);
    }
    out
}

/// A FUSE session over any transport (`send` takes a request, returns the
/// reply bytes, or `None` when none was produced).
pub struct Client<T: FnMut(&[u8]) -> Option<Vec<u8>>> {
    send: T,
    unique: u64,
    /// Caller uid put in every request.
    pub uid: u32,
    /// Caller gid put in every request.
    pub gid: u32,
}

impl<T: FnMut(&[u8]) -> Option<Vec<u8>>> Client<T> {
    /// A client sending through `send`, as root.
    pub fn new(send: T) -> Self {
        Client {
            send,
            unique: 0,
            uid: 0,
            gid: 0,
        }
    }

    /// Sends a raw request body; returns the positive errno on failure.
    pub fn call(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> Result<Vec<u8>, i32> {
        self.unique += 2;
        let req = request(opcode, nodeid, self.unique, self.uid, self.gid, body);
        let rep = (self.send)(&req).ok_or(libc::EPROTO)?;
        let r = Reply::parse(&rep).ok_or(libc::EPROTO)?;
        if r.unique != self.unique {
            return Err(libc::EPROTO);
        }
        r.ok()
    }

    /// Sends a request that takes no reply.
    pub fn send_noreply(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> Option<Vec<u8>> {
        self.unique += 2;
        let req = request(opcode, nodeid, self.unique, self.uid, self.gid, body);
        (self.send)(&req)
    }

    /// INIT with protocol 7.`minor` and `flags`; returns the reply struct.
    pub fn init(&mut self, minor: u32, flags: u32) -> Result<abi::InitOut, i32> {
        let mut b = Vec::new();
        abi::InitInHead {
            major: 7,
            minor,
            max_readahead: 128 * 1024,
            flags: flags | abi::init::INIT_EXT as u32,
        }
        .encode(&mut b);
        b.resize(64, 0);
        let r = self.call(op::INIT, 0, &b)?;
        let mut full = r.clone();
        full.resize(abi::InitOut::SIZE, 0);
        Ok(abi::InitOut::decode(&full))
    }

    /// LOOKUP.
    pub fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<EntryOut, i32> {
        let r = self.call(op::LOOKUP, parent, &body::<abi::ForgetIn>(None, &[name]))?;
        EntryOut::parse(&r)
    }

    /// FORGET (no reply).
    pub fn forget(&mut self, nodeid: u64, n: u64) {
        self.send_noreply(
            op::FORGET,
            nodeid,
            &body(Some(abi::ForgetIn { nlookup: n }), &[]),
        );
    }

    /// GETATTR.
    pub fn getattr(&mut self, nodeid: u64) -> Result<abi::Attr, i32> {
        let r = self.call(
            op::GETATTR,
            nodeid,
            &body(Some(abi::GetattrIn::default()), &[]),
        )?;
        if r.len() < 104 {
            return Err(libc::EPROTO);
        }
        Ok(abi::Attr::decode(&r[16..]))
    }

    /// SETATTR.
    pub fn setattr(&mut self, nodeid: u64, a: abi::SetattrIn) -> Result<abi::Attr, i32> {
        let r = self.call(op::SETATTR, nodeid, &body(Some(a), &[]))?;
        if r.len() < 104 {
            return Err(libc::EPROTO);
        }
        Ok(abi::Attr::decode(&r[16..]))
    }

    /// MKDIR.
    pub fn mkdir(&mut self, parent: u64, name: &[u8], mode: u32) -> Result<EntryOut, i32> {
        let r = self.call(
            op::MKDIR,
            parent,
            &body(Some(abi::MkdirIn { mode, umask: 0 }), &[name]),
        )?;
        EntryOut::parse(&r)
    }

    /// CREATE; returns the entry and the file handle.
    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: u32,
    ) -> Result<(EntryOut, u64), i32> {
        let r = self.call(
            op::CREATE,
            parent,
            &body(
                Some(abi::CreateIn {
                    flags,
                    mode,
                    umask: 0,
                    open_flags: 0,
                }),
                &[name],
            ),
        )?;
        let e = EntryOut::parse(&r)?;
        let o = r.get(128..144).ok_or(libc::EPROTO)?;
        Ok((e, abi::OpenOut::decode(o).fh))
    }

    /// OPEN (or OPENDIR when `dir`); returns the handle and FOPEN flags.
    pub fn open(&mut self, nodeid: u64, flags: u32, dir: bool) -> Result<(u64, u32), i32> {
        let opc = if dir { op::OPENDIR } else { op::OPEN };
        let r = self.call(
            opc,
            nodeid,
            &body(
                Some(abi::OpenIn {
                    flags,
                    open_flags: 0,
                }),
                &[],
            ),
        )?;
        let o = r.get(..16).ok_or(libc::EPROTO)?;
        let o = abi::OpenOut::decode(o);
        Ok((o.fh, o.open_flags))
    }

    /// READ.
    pub fn read(&mut self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
        let a = abi::ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        self.call(op::READ, nodeid, &body(Some(a), &[]))
    }

    /// WRITE; returns the count written.
    pub fn write(&mut self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32, i32> {
        let mut b = body(
            Some(abi::WriteIn {
                fh,
                offset,
                size: data.len() as u32,
                ..Default::default()
            }),
            &[],
        );
        b.extend_from_slice(data);
        let r = self.call(op::WRITE, nodeid, &b)?;
        let w = r.get(..8).ok_or(libc::EPROTO)?;
        Ok(abi::WriteOut::decode(w).size)
    }

    /// RELEASE (or RELEASEDIR when `dir`).
    pub fn release(&mut self, nodeid: u64, fh: u64, dir: bool) -> Result<(), i32> {
        let opc = if dir { op::RELEASEDIR } else { op::RELEASE };
        self.call(
            opc,
            nodeid,
            &body(
                Some(abi::ReleaseIn {
                    fh,
                    ..Default::default()
                }),
                &[],
            ),
        )
        .map(drop)
    }

    /// READDIR or READDIRPLUS; returns (name, offset, nodeid) per entry
    /// (nodeid 0 for plain READDIR).
    pub fn readdir(
        &mut self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
        plus: bool,
    ) -> Result<Vec<(Vec<u8>, u64, u64)>, i32> {
        let opc = if plus { op::READDIRPLUS } else { op::READDIR };
        let a = abi::ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        let r = self.call(opc, nodeid, &body(Some(a), &[]))?;
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let mut node = 0;
            if plus {
                let Some(e) = r.get(at..at + 128) else { break };
                node = abi::EntryOutHead::decode(e).nodeid;
                at += 128;
            }
            let Some(d) = r.get(at..at + abi::DirentHead::SIZE) else {
                break;
            };
            let d = abi::DirentHead::decode(d);
            let start = at + abi::DirentHead::SIZE;
            let name = r
                .get(start..start + d.namelen as usize)
                .ok_or(libc::EPROTO)?;
            out.push((name.to_vec(), d.off, node));
            at += (abi::DirentHead::SIZE + d.namelen as usize + 7) & !7;
        }
        Ok(out)
    }
}
