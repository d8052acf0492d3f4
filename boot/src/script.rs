//! Serial scripts: type into a kernel's serial console and check what it answers.
//!
//! A script is a text file, one step per line:
//!
//! ```text
//! # comment; blank lines are ignored too
//! timeout: 20          how long each later `expect` may wait, in seconds (default 10)
//! expect: mm>          wait until the output (after the previous match) contains `mm>`
//! send: alloc 3        type `alloc 3` and Enter (`\r`); `\xNN` writes any byte, `\\` a `\`
//! ```
//!
//! The text after `send:`/`expect:` is the rest of the line without the spaces around it
//! (editors drop trailing spaces), so it may itself contain spaces and colons. Matching
//! works on the output as it reaches the terminal (after the serial filter), so `\r\n`
//! is `\n`.

use std::io::Write;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long an `expect` waits unless a `timeout:` line says otherwise.
pub const DEFAULT_EXPECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes to write to the serial port, Enter included.
    Send(Vec<u8>),
    /// Text the output must contain.
    Expect(String),
    /// The wait limit of the following `expect`s.
    Timeout(Duration),
}

/// A parsed script: steps with their line numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub steps: Vec<(usize, Step)>,
}

/// Reads and parses a script file.
pub fn load(path: &Path) -> Result<Script, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read serial script {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("serial script {}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<Script, String> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            return Err(format!(
                "line {n}: expected `send: TEXT`, `expect: TEXT` or `timeout: SECS`, got `{trimmed}`"
            ));
        };
        let value = value.trim_start();
        let step = match key.trim() {
            "send" => {
                let mut bytes = unescape(value).map_err(|e| format!("line {n}: {e}"))?;
                bytes.push(b'\r');
                Step::Send(bytes)
            }
            "expect" if value.is_empty() => {
                return Err(format!("line {n}: `expect:` needs the text to wait for"));
            }
            "expect" => Step::Expect(value.to_string()),
            "timeout" => {
                let secs: f64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 1e6)
                    .ok_or_else(|| format!("line {n}: `{value}` is not a number of seconds"))?;
                Step::Timeout(Duration::from_secs_f64(secs))
            }
            other => return Err(format!("line {n}: unknown step `{other}:`")),
        };
        steps.push((n, step));
    }
    Ok(Script { steps })
}

/// Turns `\xNN` and `\\` into bytes.
fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let value = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("`\\x` needs two hex digits")?;
                out.push(value);
            }
            _ => return Err("a `\\` starts `\\xNN` or `\\\\`".to_string()),
        }
    }
    Ok(out)
}

/// The output seen so far, shared by the thread that forwards it and the script.
#[derive(Default)]
pub struct Transcript {
    state: Mutex<TranscriptState>,
    grew: Condvar,
}

#[derive(Default)]
struct TranscriptState {
    bytes: Vec<u8>,
    /// The output has ended (QEMU exited).
    closed: bool,
}

impl Transcript {
    pub fn append(&self, bytes: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.bytes.extend_from_slice(bytes);
        self.grew.notify_all();
    }

    pub fn close(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        self.grew.notify_all();
    }

    /// Waits until `needle` occurs in the output at or after byte `from`; returns the end
    /// of the match.
    pub fn wait_for(&self, needle: &str, from: usize, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let needle = needle.as_bytes();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let hay = &st.bytes[from.min(st.bytes.len())..];
            if let Some(i) = hay.windows(needle.len()).position(|w| w == needle) {
                return Ok(from + i + needle.len());
            }
            if st.closed {
                return Err("the output ended first (QEMU exited)".to_string());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "not seen within {} s",
                    crate::run::fmt_secs(timeout)
                ));
            }
            st = self
                .grew
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// What a finished script did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub sent: usize,
    pub matched: usize,
}

/// Runs `script`: writes its `send`s to `input`, and waits for its `expect`s in
/// `transcript`, each after the previous match. Stops at the first step that fails.
pub fn run(
    script: &Script,
    input: &mut impl Write,
    transcript: &Transcript,
) -> Result<Done, String> {
    let mut timeout = DEFAULT_EXPECT_TIMEOUT;
    let mut from = 0;
    let mut done = Done {
        sent: 0,
        matched: 0,
    };
    for (line, step) in &script.steps {
        match step {
            Step::Timeout(t) => timeout = *t,
            Step::Send(bytes) => {
                input
                    .write_all(bytes)
                    .and_then(|()| input.flush())
                    .map_err(|e| format!("line {line}: cannot send: {e}"))?;
                done.sent += 1;
            }
            Step::Expect(text) => {
                from = transcript
                    .wait_for(text, from, timeout)
                    .map_err(|e| format!("line {line}: `expect: {text}`: {e}"))?;
                done.matched += 1;
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn scripts_parse() {
        let s = parse(
            "# a comment\n\nexpect: mm> \nsend: alloc 3\n  timeout: 2.5\nsend: a\\x7fb\\\\\nexpect: x: y\n",
        )
        .unwrap();
        assert_eq!(
            s.steps,
            vec![
                (3, Step::Expect("mm>".into())),
                (4, Step::Send(b"alloc 3\r".to_vec())),
                (5, Step::Timeout(Duration::from_millis(2500))),
                (6, Step::Send(b"a\x7fb\\\r".to_vec())),
                (7, Step::Expect("x: y".into())),
            ]
        );
    }

    #[test]
    fn bad_scripts_name_the_line() {
        assert_eq!(
            parse("send: ok\nsned: x\n").unwrap_err(),
            "line 2: unknown step `sned:`"
        );
        assert!(
            parse("hello\n")
                .unwrap_err()
                .starts_with("line 1: expected `send: TEXT`")
        );
        assert!(parse("expect:\n").unwrap_err().contains("needs the text"));
        assert!(
            parse("timeout: soon\n")
                .unwrap_err()
                .contains("not a number of seconds")
        );
        assert!(
            parse("send: \\x4\n")
                .unwrap_err()
                .contains("two hex digits")
        );
        assert!(parse("send: \\n\n").unwrap_err().contains("starts `\\xNN`"));
    }

    #[test]
    fn a_script_against_a_fake_console() {
        // A "console" thread answers every line it is sent with "got LINE".
        let transcript = Arc::new(Transcript::default());
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let echo = Arc::clone(&transcript);
        let console = thread::spawn(move || {
            echo.append(b"mm> ");
            for bytes in rx {
                let line = String::from_utf8(bytes).unwrap();
                echo.append(format!("got {}\nmm> ", line.trim_end()).as_bytes());
            }
            echo.close();
        });
        struct Port(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Port {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.send(buf.to_vec()).unwrap();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let script =
            parse("expect: mm>\nsend: one\nexpect: got one\nsend: two\nexpect: got two\n").unwrap();
        let done = run(&script, &mut Port(tx.clone()), &transcript).unwrap();
        assert_eq!(
            done,
            Done {
                sent: 2,
                matched: 3
            }
        );

        // Matching starts after the previous match: "got one" was consumed.
        let again = parse("timeout: 0.2\nexpect: got one\nexpect: got one\n").unwrap();
        let err = run(&again, &mut Port(tx.clone()), &transcript).unwrap_err();
        assert_eq!(err, "line 3: `expect: got one`: not seen within 0.2 s");

        drop(tx);
        console.join().unwrap();
        let err = run(
            &parse("expect: never\n").unwrap(),
            &mut std::io::sink(),
            &transcript,
        );
        assert_eq!(
            err.unwrap_err(),
            "line 1: `expect: never`: the output ended first (QEMU exited)"
        );
    }
}
