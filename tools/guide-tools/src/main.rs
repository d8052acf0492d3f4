//! Tools for the allocator guide (`kernel/pagealloc/GUIDE.md`) and the README:
//!
//! - `check-docs NAME=LOG...`: every transcript in the documents must be real output. A
//!   fenced block after `<!-- transcript: NAME -->` must appear in the file LOG (the
//!   captured serial output of that run), line by line; a line `...` in the block skips
//!   any number of lines. Hex numbers are masked on both sides, as addresses move between
//!   builds; `<!-- transcript: NAME, numbers masked -->` masks every number. A fenced block
//!   after `<!-- quote: PATH -->` must appear verbatim in the file PATH. A console
//!   transcript (a block with a `mm> ` line) without a marker is an error.
//! - `diagrams DIR`: writes the guide's SVG diagrams (see `diagrams.rs`).
//!
//! `./run-qemu.sh test` runs `check-docs`; run from the repository root.

use std::collections::HashMap;
use std::fs;
use std::process::ExitCode;

const DOCUMENTS: [&str; 2] = ["README.md", "kernel/pagealloc/GUIDE.md"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check-docs") => check_docs(&args[1..]),
        _ => Err("usage: guide-tools check-docs NAME=LOG...".to_string()),
    };
    match result {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("guide-tools: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_docs(args: &[String]) -> Result<String, String> {
    let mut logs = HashMap::new();
    for a in args {
        let (name, path) = a
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=LOG, got `{a}`"))?;
        let text = fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        logs.insert(name.to_string(), text);
    }
    let mut errors = Vec::new();
    let (mut transcripts, mut quotes) = (0, 0);
    for doc in DOCUMENTS {
        let text = fs::read_to_string(doc).map_err(|e| format!("{doc}: {e}"))?;
        for block in blocks(&text) {
            let at = format!("{doc}:{}", block.line);
            match &block.marker {
                Some(Marker::Transcript { log, numbers }) => {
                    transcripts += 1;
                    let Some(out) = logs.get(log) else {
                        errors.push(format!("{at}: no output named `{log}` was given"));
                        continue;
                    };
                    if let Err(e) = find_transcript(&block.lines, out, *numbers) {
                        errors.push(format!("{at}: transcript `{log}` differs: {e}"));
                    }
                }
                Some(Marker::Quote(path)) => {
                    quotes += 1;
                    match fs::read_to_string(path) {
                        Ok(src) if src.contains(&(block.lines.join("\n") + "\n")) => {}
                        Ok(_) => errors.push(format!("{at}: this quote is not in {path}")),
                        Err(e) => errors.push(format!("{at}: {path}: {e}")),
                    }
                }
                None if block.lines.iter().any(|l| l.starts_with("mm> ")) => errors.push(format!(
                    "{at}: a console transcript without a `<!-- transcript: NAME -->` marker"
                )),
                None => {}
            }
        }
    }
    if errors.is_empty() {
        Ok(format!(
            "check-docs: {transcripts} transcripts match the output, {quotes} quotes match the source"
        ))
    } else {
        Err(errors.join("\n"))
    }
}

#[derive(Debug, PartialEq)]
enum Marker {
    Transcript { log: String, numbers: bool },
    Quote(String),
}

/// A fenced block and the marker on the line before its fence, if any.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    marker: Option<Marker>,
    lines: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i].trim_start();
        if !fence.starts_with("```") {
            i += 1;
            continue;
        }
        let indent = lines[i].len() - fence.len();
        let marker = i.checked_sub(1).and_then(|p| parse_marker(lines[p].trim()));
        let start = i;
        i += 1;
        let mut body = Vec::new();
        while i < lines.len() && lines[i].trim_start() != "```" {
            body.push(lines[i].get(indent..).unwrap_or("").to_string());
            i += 1;
        }
        i += 1;
        out.push(Block {
            line: start + 1,
            marker,
            lines: body,
        });
    }
    out
}

fn parse_marker(line: &str) -> Option<Marker> {
    let inner = line.strip_prefix("<!--")?.strip_suffix("-->")?.trim();
    if let Some(rest) = inner.strip_prefix("transcript:") {
        let (log, numbers) = match rest.trim().split_once(',') {
            Some((log, opt)) if opt.trim() == "numbers masked" => (log, true),
            _ => (rest, false),
        };
        return Some(Marker::Transcript {
            log: log.trim().to_string(),
            numbers,
        });
    }
    inner
        .strip_prefix("quote:")
        .map(|p| Marker::Quote(p.trim().to_string()))
}

