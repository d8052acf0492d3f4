//! The checked pass: a shadow bitmap that verifies every result a peer gives.

use super::*;

/// One bit per page: set = handed out.
pub(crate) struct Shadow {
    pub(crate) bits: Vec<u64>,
    pub(crate) npages: usize,
}

impl Shadow {
    pub(crate) fn new(npages: usize) -> Shadow {
        Shadow {
            bits: vec![0; npages.div_ceil(64)],
            npages,
        }
    }

    /// Calls `f(word index, mask)` for the words of `[i, i + n)`.
    pub(crate) fn words(i: usize, n: usize, mut f: impl FnMut(usize, u64) -> bool) -> bool {
        let (mut i, end) = (i, i + n);
        while i < end {
            let b = i % 64;
            let k = (64 - b).min(end - i);
            let mask = if k == 64 { !0 } else { ((1u64 << k) - 1) << b };
            if !f(i / 64, mask) {
                return false;
            }
            i += k;
        }
        true
    }

    pub(crate) fn take(
        &mut self,
        addr: u64,
        npages: usize,
        align_pages: usize,
    ) -> Result<(), String> {
        if !addr.is_multiple_of(PAGE) {
            return Err(format!(
                "alloc of {npages} pages returned unaligned address {addr:#x}"
            ));
        }
        let i = (addr / PAGE) as usize;
        if i + npages > self.npages {
            return Err(format!(
                "alloc of {npages} pages at {addr:#x} runs past the memory"
            ));
        }
        if !i.is_multiple_of(align_pages) {
            return Err(format!(
                "alloc of {npages} pages at {addr:#x} is not {align_pages}-page aligned"
            ));
        }
        let bits = &self.bits;
        if !Shadow::words(i, npages, |w, m| bits[w] & m == 0) {
            return Err(format!(
                "alloc of {npages} pages at {addr:#x} overlaps a live allocation"
            ));
        }
        let bits = &mut self.bits;
        Shadow::words(i, npages, |w, m| {
            bits[w] |= m;
            true
        });
        Ok(())
    }

    pub(crate) fn give(&mut self, addr: u64, npages: usize) -> Result<(), String> {
        let i = (addr / PAGE) as usize;
        let bits = &self.bits;
        if i + npages > self.npages || !Shadow::words(i, npages, |w, m| bits[w] & m == m) {
            return Err(format!(
                "bench bug: free of {npages} pages at {addr:#x} that are not live"
            ));
        }
        let bits = &mut self.bits;
        Shadow::words(i, npages, |w, m| {
            bits[w] &= !m;
            true
        });
        Ok(())
    }
}

/// A peer whose every result is checked against a shadow bitmap.
pub(crate) struct Checked<'a, P: Peer> {
    pub(crate) p: &'a mut P,
    pub(crate) shadow: &'a mut Shadow,
    pub(crate) err: &'a mut Option<String>,
}

impl<P: Peer> Checked<'_, P> {
    pub(crate) fn fail(&mut self, e: String) {
        if self.err.is_none() {
            *self.err = Some(e);
        }
    }

    pub(crate) fn took(
        &mut self,
        r: Option<u64>,
        npages: usize,
        align_pages: usize,
    ) -> Option<u64> {
        if let Some(a) = r {
            let n = self.p.consumed_pages(npages);
            if let Err(e) = self.shadow.take(a, n, align_pages.max(1)) {
                self.fail(e);
            }
        }
        r
    }
}

impl<P: Peer> Peer for Checked<'_, P> {
    fn alloc(&mut self, npages: usize) -> Option<u64> {
        let r = self.p.alloc(npages);
        self.took(r, npages, 1)
    }

    fn alloc_aligned(&mut self, npages: usize, align_pages: usize) -> Option<u64> {
        let r = self.p.alloc_aligned(npages, align_pages);
        self.took(r, npages, align_pages)
    }

    fn free(&mut self, addr: u64, npages: usize) -> bool {
        let n = self.p.consumed_pages(npages);
        if let Err(e) = self.shadow.give(addr, n) {
            self.fail(e);
            return false;
        }
        let ok = self.p.free(addr, npages);
        if !ok {
            self.fail(format!("free of {npages} pages at {addr:#x} refused"));
        }
        ok
    }

    fn flush(&mut self) {
        self.p.flush();
    }

    fn consumed_pages(&self, npages: usize) -> usize {
        self.p.consumed_pages(npages)
    }

    fn capacity_pages(&self) -> usize {
        self.p.capacity_pages()
    }
}

// ---------------------------------------------------------------------------------------
// Timing.
