//! Handed-out bits: one atomic bit per page, set while a caller owns the page.
//!
//! The bits live beside the chunk bitmaps, eight words per chunk slot of the pool, and are
//! found through the (atomic) chunk map, so a CPU can read and change them without the
//! allocator's lock. See [`crate::pagecache`] for the ownership states they encode.

use core::fmt;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::consts::{PAGE_SHIFT, PAGE_SIZE, PALLOC_CHUNK_PAGES, PALLOC_CHUNKS_L2_ENTRIES};
use crate::index::{ChunkIdx, chunk_page_index};
use crate::metadata::NO_BLOCK;
use crate::whole::is_whole_chunk;

/// Words of handed-out bits per chunk.
pub(crate) const WORDS_PER_CHUNK: usize = PALLOC_CHUNK_PAGES / 64;

/// A shared handle on one allocator's handed-out bits, usable without the allocator
/// (and so without its lock). Get it from [`PageAlloc::handed_out`](crate::PageAlloc::handed_out).
///
/// Two handles compare equal iff they belong to the same allocator.
#[derive(Clone, Copy)]
pub struct HandedOut<'m> {
    chunk_map: &'m [AtomicU64],
    bits: &'m [AtomicU64],
}

impl fmt::Debug for HandedOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandedOut({:#x})", self.id())
    }
}

impl<'b> PartialEq<HandedOut<'b>> for HandedOut<'_> {
    fn eq(&self, other: &HandedOut<'b>) -> bool {
        core::ptr::eq(self.chunk_map, other.chunk_map) && core::ptr::eq(self.bits, other.bits)
    }
}

impl Eq for HandedOut<'_> {}

/// Takes back the page at `base`, whose bit is in `w`, with one `fetch_and`; false if
/// the bit was clear. Clearing a clear bit changes nothing, so there is nothing to undo.
#[inline]
pub(crate) fn take_one(w: &AtomicU64, base: u64) -> bool {
    let bit = 1u64 << (chunk_page_index(base) % 64);
    w.fetch_and(!bit, Ordering::AcqRel) & bit != 0
}

/// A whole chunk being handed out had bits set (`old`): its state is corrupt.
#[cold]
#[inline(never)]
fn chunk_set_failed(base: u64, old: [u64; WORDS_PER_CHUNK]) -> ! {
    let (j, w) = old
        .iter()
        .enumerate()
        .find(|(_, w)| **w != 0)
        .expect("a set bit");
    let page = base + (((j * 64) as u64 + u64::from(w.trailing_zeros())) << PAGE_SHIFT);
    panic!("pagealloc: page {page:#x} handed out twice (2 MiB chunk {base:#x})");
}

/// The address of bit `bit` of the word that holds `addr`.
fn bit_addr(addr: u64, bit: u32) -> u64 {
    (addr & !((64 * PAGE_SIZE) - 1)) + (u64::from(bit) << PAGE_SHIFT)
}

