//! Page poisoning: freed frames are filled with a pattern, and an allocation checks the
//! pattern before handing the frames out, so a write through a stale pointer into a
//! freed frame is caught at the next allocation of that frame (Linux's `page_poison`,
//! xv6's `kfree` junk fill).
//!
//! On in debug builds and with the kernel's `poison` feature. A poisoned frame starts and
//! ends with a marker word (a magic value mixed with the frame's address); every other
//! word holds the pattern. A frame without either marker was never poisoned (memory
//! fresh from boot, or freed as known zero) and is not checked, so a write that lands
//! exactly on both markers goes unnoticed: the price of not filling all memory at boot.

use x86_64::PhysAddr;

use super::{FRAME_SIZE, phys_to_virt};

/// Whether frames are poisoned in this build.
pub const ENABLED: bool = cfg!(any(debug_assertions, feature = "poison"));

/// The fill of a freed frame.
pub const PATTERN: u64 = 0x6b6b_6b6b_6b6b_6b6b;
const MAGIC: u64 = 0xdead_f4ee_0000_0000;
const WORDS: usize = FRAME_SIZE as usize / 8;

fn marker(frame: u64) -> u64 {
    MAGIC ^ (frame >> 12)
}

fn words(frame: u64) -> &'static mut [u64; WORDS] {
    let ptr = phys_to_virt(PhysAddr::new(frame)).as_mut_ptr::<[u64; WORDS]>();
    // SAFETY: callers pass frames the caller owns alone for the duration of the call
    // (freed into its own batch, or being freed or handed out by it); all RAM is mapped
    // at the offset, 4 KiB aligned.
    unsafe { &mut *ptr }
}

/// Fills `npages` frames at `base` with the poison.
pub(super) fn fill(base: u64, npages: usize) {
    if !ENABLED {
        return;
    }
    for i in 0..npages as u64 {
        let frame = base + i * FRAME_SIZE;
        let w = words(frame);
        w.fill(PATTERN);
        w[0] = marker(frame);
        w[WORDS - 1] = marker(frame);
    }
}

/// A write after free found by [`check`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct WriteAfterFree {
    /// The frame written to.
    pub frame: u64,
    /// Byte offset of the first changed word in it.
    pub offset: usize,
    /// What that word holds.
    pub found: u64,
}

impl core::fmt::Display for WriteAfterFree {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "write after free: frame {:#x} byte {:#x} holds {:#018x}, the poison is {PATTERN:#018x}",
            self.frame, self.offset, self.found
        )
    }
}

/// Checks that every poisoned frame of `npages` at `base` still holds the poison, and
/// clears the markers so the frames read as never poisoned while they are in use.
pub(super) fn check(base: u64, npages: usize) -> Result<(), WriteAfterFree> {
    if !ENABLED {
        return Ok(());
    }
    for i in 0..npages as u64 {
        let frame = base + i * FRAME_SIZE;
        let w = words(frame);
        let m = marker(frame);
        if w[0] != m && w[WORDS - 1] != m {
            continue;
        }
        let body = &w[1..WORDS - 1];
        if let Some(k) = body.iter().position(|&x| x != PATTERN) {
            return Err(WriteAfterFree {
                frame,
                offset: (k + 1) * 8,
                found: body[k],
            });
        }
        let (first, last) = (w[0], w[WORDS - 1]);
        for (word, offset) in [(first, 0), (last, (WORDS - 1) * 8)] {
            if word != m {
                return Err(WriteAfterFree {
                    frame,
                    offset,
                    found: word,
                });
            }
        }
        w[0] = 0;
        w[WORDS - 1] = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm;

    #[test_case]
    fn check_finds_the_first_changed_word_and_accepts_a_clean_frame() {
        let (frame, _) = mm::alloc_frame().unwrap().into_raw();
        let base = frame.start_address().as_u64();
        fill(base, 1);
        if ENABLED {
            assert_eq!(check(base, 1), Ok(()));
            fill(base, 1);
            words(base)[7] = 42;
            assert_eq!(
                check(base, 1),
                Err(WriteAfterFree {
                    frame: base,
                    offset: 56,
                    found: 42
                })
            );
            // A frame without markers was never poisoned: not checked.
            words(base).fill(0x77);
            assert_eq!(check(base, 1), Ok(()));
        } else {
            assert_eq!(check(base, 1), Ok(()));
        }
        // SAFETY: the frame came from `into_raw` above and nothing else uses it.
        drop(unsafe { mm::Frames::from_raw(frame, 1) });
    }
}