/// Replaces hex numbers by `0x?`, and with `numbers` every number by `?`.
fn mask(line: &str, numbers: bool) -> String {
    let b = line.trim_end().as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if word_start && b[i] == b'0' && b.get(i + 1) == Some(&b'x') {
            i += 2;
            while i < b.len() && (b[i].is_ascii_hexdigit() || b[i] == b'_') {
                i += 1;
            }
            out.push_str("0x?");
        } else if numbers && b[i].is_ascii_digit() {
            while i < b.len()
                && (b[i].is_ascii_digit()
                    || b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            {
                i += 1;
            }
            out.push('?');
        } else {
            let c = line[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Finds `block` in `output`: its pieces between `...` lines, in order, each a run of
/// consecutive lines.
fn find_transcript(block: &[String], output: &str, numbers: bool) -> Result<(), String> {
    let out: Vec<String> = output.lines().map(|l| mask(l, numbers)).collect();
    let mut from = 0;
    for piece in block.split(|l| l.trim() == "...") {
        if piece.is_empty() {
            continue;
        }
        let want: Vec<String> = piece.iter().map(|l| mask(l, numbers)).collect();
        let found = (from..out.len().saturating_sub(want.len() - 1))
            .find(|&i| out[i..i + want.len()] == want[..]);
        match found {
            Some(i) => from = i + want.len(),
            None => {
                // Say which line broke the longest partial match.
                let (mut best, mut at) = (0, 0);
                for i in from..out.len() {
                    let n = want
                        .iter()
                        .zip(&out[i..])
                        .take_while(|(a, b)| a == b)
                        .count();
                    if n > best {
                        (best, at) = (n, i);
                    }
                }
                return Err(if best == 0 {
                    format!("`{}` is not in the output", piece[0])
                } else {
                    format!(
                        "after {best} matching lines, expected `{}`, the output has `{}`",
                        piece[best],
                        output.lines().nth(at + best).unwrap_or("(end of output)")
                    )
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hex_always_and_numbers_on_request() {
        assert_eq!(
            mask("L4[14] 0x1c00000..0x1e00000 (max=509)", false),
            "L4[14] 0x?..0x? (max=509)"
        );
        assert_eq!(
            mask("7.4 MiB at 0x1000000, 61 ticks", true),
            "? MiB at 0x?, ? ticks"
        );
        assert_eq!(mask("L4 is x86_64", true), "L? is x?_?");
        assert_eq!(mask("trailing   ", false), "trailing");
    }

    #[test]
    fn transcripts_match_in_order_with_gaps() {
        let out =
            "boot\nmm> alloc 3\nallocated 3 frames at 0x1000\nmm> tree\nzone A\nzone B\nmm> \n";
        let block = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
        assert!(
            find_transcript(
                &block("mm> alloc 3\nallocated 3 frames at 0x5000"),
                out,
                false
            )
            .is_ok()
        );
        assert!(find_transcript(&block("mm> alloc 3\n...\nzone B"), out, false).is_ok());
        let e = find_transcript(
            &block("mm> alloc 3\nallocated 4 frames at 0x1000"),
            out,
            false,
        )
        .unwrap_err();
        assert!(e.contains("expected `allocated 4 frames at 0x1000`"), "{e}");
        assert!(
            find_transcript(&block("zone B\n...\nmm> alloc 3"), out, false).is_err(),
            "order counts"
        );
        assert!(find_transcript(&block("allocated 9 frames at 0x1"), out, true).is_ok());
    }

    #[test]
    fn markers_and_blocks() {
        let doc = "text\n<!-- transcript: shell -->\n```text\nmm> x\n```\n<!-- quote: a/b.rs -->\n  ```rust\n  fn f() {}\n  ```\n```text\nmm> y\n```\n";
        let b = blocks(doc);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b[0].marker,
            Some(Marker::Transcript {
                log: "shell".into(),
                numbers: false
            })
        );
        assert_eq!(b[1].marker, Some(Marker::Quote("a/b.rs".into())));
        assert_eq!(b[1].lines, ["fn f() {}"]);
        assert_eq!(b[2].marker, None);
        assert_eq!(
            parse_marker("<!-- transcript: demo, numbers masked -->"),
            Some(Marker::Transcript {
                log: "demo".into(),
                numbers: true
            })
        );
    }
}
