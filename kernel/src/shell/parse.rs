//! Reading the console's input: numbers and commands. Pure functions, tested in the kernel.

use core::fmt;

use crate::mm::frames::Zone;

/// Bytes in a frame.
const FRAME_BYTES: u64 = 4096;

/// Every command: its name, its usage line and what it does (the `help` text).
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("help", "help", "this list"),
    (
        "map",
        "map",
        "the bootloader's memory map and the zones made from it",
    ),
    (
        "stats",
        "stats",
        "frames free and in use, per zone; what this console holds",
    ),
    (
        "alloc",
        "alloc N [align A] [below ADDR]",
        "allocate N contiguous frames (from the allocator, not a page cache)",
    ),
    (
        "free",
        "free ADDR N",
        "free N frames at ADDR that this console allocated",
    ),
    (
        "tree",
        "tree [LEVEL INDEX] [ZONE]",
        "summary LEVEL[INDEX] and its 8 children; alone: each zone's path to its search address",
    ),
    (
        "walk",
        "walk N [ZONE]",
        "trace, step by step, the search an `alloc N` makes in ZONE; allocates nothing",
    ),
    (
        "chunk",
        "chunk [ADDR]",
        "the 512-page bitmap of the chunk holding ADDR (default: the last allocation)",
    ),
    (
        "fill",
        "fill PERCENT",
        "allocate or free this console's frames until PERCENT of memory is in use",
    ),
    (
        "check",
        "check",
        "run the allocator's invariant checks on every zone",
    ),
    ("heap", "heap", "the kernel heap's size and use"),
    (
        "aspace",
        "aspace new|map ADDR|drop",
        "an address space: create it, map a user page in it, drop it",
    ),
    (
        "quit",
        "quit",
        "end the session: QEMU exits with success (also `exit`)",
    ),
];

/// What `help` adds about numbers.
pub const NUMBERS_HELP: &str = "numbers: 42, 0x2a, 0x1_0000; K, M, G multiply by 2^10, 2^20, 2^30. \
A frame count with a suffix is a size in bytes: alloc 2M = alloc 512. \
Summaries (start, max, end) count pages of 4 KiB. ZONE is dma, dma32 or normal.";

/// The usage line of `command`.
pub fn usage_of(command: &str) -> &'static str {
    COMMANDS
        .iter()
        .find(|(name, _, _)| *name == command)
        .map_or("help", |(_, usage, _)| usage)
}

/// A number as typed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Number {
    /// Its value, suffix applied.
    pub value: u64,
    /// Whether it had a K, M or G suffix (then it is a size in bytes).
    pub suffixed: bool,
}

/// Why a token is not a number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NumberError<'a> {
    /// Not digits (with an optional `0x` and suffix).
    Invalid(&'a str),
    /// More than 64 bits.
    TooLarge(&'a str),
    /// A size with a suffix that is not a whole number of frames.
    NotFrames(&'a str),
}

impl fmt::Display for NumberError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NumberError::Invalid(s) => write!(f, "`{s}` is not a number (try 42, 0x2a or 16M)"),
            NumberError::TooLarge(s) => write!(f, "`{s}` does not fit in 64 bits"),
            NumberError::NotFrames(s) => {
                write!(f, "`{s}` is not a whole number of 4 KiB frames")
            }
        }
    }
}

/// Parses decimal or `0x` hexadecimal, with `_` between digits and an optional binary
/// suffix `K`, `M` or `G` (either case).
pub fn parse_number(s: &str) -> Result<Number, NumberError<'_>> {
    let (body, shift) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let (digits, radix) = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (body, 10),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return Err(NumberError::Invalid(s));
    }
    let mut value: u64 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let d = c.to_digit(radix).ok_or(NumberError::Invalid(s))?;
        value = value
            .checked_mul(radix as u64)
            .and_then(|v| v.checked_add(d as u64))
            .ok_or(NumberError::TooLarge(s))?;
    }
    let scaled = value
        .checked_mul(1 << shift)
        .ok_or(NumberError::TooLarge(s))?;
    Ok(Number {
        value: scaled,
        suffixed: shift > 0,
    })
}

