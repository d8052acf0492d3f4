//! Turning received bytes into lines: echo, backspace, and terminal keys to ignore.
//!
//! A terminal in raw mode (QEMU puts the user's terminal in it for `-serial stdio`) sends
//! every key as it is pressed and shows nothing itself, so the kernel echoes what it
//! accepts. Enter arrives as `\r` (a script may send `\n` or `\r\n`); Backspace as DEL
//! (0x7f) or BS (0x08); arrow and function keys as escape sequences.

use core::fmt::{self, Write};

/// The longest line; more is refused with a bell.
pub const MAX_LINE: usize = 120;

const BELL: u8 = 0x07;
const BACKSPACE: u8 = 0x08;
const CTRL_C: u8 = 0x03;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Escape {
    /// Ordinary input.
    None,
    /// After ESC.
    Start,
    /// After ESC `[` (CSI) or ESC `O` (SS3): parameters until a final byte.
    Sequence,
}

/// What a byte did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Key {
    /// Nothing to act on yet.
    Pending,
    /// A line is complete: read it with [`LineEditor::line`], then [`LineEditor::clear`].
    Enter,
    /// A line ended that was longer than [`MAX_LINE`]: it holds only the first
    /// [`MAX_LINE`] characters and must not be run. Clear it.
    TooLong,
}

/// A line being typed.
pub struct LineEditor {
    buf: [u8; MAX_LINE],
    len: usize,
    escape: Escape,
    /// The last byte was `\r`, so a `\n` right after it ends no second line.
    after_cr: bool,
    /// Characters were refused because the line was full.
    overflow: bool,
}

impl LineEditor {
    /// An empty line.
    pub const fn new() -> LineEditor {
        LineEditor {
            buf: [0; MAX_LINE],
            len: 0,
            escape: Escape::None,
            after_cr: false,
            overflow: false,
        }
    }

    /// Takes one received byte and writes its echo to `echo`.
    pub fn feed(&mut self, byte: u8, echo: &mut impl Write) -> Result<Key, fmt::Error> {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::Start if byte == b'[' || byte == b'O' => {
                self.escape = Escape::Sequence;
                return Ok(Key::Pending);
            }
            // A lone ESC (or Alt with a key): the byte after it counts as typed.
            Escape::Start => self.escape = Escape::None,
            Escape::Sequence => {
                // Parameter bytes are 0x20..=0x3f; anything else ends the sequence.
                if !(0x20..=0x3f).contains(&byte) {
                    self.escape = Escape::None;
                }
                return Ok(Key::Pending);
            }
            Escape::None => {}
        }
        match byte {
            b'\n' if after_cr => {}
            b'\r' | b'\n' => {
                self.after_cr = byte == b'\r';
                echo.write_char('\n')?;
                if core::mem::replace(&mut self.overflow, false) {
                    return Ok(Key::TooLong);
                }
                return Ok(Key::Enter);
            }
            BACKSPACE | DEL => {
                if self.len > 0 {
                    self.len -= 1;
                    echo.write_str("\x08 \x08")?;
                }
            }
            CTRL_U => {
                for _ in 0..self.len {
                    echo.write_str("\x08 \x08")?;
                }
                self.len = 0;
            }
            CTRL_C => {
                // Give up the line: an empty line, and a fresh prompt.
                self.len = 0;
                self.overflow = false;
                echo.write_str("^C\n")?;
                return Ok(Key::Enter);
            }
            ESC => self.escape = Escape::Start,
            0x20..=0x7e => {
                if self.len < MAX_LINE {
                    self.buf[self.len] = byte;
                    self.len += 1;
                    echo.write_char(byte as char)?;
                } else {
                    self.overflow = true;
                    echo.write_char(BELL as char)?;
                }
            }
            // Other control bytes and non-ASCII: ignored.
            _ => {}
        }
        Ok(Key::Pending)
    }

    /// The line typed so far.
    pub fn line(&self) -> &str {
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Starts a new line.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    /// Feeds `input`; returns the lines completed and the echo.
    fn type_in(input: &[u8]) -> (Vec<String>, String) {
        let mut ed = LineEditor::new();
        let mut echo = String::new();
        let mut lines = Vec::new();
        for &b in input {
            match ed.feed(b, &mut echo).unwrap() {
                Key::Enter => lines.push(String::from(ed.line())),
                Key::TooLong => lines.push(String::from("(too long)")),
                Key::Pending => continue,
            }
            ed.clear();
        }
        (lines, echo)
    }

    #[test_case]
    fn enter_ends_a_line_whatever_the_terminal_sends() {
        assert_eq!(type_in(b"help\r").0, ["help"]);
        assert_eq!(type_in(b"help\n").0, ["help"]);
        assert_eq!(type_in(b"a\r\nb\r\n").0, ["a", "b"]);
        assert_eq!(type_in(b"a\n\nb\n").0, ["a", "", "b"]);
        assert_eq!(type_in(b"stats\r").1, "stats\n");
    }

    #[test_case]
    fn backspace_and_ctrl_u_erase() {
        let (lines, echo) = type_in(b"allox\x7fc 3\r");
        assert_eq!(lines, ["alloc 3"]);
        assert_eq!(echo, "allox\x08 \x08c 3\n");
        assert_eq!(type_in(b"\x08\x08ok\r").0, ["ok"], "nothing to erase");
        assert_eq!(type_in(b"junk\x15map\r").0, ["map"]);
        assert_eq!(type_in(b"half\x03").0, [""], "Ctrl-C drops the line");
    }

    #[test_case]
    fn arrow_keys_and_control_bytes_are_ignored() {
        // Up, Left, F1 (SS3), Delete (CSI 3 ~), a tab, a NUL and a UTF-8 byte.
        let (lines, echo) = type_in(b"\x1b[A\x1b[Dtr\x1bOPee\x1b[3~\t\0\xc3\r");
        assert_eq!(lines, ["tree"]);
        assert_eq!(echo, "tree\n");
    }

    #[test_case]
    fn a_long_line_rings_the_bell_and_is_not_run() {
        let mut input = [b'x'; MAX_LINE + 2];
        input[MAX_LINE + 1] = b'\r';
        let (lines, echo) = type_in(&input);
        assert_eq!(lines, ["(too long)"]);
        assert!(echo.ends_with("x\x07\n"));
        let mut ed = LineEditor::new();
        let mut echo = String::new();
        for &b in &input {
            ed.feed(b, &mut echo).unwrap();
        }
        ed.clear();
        for &b in b"map\r" {
            ed.feed(b, &mut echo).unwrap();
        }
        assert_eq!(ed.line(), "map", "the next line is whole again");
    }

    #[test_case]
    fn enter_after_a_lone_escape_still_ends_the_line() {
        assert_eq!(type_in(b"map\x1b\r").0, ["map"]);
        assert_eq!(type_in(b"\x1b\rstats\r").0, ["", "stats"]);
        // Alt-x arrives as ESC x: the x counts.
        assert_eq!(type_in(b"\x1bxy\r").0, ["xy"]);
    }
}