impl<'m> HandedOut<'m> {
    pub(crate) fn new(chunk_map: &'m [AtomicU64], bits: &'m [AtomicU64]) -> HandedOut<'m> {
        HandedOut { chunk_map, bits }
    }

    /// A number that identifies the allocator (the address of its chunk map), for error
    /// messages.
    pub fn id(&self) -> usize {
        self.chunk_map.as_ptr() as usize
    }

    /// The pool slot of chunk `ci`'s bitmaps (and bits), if a grow touched its block.
    #[inline]
    fn slot(&self, ci: ChunkIdx) -> Option<usize> {
        let slot = self.chunk_map.get(ci.map_block())?.load(Ordering::Acquire);
        (slot != NO_BLOCK).then(|| slot as usize * PALLOC_CHUNKS_L2_ENTRIES + ci.slot_in_block())
    }

    /// The word of bits of page `i` of the chunk in pool slot `k` (the bits share the
    /// slots of the chunk bitmaps: a caller that has the slot needs no second lookup).
    #[inline]
    pub(crate) fn slot_word(&self, k: usize, i: usize) -> &'m AtomicU64 {
        &self.bits[k * WORDS_PER_CHUNK + i / 64]
    }

    /// The word of bits that holds page `addr`, if its chunk has a bitmap slot.
    #[inline]
    pub(crate) fn word(&self, addr: u64) -> Option<&'m AtomicU64> {
        let k = self.slot(ChunkIdx::of(addr))?;
        Some(self.slot_word(k, chunk_page_index(addr)))
    }

    /// The first word of chunk `ci`'s bits, if the chunk has a bitmap slot.
    #[inline]
    fn chunk_first_word(&self, ci: ChunkIdx) -> Option<usize> {
        self.slot(ci).map(|k| k * WORDS_PER_CHUNK)
    }

    /// Calls `f(address of the piece's first page, mask in its word, the word)` for each
    /// piece of the range that falls in one word of bits, in address order (no word
    /// where the chunk has no bits), looking each chunk up once; stops at the first
    /// `Break(page)` and returns that page.
    #[inline]
    fn for_each_word(
        &self,
        base: u64,
        npages: usize,
        mut f: impl FnMut(u64, u64, Option<&'m AtomicU64>) -> ControlFlow<u64>,
    ) -> Option<u64> {
        if npages == 0 {
            return None;
        }
        let (first, last) = (base >> PAGE_SHIFT, (base >> PAGE_SHIFT) + npages as u64 - 1);
        // Masks of the first and the last word: the range starts and ends inside them.
        let head = !0u64 << (first % 64);
        let tail = !0u64 >> (63 - last % 64);
        let (w0, w1) = (first / 64, last / 64);
        let words_per_chunk = WORDS_PER_CHUNK as u64;
        for c in w0 / words_per_chunk..=w1 / words_per_chunk {
            let words = self
                .chunk_first_word(ChunkIdx(c as usize))
                .and_then(|f| self.bits.get(f..f + WORDS_PER_CHUNK));
            let lo = w0.max(c * words_per_chunk);
            let hi = w1.min(c * words_per_chunk + words_per_chunk - 1);
            for w in lo..=hi {
                let mut mask = !0;
                if w == w0 {
                    mask &= head;
                }
                if w == w1 {
                    mask &= tail;
                }
                let word = words.map(|ws| &ws[(w % words_per_chunk) as usize]);
                let addr = (w * 64 + u64::from(mask.trailing_zeros())) << PAGE_SHIFT;
                if let ControlFlow::Break(page) = f(addr, mask, word) {
                    return Some(page);
                }
            }
        }
        None
    }

    /// The word `w` of chunk `ci`'s bits, if the chunk has a bitmap slot.
    pub(crate) fn chunk_word(&self, ci: ChunkIdx, w: usize) -> Option<u64> {
        self.word(ci.base() + ((w as u64 * 64) << PAGE_SHIFT))
            .map(|x| x.load(Ordering::Acquire))
    }

    /// Whether the page that holds `addr` is handed out to a caller: allocated, and held
    /// by no page cache or free batch. Lock-free.
    pub fn is_handed_out(&self, addr: u64) -> bool {
        self.word(addr)
            .is_some_and(|w| w.load(Ordering::Acquire) >> (chunk_page_index(addr) % 64) & 1 != 0)
    }

    /// Whether the chunk that holds `addr` has bits (some grow touched its block).
    pub(crate) fn covers(&self, addr: u64) -> bool {
        self.word(addr).is_some()
    }

    /// The first page of the range that is not handed out, without changing anything.
    pub(crate) fn first_not_handed_out(&self, base: u64, npages: usize) -> Option<u64> {
        self.for_each_word(base, npages, |addr, mask, w| {
            let Some(w) = w else {
                return ControlFlow::Break(addr);
            };
            let clear = !w.load(Ordering::Acquire) & mask;
            if clear != 0 {
                return ControlFlow::Break(bit_addr(addr, clear.trailing_zeros()));
            }
            ControlFlow::Continue(())
        })
    }

    /// Hands pages out: sets their bits.
    ///
    /// # Panics
    /// If a bit was already set or the range has no bits: the page would be handed out
    /// twice, so the allocator's state is corrupt.
    #[inline]
    pub(crate) fn set(&self, base: u64, npages: usize) {
        if npages == 1 {
            // The per-CPU paths hand out single pages: one lookup, one `fetch_or`.
            match self.word(base) {
                Some(w) => self.set_one(w, base),
                None => self.set_failed(base, npages),
            }
            return;
        }
        if is_whole_chunk(base, npages) {
            match self.slot(ChunkIdx::of(base)) {
                Some(k) => self.set_chunk(k, base),
                None => self.set_failed(base, npages),
            }
            return;
        }
        self.set_slow(base, npages);
    }

    /// Hands out the page at `base`, whose bit is in `w`: one `fetch_or`.
    ///
    /// # Panics
    /// If the bit was already set, as [`HandedOut::set`].
    #[inline]
    pub(crate) fn set_one(&self, w: &AtomicU64, base: u64) {
        let bit = 1u64 << (chunk_page_index(base) % 64);
        if w.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            self.set_failed(base, 1);
        }
    }

    #[cold]
    #[inline(never)]
    fn set_failed(&self, base: u64, npages: usize) -> ! {
        panic!(
            "pagealloc: page {base:#x} handed out twice (or it has no handed-out bits; {npages} page(s))"
        );
    }

    fn set_slow(&self, base: u64, npages: usize) {
        self.for_each_word(base, npages, |addr, mask, w| {
            let Some(w) = w else {
                panic!("pagealloc: no handed-out bits for page {addr:#x} being handed out");
            };
            // Pages being handed out belong to the caller (free in the tree under its
            // lock, or held by its page cache), so no other path sets their bits, and a
            // racing take of a clear bit changes nothing: for a whole word, a load and a
            // store do what a `fetch_or` would, without the locked instruction.
            let old = if mask == !0 {
                let old = w.load(Ordering::Acquire);
                if old == 0 {
                    w.store(!0, Ordering::Release);
                }
                old
            } else {
                w.fetch_or(mask, Ordering::AcqRel)
            };
            if old & mask != 0 {
                panic!(
                    "pagealloc: page {:#x} handed out twice (range [{base:#x}, +{npages} pages), bits {old:#018x}, mask {mask:#018x})",
                    bit_addr(addr, (old & mask).trailing_zeros())
                );
            }
            ControlFlow::Continue(())
        });
    }

    /// The eight words of bits of the chunk in pool slot `k`.
    #[inline]
    fn chunk_words(&self, k: usize) -> &'m [AtomicU64; WORDS_PER_CHUNK] {
        let first = k * WORDS_PER_CHUNK;
        self.bits[first..first + WORDS_PER_CHUNK]
            .try_into()
            .expect("eight words per slot")
    }

    /// Hands out every page of the chunk in pool slot `k`, whose first page is `base`:
    /// [`HandedOut::set`] for a whole chunk, without per-word masks (a 2 MiB allocation).
    ///
    /// # Panics
    /// If a bit was already set, as [`HandedOut::set`].
    pub(crate) fn set_chunk(&self, k: usize, base: u64) {
        let words = self.chunk_words(k);
        let old = words.each_ref().map(|w| w.load(Ordering::Acquire));
        if old.iter().fold(0, |a, w| a | w) != 0 {
            chunk_set_failed(base, old);
        }
        // As in `set_slow`: nobody else sets the bits of pages being handed out.
        for w in words {
            w.store(!0, Ordering::Release);
        }
    }

    /// Takes back every page of the chunk in pool slot `k`, whose first page is `base`:
    /// [`HandedOut::take`] for a whole chunk, for the 2 MiB free's fast path (`whole.rs`;
    /// when it refuses, the general path's `take` finds the same page). Looks first, then
    /// clears each word with one `swap`; a take that loses a race restores what it cleared.
    pub(crate) fn take_chunk(&self, k: usize, base: u64) -> Result<(), u64> {
        let words = self.chunk_words(k);
        let page_of = |j: usize, clear: u64| {
            base + (((j * 64) as u64 + u64::from(clear.trailing_zeros())) << PAGE_SHIFT)
        };
        for (j, w) in words.iter().enumerate() {
            let old = w.load(Ordering::Acquire);
            if old != !0 {
                return Err(page_of(j, !old));
            }
        }
        for (j, w) in words.iter().enumerate() {
            let old = w.swap(0, Ordering::AcqRel);
            if old != !0 {
                w.fetch_or(old, Ordering::AcqRel);
                for v in &words[..j] {
                    v.fetch_or(!0, Ordering::AcqRel);
                }
                return Err(page_of(j, !old));
            }
        }
        Ok(())
    }

    /// Takes pages back from their caller: clears every bit of the range, or, if some
    /// page's bit was already clear, restores exactly the bits this call cleared and
    /// returns that page. Of two racing takes of one page, exactly one wins.
    #[inline]
    pub(crate) fn take(&self, base: u64, npages: usize) -> Result<(), u64> {
        if npages == 1 {
            return match self.word(base) {
                Some(w) if take_one(w, base) => Ok(()),
                _ => Err(base),
            };
        }
        self.take_slow(base, npages)
    }

    fn take_slow(&self, base: u64, npages: usize) -> Result<(), u64> {
        // Look first, so that a refused take rarely clears bits at all: a bit it clears
        // and restores briefly refuses other takes of the same page.
        if let Some(page) = self.first_not_handed_out(base, npages) {
            return Err(page);
        }
        self.clear_all_or_restore(base, npages)
    }

    /// Clears every bit of the range, or restores exactly those it cleared and returns
    /// the first page whose bit was clear.
    fn clear_all_or_restore(&self, base: u64, npages: usize) -> Result<(), u64> {
        let mut taken = 0;
        let refused = self.for_each_word(base, npages, |addr, mask, w| {
            let Some(w) = w else {
                return ControlFlow::Break(addr);
            };
            // For a whole word `swap` is one `xchg`; a `fetch_and` whose result is used
            // is a compare-and-swap loop.
            let old = if mask == !0 {
                w.swap(0, Ordering::AcqRel)
            } else {
                w.fetch_and(!mask, Ordering::AcqRel)
            };
            if old & mask != mask {
                if old & mask != 0 {
                    w.fetch_or(old & mask, Ordering::AcqRel);
                }
                return ControlFlow::Break(bit_addr(addr, (!old & mask).trailing_zeros()));
            }
            // Without a `popcnt` target feature `count_ones` is a long sequence.
            taken += if mask == !0 {
                64
            } else {
                mask.count_ones() as usize
            };
            ControlFlow::Continue(())
        });
        let Some(page) = refused else {
            return Ok(());
        };
        self.for_each_word(base, taken, |_, mask, w| {
            if let Some(w) = w {
                w.fetch_or(mask, Ordering::AcqRel);
            }
            ControlFlow::Continue(())
        });
        Err(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::PALLOC_CHUNK_BYTES;

    #[test]
    fn the_handle_is_copy_send_and_sync() {
        fn check<T: Copy + Send + Sync>() {}
        check::<HandedOut<'static>>();
    }

    #[test]
    fn pieces_split_at_words() {
        let map = [AtomicU64::new(0)];
        let bits: alloc::vec::Vec<AtomicU64> = (0..PALLOC_CHUNKS_L2_ENTRIES * WORDS_PER_CHUNK)
            .map(|_| AtomicU64::new(0))
            .collect();
        let h = HandedOut::new(&map, &bits);
        let pieces = |base: u64, npages: usize| {
            let mut v = alloc::vec::Vec::new();
            h.for_each_word(base, npages, |addr, mask, w| {
                assert!(w.is_some());
                v.push((addr, mask));
                ControlFlow::Continue(())
            });
            v
        };
        assert_eq!(
            pieces(PAGE_SIZE * 60, 70),
            [
                (PAGE_SIZE * 60, 0xf << 60),
                (PAGE_SIZE * 64, !0),
                (PAGE_SIZE * 128, 0x3),
            ]
        );
        assert!(pieces(0, 0).is_empty());
        assert_eq!(
            pieces(PALLOC_CHUNK_BYTES - PAGE_SIZE, 2),
            [
                (PALLOC_CHUNK_BYTES - PAGE_SIZE, 1 << 63),
                (PALLOC_CHUNK_BYTES, 1)
            ]
        );
        assert_eq!(pieces(PAGE_SIZE * 5, 1), [(PAGE_SIZE * 5, 1 << 5)]);
    }

    #[test]
    fn take_restores_what_it_cleared() {
        let map = [AtomicU64::new(0)];
        let bits: alloc::vec::Vec<AtomicU64> = (0..PALLOC_CHUNKS_L2_ENTRIES * WORDS_PER_CHUNK)
            .map(|_| AtomicU64::new(0))
            .collect();
        let h = HandedOut::new(&map, &bits);
        h.set(PAGE_SIZE * 3, 130);
        assert!(h.is_handed_out(PAGE_SIZE * 3) && !h.is_handed_out(PAGE_SIZE * 2));
        // Page 140 is not handed out: nothing changes.
        assert_eq!(h.take(PAGE_SIZE * 100, 41), Err(PAGE_SIZE * 133));
        assert_eq!(h.take(PAGE_SIZE * 2, 10), Err(PAGE_SIZE * 2));
        assert_eq!(h.first_not_handed_out(PAGE_SIZE * 3, 130), None);
        // What a take that loses a race does: clears, meets a clear bit, restores.
        let snapshot = |bits: &[AtomicU64]| -> alloc::vec::Vec<u64> {
            bits.iter().map(|w| w.load(Ordering::Relaxed)).collect()
        };
        let before = snapshot(&bits);
        assert_eq!(
            h.clear_all_or_restore(PAGE_SIZE * 60, 80),
            Err(PAGE_SIZE * 133)
        );
        assert_eq!(h.clear_all_or_restore(PAGE_SIZE, 8), Err(PAGE_SIZE));
        assert_eq!(snapshot(&bits), before, "every cleared bit restored");
        assert_eq!(h.take(PAGE_SIZE * 3, 130), Ok(()));
        assert_eq!(h.take(PAGE_SIZE * 3, 1), Err(PAGE_SIZE * 3));
        assert!(bits.iter().all(|w| w.load(Ordering::Relaxed) == 0));
        // No slot: never handed out.
        let none = [AtomicU64::new(NO_BLOCK)];
        let h2 = HandedOut::new(&none, &bits);
        assert!(!h2.is_handed_out(0));
        assert_eq!(h2.take(0, 1), Err(0));
        assert_ne!(h, h2);
        assert_eq!(h, h);
    }

    #[test]
    #[should_panic(expected = "pagealloc: page 0x7000 handed out twice")]
    fn setting_a_set_single_bit_panics() {
        let map = [AtomicU64::new(0)];
        let bits: alloc::vec::Vec<AtomicU64> = (0..PALLOC_CHUNKS_L2_ENTRIES * WORDS_PER_CHUNK)
            .map(|_| AtomicU64::new(0))
            .collect();
        let h = HandedOut::new(&map, &bits);
        h.set(PAGE_SIZE * 7, 1);
        h.set(PAGE_SIZE * 7, 1);
    }

    #[test]
    #[should_panic(expected = "pagealloc: page 0x5000 handed out twice")]
    fn setting_a_set_bit_panics() {
        let map = [AtomicU64::new(0)];
        let bits: alloc::vec::Vec<AtomicU64> = (0..PALLOC_CHUNKS_L2_ENTRIES * WORDS_PER_CHUNK)
            .map(|_| AtomicU64::new(0))
            .collect();
        let h = HandedOut::new(&map, &bits);
        h.set(PAGE_SIZE * 5, 1);
        h.set(PAGE_SIZE * 4, 3);
    }
}