/// A count of frames: a plain number is frames, a number with a suffix is bytes.
pub fn parse_frames(s: &str) -> Result<usize, NumberError<'_>> {
    let n = parse_number(s)?;
    let frames = if n.suffixed {
        if n.value % FRAME_BYTES != 0 {
            return Err(NumberError::NotFrames(s));
        }
        n.value / FRAME_BYTES
    } else {
        n.value
    };
    usize::try_from(frames).map_err(|_| NumberError::TooLarge(s))
}

/// A console command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Command {
    /// `help`
    Help,
    /// `map`
    Map,
    /// `stats`
    Stats,
    /// `alloc N [align A] [below ADDR]`
    Alloc {
        /// Frames.
        npages: usize,
        /// Alignment in frames (1 if not given).
        align_pages: usize,
        /// The frames must end at or below this address.
        below: Option<u64>,
    },
    /// `free ADDR N`
    Free {
        /// First frame's address.
        addr: u64,
        /// Frames.
        npages: usize,
    },
    /// `tree [LEVEL INDEX] [ZONE]`
    Tree {
        /// An entry `(level, index)`; none for the path to each search address.
        node: Option<(usize, usize)>,
        /// Only this zone.
        zone: Option<Zone>,
    },
    /// `walk N [ZONE]`
    Walk {
        /// Frames.
        npages: usize,
        /// The zone to search (default: the first zone an ordinary request tries).
        zone: Option<Zone>,
    },
    /// `chunk [ADDR]`
    Chunk(Option<u64>),
    /// `fill PERCENT`
    Fill(u8),
    /// `check`
    Check,
    /// `heap`
    Heap,
    /// `aspace ...`
    Aspace(Aspace),
    /// `quit` or `exit`
    Quit,
}

/// What to do with the console's address space.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Aspace {
    /// Create one.
    New,
    /// Map a fresh user page at this address.
    Map(u64),
    /// Drop it.
    Drop,
}

/// A line that is not a command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ParseError<'a> {
    /// The first word names no command.
    Unknown(&'a str),
    /// A known command with bad arguments.
    Usage {
        /// The command's usage line.
        usage: &'static str,
        /// What is wrong.
        why: Why<'a>,
    },
}

