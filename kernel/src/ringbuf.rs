//! A byte queue for one producer and one consumer that needs no lock: an interrupt
//! handler pushes, ordinary code pops.
//!
//! A lock would not do here: if the consumer held it when the interrupt arrived, the
//! handler would spin forever on the only CPU. Instead each side owns one counter. The
//! producer writes a slot and then publishes it by advancing `head`; the consumer reads
//! the slot and then releases it by advancing `tail`. The counters run freely (wrapping)
//! and a slot's index is the counter modulo the capacity, a power of two.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// A lock-free single-producer, single-consumer queue of up to `N` bytes.
pub struct ByteRing<const N: usize> {
    slots: [AtomicU8; N],
    /// Bytes pushed so far (wrapping). Only the producer stores to it.
    head: AtomicUsize,
    /// Bytes popped so far (wrapping). Only the consumer stores to it.
    tail: AtomicUsize,
}

impl<const N: usize> ByteRing<N> {
    /// An empty queue. `N` must be a power of two, so that slot indices stay right when
    /// the counters wrap around.
    pub const fn new() -> Self {
        assert!(
            N.is_power_of_two(),
            "ByteRing capacity must be a power of two"
        );
        ByteRing {
            slots: [const { AtomicU8::new(0) }; N],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Appends `byte`; returns `false` (and drops the byte) when the queue is full.
    /// Call from the producer only.
    pub fn push(&self, byte: u8) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: the consumer's read of the slot we may reuse happened before.
        let tail = self.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) == N {
            return false;
        }
        self.slots[head % N].store(byte, Ordering::Relaxed);
        // Release: the slot's contents are visible before the consumer sees the new head.
        self.head.store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes the oldest byte. Call from the consumer only.
    pub fn pop(&self) -> Option<u8> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let byte = self.slots[tail % N].load(Ordering::Relaxed);
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Some(byte)
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.head
            .load(Ordering::Acquire)
            .wrapping_sub(self.tail.load(Ordering::Acquire))
    }

    /// Whether no byte is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRing;

    #[test_case]
    fn bytes_come_out_in_order() {
        let q = ByteRing::<8>::new();
        assert_eq!(q.pop(), None);
        for b in b"hello" {
            assert!(q.push(*b));
        }
        assert_eq!(q.len(), 5);
        let mut out = [0u8; 5];
        for slot in &mut out {
            *slot = q.pop().unwrap();
        }
        assert_eq!(&out, b"hello");
        assert!(q.is_empty());
    }

    #[test_case]
    fn a_full_queue_refuses_and_keeps_what_it_has() {
        let q = ByteRing::<4>::new();
        for b in 0..4 {
            assert!(q.push(b));
        }
        assert!(!q.push(99));
        assert_eq!(q.pop(), Some(0));
        assert!(q.push(4));
        assert_eq!(
            [q.pop(), q.pop(), q.pop(), q.pop()],
            [Some(1), Some(2), Some(3), Some(4)]
        );
        assert_eq!(q.pop(), None);
    }

    #[test_case]
    fn counters_wrap_around() {
        let q = ByteRing::<4>::new();
        // Start just below the wrap of the counters.
        q.head
            .store(usize::MAX - 1, core::sync::atomic::Ordering::Relaxed);
        q.tail
            .store(usize::MAX - 1, core::sync::atomic::Ordering::Relaxed);
        for b in 10..14 {
            assert!(q.push(b));
        }
        assert!(!q.push(0));
        for b in 10..14 {
            assert_eq!(q.pop(), Some(b));
        }
        assert!(q.is_empty());
    }
}
