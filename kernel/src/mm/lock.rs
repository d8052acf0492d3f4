//! A spin lock that keeps interrupts off while it is held.
//!
//! An interrupt handler that takes a lock its own CPU already holds would spin forever.
//! Disabling interrupts for the (short) time the lock is held makes that impossible, so
//! the frame allocator can be used from interrupt handlers.

use core::ops::{Deref, DerefMut};

use x86_64::instructions::interrupts;

/// A [`spin::Mutex`] whose guard also disables interrupts, and restores them on drop.
pub struct IrqMutex<T> {
    inner: spin::Mutex<T>,
}

/// Access to the data of an [`IrqMutex`]; interrupts stay off until it is dropped.
pub struct IrqMutexGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    interrupts_were_enabled: bool,
}

impl<T> IrqMutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Self {
        IrqMutex {
            inner: spin::Mutex::new(value),
        }
    }

    /// Disables interrupts, then spins until the lock is free.
    pub fn lock(&self) -> IrqMutexGuard<'_, T> {
        let interrupts_were_enabled = interrupts::are_enabled();
        interrupts::disable();
        IrqMutexGuard {
            guard: Some(self.inner.lock()),
            interrupts_were_enabled,
        }
    }

    /// Whether the lock is held at this moment (for diagnostics only).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

impl<T> Deref for IrqMutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard is present until drop")
    }
}

impl<T> DerefMut for IrqMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard is present until drop")
    }
}

impl<T> Drop for IrqMutexGuard<'_, T> {
    fn drop(&mut self) {
        // Unlock first: an interrupt arriving right after `enable` may take the lock.
        drop(self.guard.take());
        if self.interrupts_were_enabled {
            interrupts::enable();
        }
    }
}