/// What is wrong with a command's arguments.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Why<'a> {
    /// A bad number.
    Number(NumberError<'a>),
    /// An argument is missing.
    Missing(&'static str),
    /// Something is left over, or a keyword is unknown or repeated.
    Unexpected(&'a str),
    /// A value out of its range.
    Range(&'static str),
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Unknown(word) => {
                write!(f, "unknown command `{word}`; `help` lists the commands")
            }
            ParseError::Usage { usage, why } => {
                match why {
                    Why::Number(e) => write!(f, "{e}")?,
                    Why::Missing(what) => write!(f, "missing {what}")?,
                    Why::Unexpected(word) => write!(f, "unexpected `{word}`")?,
                    Why::Range(what) => write!(f, "{what}")?,
                }
                write!(f, "\nusage: {usage}")
            }
        }
    }
}

/// Parses one line. `Ok(None)` for a blank line.
pub fn parse_command(line: &str) -> Result<Option<Command>, ParseError<'_>> {
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let lower = |w: &str, s: &str| w.eq_ignore_ascii_case(s);
    let command = match COMMANDS.iter().find(|(n, _, _)| lower(name, n)) {
        Some((n, _, _)) => *n,
        None if lower(name, "exit") => "quit",
        None => return Err(ParseError::Unknown(name)),
    };
    let usage = usage_of(command);
    let bad = |why| ParseError::Usage { usage, why };
    fn number(w: &str) -> Result<u64, NumberError<'_>> {
        parse_number(w).map(|n| n.value)
    }
    let args: ArgList<'_> =
        ArgList::collect(words).ok_or_else(|| bad(Why::Range("too many arguments")))?;
    let args = args.as_slice();

    let cmd = match command {
        "help" | "map" | "stats" | "check" | "heap" | "quit" => {
            if let Some(extra) = args.first() {
                return Err(bad(Why::Unexpected(extra)));
            }
            match command {
                "help" => Command::Help,
                "map" => Command::Map,
                "stats" => Command::Stats,
                "check" => Command::Check,
                "heap" => Command::Heap,
                _ => Command::Quit,
            }
        }
        "alloc" => {
            let (&n, mut rest) = args.split_first().ok_or(bad(Why::Missing("N")))?;
            let npages = parse_frames(n).map_err(|e| bad(Why::Number(e)))?;
            let (mut align_pages, mut below) = (None, None);
            while let [key, tail @ ..] = rest {
                let value = tail.first().copied();
                if lower(key, "align") && align_pages.is_none() {
                    let v = value.ok_or(bad(Why::Missing("A after `align`")))?;
                    align_pages = Some(parse_frames(v).map_err(|e| bad(Why::Number(e)))?);
                } else if lower(key, "below") && below.is_none() {
                    let v = value.ok_or(bad(Why::Missing("ADDR after `below`")))?;
                    below = Some(number(v).map_err(|e| bad(Why::Number(e)))?);
                } else {
                    return Err(bad(Why::Unexpected(key)));
                }
                rest = &tail[1..];
            }
            Command::Alloc {
                npages,
                align_pages: align_pages.unwrap_or(1),
                below,
            }
        }
        "free" => match args {
            [addr, n] => Command::Free {
                addr: number(addr).map_err(|e| bad(Why::Number(e)))?,
                npages: parse_frames(n).map_err(|e| bad(Why::Number(e)))?,
            },
            [] => return Err(bad(Why::Missing("ADDR and N"))),
            [_] => return Err(bad(Why::Missing("N"))),
            [_, _, extra, ..] => return Err(bad(Why::Unexpected(extra))),
        },
        "tree" => {
            let (args, zone) = split_zone(args);
            let node = match args {
                [] => None,
                [level, index] => {
                    let level = number(level).map_err(|e| bad(Why::Number(e)))?;
                    if level > 4 {
                        return Err(bad(Why::Range("LEVEL is 0 (the root) to 4 (the chunks)")));
                    }
                    let index = number(index).map_err(|e| bad(Why::Number(e)))?;
                    let index = usize::try_from(index)
                        .map_err(|_| bad(Why::Range("INDEX is too large")))?;
                    Some((level as usize, index))
                }
                [_] => return Err(bad(Why::Missing("INDEX"))),
                [_, _, extra, ..] => return Err(bad(Why::Unexpected(extra))),
            };
            Command::Tree { node, zone }
        }
        "walk" => {
            let (args, zone) = split_zone(args);
            match args {
                [n] => Command::Walk {
                    npages: parse_frames(n).map_err(|e| bad(Why::Number(e)))?,
                    zone,
                },
                [] => return Err(bad(Why::Missing("N"))),
                [_, extra, ..] => return Err(bad(Why::Unexpected(extra))),
            }
        }
        "chunk" => match args {
            [] => Command::Chunk(None),
            [addr] => Command::Chunk(Some(number(addr).map_err(|e| bad(Why::Number(e)))?)),
            [_, extra, ..] => return Err(bad(Why::Unexpected(extra))),
        },
        "fill" => match args {
            [p] => {
                let p = p.strip_suffix('%').unwrap_or(p);
                let n = parse_number(p).map_err(|e| bad(Why::Number(e)))?;
                if n.suffixed || n.value > 100 {
                    return Err(bad(Why::Range("PERCENT is 0 to 100")));
                }
                Command::Fill(n.value as u8)
            }
            [] => return Err(bad(Why::Missing("PERCENT"))),
            [_, extra, ..] => return Err(bad(Why::Unexpected(extra))),
        },
        "aspace" => match args {
            [op] if lower(op, "new") => Command::Aspace(Aspace::New),
            [op] if lower(op, "drop") => Command::Aspace(Aspace::Drop),
            [op, addr] if lower(op, "map") => {
                Command::Aspace(Aspace::Map(number(addr).map_err(|e| bad(Why::Number(e)))?))
            }
            [op] if lower(op, "map") => return Err(bad(Why::Missing("ADDR after `map`"))),
            [] => return Err(bad(Why::Missing("new, map ADDR or drop"))),
            [op, rest @ ..] => {
                // An unknown operation, or a known one with too many words.
                let known = ["new", "map", "drop"].iter().any(|k| lower(op, k));
                let word = if known { rest.last().unwrap_or(op) } else { op };
                return Err(bad(Why::Unexpected(word)));
            }
        },
        _ => unreachable!("every name in COMMANDS is handled"),
    };
    Ok(Some(cmd))
}

