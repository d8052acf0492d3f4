//! Cleans QEMU's serial output on its way to the terminal.
//!
//! The kernel writes plain lines, but UEFI firmware writes terminal control sequences
//! (clear screen, cursor moves) and `\r\n` line ends to the same port. Passed through, they
//! would clear the user's terminal and leave escape codes and `\r` in logs. This drops ANSI
//! escape sequences and turns `\r\n` into `\n`; all other bytes pass unchanged.

const ESC: u8 = 0x1b;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// Inside a control sequence (ESC `[` ...), until its final byte.
    ControlSequence,
}

/// A streaming filter: feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SerialFilter {
    state: State,
    /// A `\r` seen at the end of the previous chunk, held back to see what follows it.
    pending_cr: bool,
}

impl SerialFilter {
    /// Appends the cleaned form of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            match self.state {
                State::Text => {
                    if self.pending_cr {
                        self.pending_cr = false;
                        if byte != b'\n' {
                            out.push(b'\r');
                        }
                    }
                    match byte {
                        ESC => self.state = State::Escape,
                        b'\r' => self.pending_cr = true,
                        _ => out.push(byte),
                    }
                }
                // ESC `[` starts a control sequence. Other escape sequences are ESC,
                // intermediate bytes (0x20..=0x2f), and one final byte; all dropped.
                State::Escape if byte == b'[' => self.state = State::ControlSequence,
                State::Escape if (0x20..=0x2f).contains(&byte) => {}
                State::Escape => self.state = State::Text,
                // Parameter and intermediate bytes are 0x20..=0x3f; a byte in
                // 0x40..=0x7e ends the sequence. Anything else is malformed: stop there.
                State::ControlSequence => {
                    if !(0x20..=0x3f).contains(&byte) {
                        self.state = State::Text;
                    }
                }
            }
        }
    }

    /// Emits what is held back at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(chunks: &[&[u8]]) -> Vec<u8> {
        let mut filter = SerialFilter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            filter.feed(chunk, &mut out);
        }
        filter.finish(&mut out);
        out
    }

    #[test]
    fn plain_text_passes_unchanged() {
        let text: &[u8] = b"kernel: 3 passed, 0 failed\n\tx\xff";
        assert_eq!(clean(&[text]), text);
    }

    #[test]
    fn ovmf_control_sequences_are_dropped() {
        let ovmf = b"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[2J\x1b[01;01HBdsDxe: starting Boot0001\r\n";
        assert_eq!(clean(&[ovmf]), b"BdsDxe: starting Boot0001\n");
        assert_eq!(clean(&[b"a\x1b(Bb"]), b"ab", "charset designation");
        assert_eq!(clean(&[b"a\x1bcb"]), b"ab", "reset");
    }

    #[test]
    fn sequences_and_line_ends_split_across_chunks() {
        assert_eq!(clean(&[b"x\x1b", b"[0", b"1;01Hy\r", b"\nz"]), b"xy\nz");
        assert_eq!(clean(&[b"a\r", b"b"]), b"a\rb", "a lone \\r stays");
        assert_eq!(clean(&[b"end\r"]), b"end\r");
    }
}
