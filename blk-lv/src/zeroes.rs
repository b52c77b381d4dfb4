//! How a WRITE_ZEROES becomes fallocate calls. Not every filesystem has
//! `FALLOC_FL_ZERO_RANGE` (tmpfs has not), so a request without UNMAP on
//! such a file falls back, like QEMU's file driver, to punching a hole
//! (which zeroes) and allocating the range again (the guest did not allow
//! unmapping). Each step is one io_uring operation under the same tag.

/// The fallocate step a write-zeroes request is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `ZERO_RANGE|KEEP_SIZE`.
    ZeroRange,
    /// `PUNCH_HOLE|KEEP_SIZE`.
    Punch,
    /// `KEEP_SIZE` (allocate what the punch freed).
    Allocate,
}

impl Step {
    /// The fallocate mode of this step.
    pub fn mode(self) -> i32 {
        match self {
            Step::ZeroRange => libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            Step::Punch => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            Step::Allocate => libc::FALLOC_FL_KEEP_SIZE,
        }
    }
}

/// One write-zeroes request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Byte offset.
    pub offset: u64,
    /// Byte count.
    pub len: u64,
    /// The guest allowed deallocation.
    pub unmap: bool,
    /// The backing store is a regular file (not a block device).
    pub file: bool,
    /// Current step.
    pub step: Step,
}

impl Plan {
    /// The first step. On a block device, PUNCH_HOLE means "write zeroes
    /// with unmap, no fallback" and fails on drives without it, while
    /// ZERO_RANGE always works (unmapping is only a permission). On a
    /// file, UNMAP punches; otherwise ZERO_RANGE, unless this worker
    /// already learnt that the filesystem lacks it.
    pub fn new(offset: u64, len: u64, unmap: bool, file: bool, no_zero_range: bool) -> Plan {
        let step = if file && (unmap || no_zero_range) {
            Step::Punch
        } else {
            Step::ZeroRange
        };
        Plan {
            offset,
            len,
            unmap,
            file,
            step,
        }
    }

    /// The step after the current one finished with `result` (a
    /// syscall-style result), or `None` if the request is done with it.
    pub fn next(&self, result: i32) -> Option<Step> {
        match self.step {
            Step::ZeroRange if self.file && result == -libc::EOPNOTSUPP => Some(Step::Punch),
            Step::Punch if result >= 0 && !self.unmap => Some(Step::Allocate),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTSUP: i32 = -libc::EOPNOTSUPP;

    #[test]
    fn files_without_zero_range_punch_then_allocate() {
        let mut p = Plan::new(0, 4096, false, true, false);
        assert_eq!(p.step, Step::ZeroRange);
        assert_eq!(p.next(0), None);
        assert_eq!(p.next(-libc::EIO), None);
        assert_eq!(p.next(NOTSUP), Some(Step::Punch));
        p.step = Step::Punch;
        assert_eq!(p.next(0), Some(Step::Allocate));
        assert_eq!(p.next(-libc::EIO), None);
        p.step = Step::Allocate;
        assert_eq!(p.next(0), None);
        assert_eq!(p.next(-libc::ENOSPC), None);
    }

    #[test]
    fn unmap_on_a_file_only_punches() {
        let p = Plan::new(0, 4096, true, true, false);
        assert_eq!(p.step, Step::Punch);
        assert_eq!(p.next(0), None);
    }

    #[test]
    fn learnt_lack_of_zero_range_skips_it() {
        let p = Plan::new(0, 4096, false, true, true);
        assert_eq!(p.step, Step::Punch);
        assert_eq!(p.next(0), Some(Step::Allocate));
    }

    #[test]
    fn block_devices_always_zero_range_without_fallback() {
        for unmap in [false, true] {
            let p = Plan::new(0, 4096, unmap, false, true);
            assert_eq!(p.step, Step::ZeroRange);
            assert_eq!(p.next(NOTSUP), None);
        }
    }

    #[test]
    fn modes() {
        assert_eq!(
            Step::Punch.mode(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        );
        assert_eq!(Step::Allocate.mode(), libc::FALLOC_FL_KEEP_SIZE);
    }
}