/// A zone named by the last word, and the words before it.
fn split_zone<'a, 'w>(args: &'w [&'a str]) -> (&'w [&'a str], Option<Zone>) {
    if let Some((last, rest)) = args.split_last()
        && let Some(z) = Zone::ALL
            .into_iter()
            .find(|z| z.name().eq_ignore_ascii_case(last))
    {
        return (rest, Some(z));
    }
    (args, None)
}

/// The words after the command name, without a heap.
struct ArgList<'a> {
    words: [&'a str; 8],
    len: usize,
}

impl<'a> ArgList<'a> {
    /// `None` if there are more than 8.
    fn collect(words: impl Iterator<Item = &'a str>) -> Option<ArgList<'a>> {
        let mut list = ArgList {
            words: [""; 8],
            len: 0,
        };
        for w in words {
            *list.words.get_mut(list.len)? = w;
            list.len += 1;
        }
        Some(list)
    }

    fn as_slice(&self) -> &[&'a str] {
        &self.words[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test_case]
    fn numbers_in_every_notation() {
        let v = |s| parse_number(s).map(|n| n.value);
        assert_eq!(v("42"), Ok(42));
        assert_eq!(v("0x2a"), Ok(42));
        assert_eq!(v("0X2A"), Ok(42));
        assert_eq!(v("0x1_0000"), Ok(0x10000));
        assert_eq!(v("4K"), Ok(4096));
        assert_eq!(v("16M"), Ok(16 << 20));
        assert_eq!(v("2g"), Ok(2 << 30));
        assert_eq!(v("0x10M"), Ok(16 << 20));
        assert_eq!(v("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_number("16M").unwrap().suffixed);
        assert!(!parse_number("16").unwrap().suffixed);
    }

    #[test_case]
    fn bad_numbers_are_named() {
        for s in ["", "x", "0x", "12a", "K", "_1", "1_", "0xg", "-1", "1.5"] {
            assert_eq!(parse_number(s), Err(NumberError::Invalid(s)), "{s:?}");
        }
        assert_eq!(
            parse_number("18446744073709551616"),
            Err(NumberError::TooLarge("18446744073709551616"))
        );
        assert_eq!(
            parse_number("0xffffffffffffG"),
            Err(NumberError::TooLarge("0xffffffffffffG"))
        );
        assert_eq!(
            NumberError::Invalid("3x").to_string(),
            "`3x` is not a number (try 42, 0x2a or 16M)"
        );
    }

    #[test_case]
    fn frame_counts_and_sizes() {
        assert_eq!(parse_frames("3"), Ok(3));
        assert_eq!(parse_frames("2M"), Ok(512));
        assert_eq!(parse_frames("8K"), Ok(2));
        assert_eq!(parse_frames("6K"), Err(NumberError::NotFrames("6K")));
    }

    #[test_case]
    fn commands_and_their_arguments() {
        let p = |s| parse_command(s).unwrap();
        assert_eq!(p(""), None);
        assert_eq!(p("   "), None);
        assert_eq!(p("help"), Some(Command::Help));
        assert_eq!(p("  STATS "), Some(Command::Stats));
        assert_eq!(p("exit"), Some(Command::Quit));
        assert_eq!(
            p("alloc 3"),
            Some(Command::Alloc {
                npages: 3,
                align_pages: 1,
                below: None
            })
        );
        assert_eq!(
            p("alloc 2M below 16M align 2M"),
            Some(Command::Alloc {
                npages: 512,
                align_pages: 512,
                below: Some(16 << 20)
            })
        );
        assert_eq!(
            p("free 0x1800000 3"),
            Some(Command::Free {
                addr: 0x180_0000,
                npages: 3
            })
        );
        let tree = |node, zone| Some(Command::Tree { node, zone });
        assert_eq!(p("tree"), tree(None, None));
        assert_eq!(p("tree 4 0x10"), tree(Some((4, 16)), None));
        assert_eq!(p("tree dma"), tree(None, Some(Zone::Dma)));
        assert_eq!(p("tree 2 0 DMA32"), tree(Some((2, 0)), Some(Zone::Dma32)));
        assert_eq!(
            p("walk 600 dma"),
            Some(Command::Walk {
                npages: 600,
                zone: Some(Zone::Dma)
            })
        );
        assert_eq!(
            p("walk 2M"),
            Some(Command::Walk {
                npages: 512,
                zone: None
            })
        );
        assert_eq!(p("chunk"), Some(Command::Chunk(None)));
        assert_eq!(p("chunk 16M"), Some(Command::Chunk(Some(16 << 20))));
        assert_eq!(p("fill 50%"), Some(Command::Fill(50)));
        assert_eq!(p("aspace new"), Some(Command::Aspace(Aspace::New)));
        assert_eq!(
            p("aspace map 0x400000"),
            Some(Command::Aspace(Aspace::Map(0x40_0000)))
        );
        assert_eq!(p("aspace drop"), Some(Command::Aspace(Aspace::Drop)));
    }

    #[test_case]
    fn bad_input_gets_a_reason_and_the_usage_line() {
        let e = |s| parse_command(s).unwrap_err().to_string();
        assert_eq!(
            e("frobnicate 3"),
            "unknown command `frobnicate`; `help` lists the commands"
        );
        assert_eq!(
            e("alloc"),
            "missing N\nusage: alloc N [align A] [below ADDR]"
        );
        assert_eq!(
            e("alloc 3x"),
            "`3x` is not a number (try 42, 0x2a or 16M)\nusage: alloc N [align A] [below ADDR]"
        );
        assert_eq!(
            e("alloc 3 align"),
            "missing A after `align`\nusage: alloc N [align A] [below ADDR]"
        );
        assert_eq!(
            e("alloc 3 align 2 align 4"),
            "unexpected `align`\nusage: alloc N [align A] [below ADDR]"
        );
        assert_eq!(e("free 0x1000"), "missing N\nusage: free ADDR N");
        assert_eq!(e("free 1 2 3"), "unexpected `3`\nusage: free ADDR N");
        assert_eq!(
            e("tree 5 0"),
            "LEVEL is 0 (the root) to 4 (the chunks)\nusage: tree [LEVEL INDEX] [ZONE]"
        );
        assert_eq!(
            e("tree 1"),
            "missing INDEX\nusage: tree [LEVEL INDEX] [ZONE]"
        );
        assert_eq!(e("walk"), "missing N\nusage: walk N [ZONE]");
        assert_eq!(e("walk 3 dmz"), "unexpected `dmz`\nusage: walk N [ZONE]");
        assert_eq!(
            e("tree 1 2 dma 4"),
            "unexpected `dma`\nusage: tree [LEVEL INDEX] [ZONE]"
        );
        assert_eq!(e("fill 101"), "PERCENT is 0 to 100\nusage: fill PERCENT");
        assert_eq!(e("help me"), "unexpected `me`\nusage: help");
        assert_eq!(
            e("aspace"),
            "missing new, map ADDR or drop\nusage: aspace new|map ADDR|drop"
        );
        assert_eq!(
            e("aspace fly"),
            "unexpected `fly`\nusage: aspace new|map ADDR|drop"
        );
        assert_eq!(
            e("aspace new now"),
            "unexpected `now`\nusage: aspace new|map ADDR|drop"
        );
        assert_eq!(
            e("chunk 1 2 3 4 5 6 7 8 9"),
            "too many arguments\nusage: chunk [ADDR]"
        );
    }
}
