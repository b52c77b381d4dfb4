//! The control queue: parse one command chain, answer `VIRTIO_NET_OK` or
//! `VIRTIO_NET_ERR`. Only `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET` changes
//! anything; every other class is refused because its feature is not
//! offered.

use std::io::{Read, Write};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, VIRTIO_NET_ERR, VIRTIO_NET_F_MQ,
    VIRTIO_NET_OK,
};
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use crate::hdr::Features;

/// Longest command we read; anything longer is refused (the MQ command is
/// 4 bytes, the largest standard one, a MAC table, is not offered).
pub const MAX_COMMAND: usize = 1024;

/// What a control chain asks for, after every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Use the first `n` queue pairs.
    SetQueuePairs(u16),
    /// Anything we answer with `VIRTIO_NET_ERR`.
    Refused(Refusal),
}

/// Why a command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Guest sent fewer than the two class/command bytes.
    #[error("guest sent a control command shorter than 2 bytes")]
    Short,
    /// Guest sent a command longer than [`MAX_COMMAND`].
    #[error("guest sent a control command of {0} bytes")]
    TooLong(usize),
    /// Guest sent a class/command we do not support.
    #[error("guest sent unsupported control command class {0} cmd {1}")]
    Unsupported(u8, u8),
    /// Guest asked for a queue pair count outside 1..=max, or a malformed MQ payload.
    #[error("guest asked for a bad number of queue pairs")]
    BadPairs,
}

/// Outcome of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; `used_len` bytes written (the ack byte).
    Answered {
        /// the parsed command
        cmd: Command,
        /// bytes written into the chain
        used_len: u32,
    },
    /// No place for the status byte, or buffers outside guest memory:
    /// returned with used length 0, nothing written.
    Malformed,
}

/// Parses and answers one control chain. The caller applies
/// [`Command::SetQueuePairs`] and puts the chain on the used ring.
pub fn handle(
    chain: DescriptorChain<&GuestMemoryMmap<()>>,
    mem: &GuestMemoryMmap<()>,
    f: &Features,
    max_pairs: u16,
) -> Outcome {
    let Ok(mut r) = Reader::new(mem, chain.clone()) else {
        return Outcome::Malformed;
    };
    let Ok(mut w) = Writer::new(mem, chain) else {
        return Outcome::Malformed;
    };
    if w.available_bytes() < 1 {
        return Outcome::Malformed;
    }
    let cmd = parse(&mut r, f, max_pairs);
    let ack = match cmd {
        Command::SetQueuePairs(_) => VIRTIO_NET_OK as u8,
        Command::Refused(_) => VIRTIO_NET_ERR as u8,
    };
    if w.write_all(&[ack]).is_err() {
        return Outcome::Malformed;
    }
    Outcome::Answered { cmd, used_len: 1 }
}

fn parse<R: Read>(r: &mut R, f: &Features, max_pairs: u16) -> Command {
    let mut buf = [0u8; MAX_COMMAND + 1];
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    decode(&buf[..n], f, max_pairs)
}

/// Decodes the device-readable bytes of a command.
pub fn decode(b: &[u8], f: &Features, max_pairs: u16) -> Command {
    if b.len() < 2 {
        return Command::Refused(Refusal::Short);
    }
    if b.len() > MAX_COMMAND {
        return Command::Refused(Refusal::TooLong(b.len()));
    }
    let (class, cmd, data) = (b[0], b[1], &b[2..]);
    if u32::from(class) == VIRTIO_NET_CTRL_MQ
        && u32::from(cmd) == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
        && f.has(VIRTIO_NET_F_MQ)
    {
        if data.len() != 2 {
            return Command::Refused(Refusal::BadPairs);
        }
        let n = u16::from_le_bytes([data[0], data[1]]);
        if n == 0 || n > max_pairs {
            return Command::Refused(Refusal::BadPairs);
        }
        return Command::SetQueuePairs(n);
    }
    Command::Refused(Refusal::Unsupported(class, cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq() -> Features {
        Features {
            acked: 1 << VIRTIO_NET_F_MQ,
            mtu: 1500,
        }
    }

    #[test]
    fn mq_pairs_set_within_range() {
        assert_eq!(decode(&[4, 0, 2, 0], &mq(), 2), Command::SetQueuePairs(2));
        assert_eq!(decode(&[4, 0, 1, 0], &mq(), 2), Command::SetQueuePairs(1));
        assert_eq!(
            decode(&[4, 0, 3, 0], &mq(), 2),
            Command::Refused(Refusal::BadPairs)
        );
        assert_eq!(
            decode(&[4, 0, 0, 0], &mq(), 2),
            Command::Refused(Refusal::BadPairs)
        );
        assert_eq!(
            decode(&[4, 0, 1], &mq(), 2),
            Command::Refused(Refusal::BadPairs)
        );
        assert_eq!(
            decode(&[4, 0, 1, 0, 0], &mq(), 2),
            Command::Refused(Refusal::BadPairs)
        );
    }

    #[test]
    fn refuses_unknown_short_long_and_unnegotiated() {
        let f = mq();
        assert_eq!(decode(&[4], &f, 2), Command::Refused(Refusal::Short));
        assert_eq!(
            decode(&[0, 0, 1], &f, 2),
            Command::Refused(Refusal::Unsupported(0, 0))
        );
        assert_eq!(
            decode(&[200, 9], &f, 2),
            Command::Refused(Refusal::Unsupported(200, 9))
        );
        let big = vec![4u8; MAX_COMMAND + 1];
        assert_eq!(
            decode(&big, &f, 2),
            Command::Refused(Refusal::TooLong(MAX_COMMAND + 1))
        );
        let none = Features {
            acked: 0,
            mtu: 1500,
        };
        assert_eq!(
            decode(&[4, 0, 1, 0], &none, 2),
            Command::Refused(Refusal::Unsupported(4, 0))
        );
    }
}
