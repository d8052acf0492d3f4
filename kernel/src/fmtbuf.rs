//! A fixed-capacity string buffer for `core::fmt`, for formatting without a heap.

use core::fmt;

/// Collects formatted text up to `N` bytes; the rest is dropped (never a partial UTF-8
/// character) and [`FmtBuf::truncated`] reports it.
pub struct FmtBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> FmtBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        FmtBuf {
            bytes: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// The text collected so far.
    pub fn as_str(&self) -> &str {
        // `write_str` only ever copies whole characters.
        core::str::from_utf8(&self.bytes[..self.len]).expect("FmtBuf holds whole characters")
    }

    /// Whether text was dropped for lack of space.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Formats `args` into a new buffer.
    pub fn format(args: fmt::Arguments) -> Self {
        let mut buf = Self::new();
        // Our `write_str` never fails; only a `Display` impl could, and then we keep what we got.
        let _ = fmt::write(&mut buf, args);
        buf
    }
}

impl<const N: usize> Default for FmtBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for FmtBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Display for FmtBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FmtBuf;

    #[test_case]
    fn formats_and_truncates_on_char_boundaries() {
        let buf = FmtBuf::<8>::format(format_args!("{}-{}", 12, "ab"));
        assert_eq!(buf.as_str(), "12-ab");
        assert!(!buf.truncated());
        // 'é' is two bytes; it must not be split at the 8-byte limit.
        let buf = FmtBuf::<8>::format(format_args!("abcdefgé"));
        assert_eq!(buf.as_str(), "abcdefg");
        assert!(buf.truncated());
    }
}
