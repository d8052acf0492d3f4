//! The kernel's picture of memory, seen from the host: screendumps through QEMU's
//! monitor, and a check of the pixels the kernel says to expect.
//!
//! How it goes (the kernel's half is `kernel/src/screen/host.rs`):
//! 1. `boot` starts QEMU with a monitor on a Unix socket and the fw_cfg file
//!    `opt/kernel/screendump`, which tells the kernel a screendump is wanted.
//! 2. The kernel draws, may print lines `screen: expect X Y RRGGBB WHAT` (a pixel and its
//!    colour), prints `screen: drawn` and waits for a key press.
//! 3. On that line `boot` sends `screendump FILE` to the monitor (a PPM; and a PNG with
//!    `-f png` if the file asked for ends in `.png`), checks the expected pixels in the
//!    PPM if asked to, then presses a key (`sendkey ret`) so the kernel goes on.
//! 4. When QEMU has exited, a wrong pixel (or expectations without a screendump) turns
//!    the run into a failure.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The line after which the kernel waits for the screendump.
pub const MARKER: &str = "screen: drawn";
/// The start of a line naming a pixel to check.
pub const EXPECT_PREFIX: &str = "screen: expect ";
/// fw_cfg file that asks the kernel for [`MARKER`].
pub const SCREENDUMP_FW_CFG: &str = "opt/kernel/screendump";
/// fw_cfg file that tells the kernel someone watches in a window.
pub const DISPLAY_FW_CFG: &str = "opt/kernel/display";
/// How long a monitor command may take.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(20);

/// The screen settings of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScreenOptions {
    /// QEMU display backend for a window (`gtk`, `sdl`, ...); `None`: headless.
    pub display: Option<String>,
    /// Where to write a screendump: PNG if the name ends in `.png`, PPM otherwise.
    pub screendump: Option<PathBuf>,
    /// Check the pixels the kernel names against the screendump.
    pub check: bool,
}

impl ScreenOptions {
    /// Whether the run needs the monitor and the kernel's marker.
    pub fn wants_screendump(&self) -> bool {
        self.screendump.is_some() || self.check
    }
}

/// The value of QEMU's `-display`: the window's UI, or `none`.
pub fn display(options: &ScreenOptions) -> String {
    options.display.clone().unwrap_or_else(|| "none".into())
}

/// With a window, the fw_cfg file that tells the kernel someone watches.
pub fn display_fw_cfg(options: &ScreenOptions) -> Vec<String> {
    match &options.display {
        None => Vec::new(),
        Some(_) => vec!["-fw_cfg".into(), format!("name={DISPLAY_FW_CFG},string=1")],
    }
}

/// Refuses a window that cannot open: GTK and SDL need a graphical session. `has_var`
/// says whether an environment variable is set.
pub fn check_display(
    options: &ScreenOptions,
    has_var: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    match options.display.as_deref() {
        Some(ui @ ("gtk" | "sdl")) if !has_var("DISPLAY") && !has_var("WAYLAND_DISPLAY") => {
            Err(format!(
                "--display needs a graphical session for its {ui} window (DISPLAY and \
                 WAYLAND_DISPLAY are unset). Headless, save the screen instead: \
                 --screendump FILE.png"
            ))
        }
        _ => Ok(()),
    }
}

/// A pixel the kernel expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub x: usize,
    pub y: usize,
    /// `0xRRGGBB`.
    pub rgb: u32,
    /// What the pixel shows, for messages.
    pub what: String,
}

/// Reads a `screen: expect X Y RRGGBB WHAT` line; `None` for any other line. Text
/// before the prefix is skipped: a kernel test's name may still be on the line.
pub fn parse_expectation(line: &str) -> Option<Result<Expectation, String>> {
    let rest = &line[line.find(EXPECT_PREFIX)? + EXPECT_PREFIX.len()..];
    let mut fields = rest.splitn(4, ' ');
    let mut next = || fields.next().unwrap_or("");
    let (x, y, hex, what) = (next(), next(), next(), next());
    Some(match (x.parse(), y.parse(), u32::from_str_radix(hex, 16)) {
        (Ok(x), Ok(y), Ok(rgb)) if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Expectation {
                x,
                y,
                rgb,
                what: what.trim().to_string(),
            })
        }
        _ => Err(format!("not `{EXPECT_PREFIX}X Y RRGGBB WHAT`: `{line}`")),
    })
}

/// An RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// Three bytes a pixel, rows top first.
    pub rgb: Vec<u8>,
}

impl Image {
    /// The colour at `(x, y)` as `0xRRGGBB`.
    pub fn pixel(&self, x: usize, y: usize) -> Option<u32> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y * self.width + x) * 3;
        let p = &self.rgb[i..i + 3];
        Some(u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
    }
}

/// Reads a binary PPM (`P6`, 8 bits a channel), the format of QEMU's `screendump`.
pub fn parse_ppm(data: &[u8]) -> Result<Image, String> {
    // The header: magic, width, height, maximum value, separated by whitespace (and
    // `#` comments), then one whitespace byte before the pixels.
    let mut at = 0;
    let mut fields = Vec::new();
    while fields.len() < 4 {
        while at < data.len() && (data[at].is_ascii_whitespace() || data[at] == b'#') {
            if data[at] == b'#' {
                while at < data.len() && data[at] != b'\n' {
                    at += 1;
                }
            } else {
                at += 1;
            }
        }
        let start = at;
        while at < data.len() && !data[at].is_ascii_whitespace() {
            at += 1;
        }
        if start == at {
            return Err("truncated PPM header".into());
        }
        fields.push(String::from_utf8_lossy(&data[start..at]).into_owned());
    }
    if fields[0] != "P6" {
        return Err(format!("not a binary PPM (magic `{}`)", fields[0]));
    }
    let number = |s: &str, what: &str| {
        s.parse::<usize>()
            .map_err(|_| format!("bad PPM {what} `{s}`"))
    };
    let (width, height) = (number(&fields[1], "width")?, number(&fields[2], "height")?);
    if number(&fields[3], "maximum value")? != 255 {
        return Err(format!(
            "PPM maximum value {} (only 255 is read)",
            fields[3]
        ));
    }
    let pixels = at + 1;
    let len = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(3))
        .ok_or("PPM size overflows")?;
    let rgb = data
        .get(pixels..pixels + len)
        .ok_or_else(|| format!("PPM of {width}x{height} has only {} bytes", data.len()))?;
    Ok(Image {
        width,
        height,
        rgb: rgb.to_vec(),
    })
}

/// Compares the expected pixels with `image`; returns how many matched, or one line per
/// pixel that differs.
pub fn check(image: &Image, expected: &[Expectation]) -> Result<usize, Vec<String>> {
    let wrong: Vec<String> = expected
        .iter()
        .filter_map(|e| match image.pixel(e.x, e.y) {
            Some(rgb) if rgb == e.rgb => None,
            Some(rgb) => Some(format!(
                "pixel ({}, {}) is #{rgb:06x}, expected #{:06x} ({})",
                e.x, e.y, e.rgb, e.what
            )),
            None => Some(format!(
                "pixel ({}, {}) lies outside the {}x{} screendump ({})",
                e.x, e.y, image.width, image.height, e.what
            )),
        })
        .collect();
    if wrong.is_empty() {
        Ok(expected.len())
    } else {
        Err(wrong)
    }
}

/// A connection to QEMU's human monitor (HMP).
pub struct Monitor {
    stream: UnixStream,
}

impl Monitor {
    /// Connects to the monitor socket and reads its greeting.
    pub fn connect(socket: &Path) -> Result<Monitor, String> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| format!("cannot connect to QEMU's monitor {}: {e}", socket.display()))?;
        stream
            .set_read_timeout(Some(MONITOR_TIMEOUT))
            .map_err(|e| format!("monitor socket: {e}"))?;
        let mut monitor = Monitor { stream };
        monitor.read_to_prompt()?;
        Ok(monitor)
    }

    /// Runs `command` and returns what the monitor printed before its next prompt.
    pub fn command(&mut self, command: &str) -> Result<String, String> {
        self.stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("monitor: sending `{command}`: {e}"))?;
        self.read_to_prompt()
            .map_err(|e| format!("monitor: `{command}`: {e}"))
    }

    /// Reads until the prompt `(qemu) `; it follows every command's output.
    fn read_to_prompt(&mut self) -> Result<String, String> {
        let mut text = Vec::new();
        let mut buf = [0u8; 1024];
        while !text.ends_with(b"(qemu) ") {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the monitor closed the connection".into()),
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("no prompt from the monitor: {e}")),
            }
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}

/// Writes a screendump of the current screen to `path` through `monitor`, as PNG or PPM.
fn screendump(monitor: &mut Monitor, path: &Path, png: bool) -> Result<(), String> {
    let _ = fs::remove_file(path);
    let format = if png { " -f png" } else { "" };
    let answer = monitor.command(&format!("screendump {}{format}", path.display()))?;
    match fs::metadata(path) {
        Ok(m) if m.len() > 0 => Ok(()),
        _ => Err(format!(
            "QEMU wrote no screendump to {}: {}",
            path.display(),
            answer.replace("(qemu) ", "").trim()
        )),
    }
}

/// What happened during a run.
#[derive(Debug, Default)]
struct Report {
    dumps: usize,
    checked: usize,
    /// Expectations printed after the last marker.
    pending: Vec<Expectation>,
    errors: Vec<String>,
}

/// The screendump and check of one QEMU run: a thread that reads the kernel's output
/// lines and talks to the monitor.
pub struct Session {
    socket: PathBuf,
    lines: Option<Sender<String>>,
    worker: JoinHandle<Report>,
    check: bool,
}

impl Session {
    /// Starts a session if `options` want a screendump. `image` is the disk image the
    /// run boots; the PPM for the check goes next to it unless a `.ppm` file is asked for.
    pub fn start(options: &ScreenOptions, image: &Path) -> Option<Session> {
        if !options.wants_screendump() {
            return None;
        }
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let socket = std::env::temp_dir().join(format!(
            "boot-monitor-{}-{}.sock",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_file(&socket);
        let asked = options.screendump.clone();
        let png = asked
            .as_ref()
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
            .cloned();
        let ppm = match &asked {
            Some(p) if png.is_none() => p.clone(),
            _ => image.with_extension("screen.ppm"),
        };
        let (tx, rx) = mpsc::channel();
        let worker_socket = socket.clone();
        let check = options.check;
        let worker = thread::spawn(move || watch(rx, &worker_socket, &ppm, png.as_deref(), check));
        Some(Session {
            socket,
            lines: Some(tx),
            worker,
            check,
        })
    }

    /// QEMU arguments: the monitor socket and the fw_cfg file that asks for the marker.
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", self.socket.display()),
            "-fw_cfg".into(),
            format!("name={SCREENDUMP_FW_CFG},string=1"),
        ]
    }

    /// Where the kernel's output lines go.
    pub fn line_sender(&self) -> Option<Sender<String>> {
        self.lines.clone()
    }

    /// Waits for the session to see the end of the output (every sender dropped, which
    /// happens when QEMU exits) and returns `Err` with the reasons if the run must fail.
    pub fn finish(mut self) -> Result<(), String> {
        self.lines = None;
        let report = self.worker.join().unwrap_or_else(|_| Report {
            errors: vec!["the screendump thread panicked".into()],
            ..Report::default()
        });
        let _ = fs::remove_file(&self.socket);
        let mut errors = report.errors;
        if self.check && !report.pending.is_empty() {
            errors.push(format!(
                "the kernel named {} pixels to check but printed no `{MARKER}` after them",
                report.pending.len()
            ));
        }
        if errors.is_empty() {
            if self.check && report.checked > 0 {
                eprintln!("boot: screen check: {} pixels as expected", report.checked);
            }
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The session's thread: collects expectations, and at each marker takes the
/// screendump, checks it, and lets the kernel go on.
fn watch(
    lines: Receiver<String>,
    socket: &Path,
    ppm: &Path,
    png: Option<&Path>,
    check: bool,
) -> Report {
    let mut report = Report::default();
    for line in lines {
        if let Some(parsed) = parse_expectation(&line) {
            match parsed {
                Ok(e) => report.pending.push(e),
                Err(e) => report.errors.push(e),
            }
            continue;
        }
        if line.trim_end() != MARKER {
            continue;
        }
        let expected = std::mem::take(&mut report.pending);
        let result = Monitor::connect(socket).and_then(|mut monitor| {
            let dumped = screendump(&mut monitor, ppm, false).and_then(|()| match png {
                Some(png) => screendump(&mut monitor, png, true),
                None => Ok(()),
            });
            // Let the kernel go on in any case.
            let key = monitor.command("sendkey ret").map(drop);
            dumped.and(key)
        });
        match result {
            Ok(()) => {
                report.dumps += 1;
                eprintln!(
                    "boot: screendump written to {}",
                    png.unwrap_or(ppm).display()
                );
                if check {
                    match fs::read(ppm)
                        .map_err(|e| format!("cannot read {}: {e}", ppm.display()))
                        .and_then(|data| parse_ppm(&data))
                    {
                        Ok(image) => match self::check(&image, &expected) {
                            Ok(n) => report.checked += n,
                            Err(wrong) => report.errors.extend(wrong),
                        },
                        Err(e) => report.errors.push(format!("{}: {e}", ppm.display())),
                    }
                }
            }
            Err(e) => report.errors.push(e),
        }
    }
    report
}

/// A writer that passes everything to `inner` and sends each complete line (without its
/// `\n`) to a [`Session`].
pub struct LineTap<W: Write> {
    inner: W,
    lines: Option<Sender<String>>,
    partial: Vec<u8>,
}

impl<W: Write> LineTap<W> {
    pub fn new(inner: W, lines: Option<Sender<String>>) -> Self {
        LineTap {
            inner,
            lines,
            partial: Vec::new(),
        }
    }
}

impl<W: Write> Write for LineTap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(lines) = &self.lines {
            for &b in &buf[..n] {
                if b == b'\n' {
                    let line = String::from_utf8_lossy(&self.partial).into_owned();
                    self.partial.clear();
                    // A session that stopped listening no longer needs lines.
                    let _ = lines.send(line);
                } else {
                    self.partial.push(b);
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn ppm(width: usize, height: usize, pixels: &[u32]) -> Vec<u8> {
        let mut data = format!("P6\n# made by a test\n{width} {height}\n255\n").into_bytes();
        for p in pixels {
            data.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
        }
        data
    }

    #[test]
    fn ppm_images() {
        let image = parse_ppm(&ppm(2, 2, &[0x010203, 0xffffff, 0, 0xe03c31])).unwrap();
        assert_eq!((image.width, image.height), (2, 2));
        assert_eq!(image.pixel(0, 0), Some(0x010203));
        assert_eq!(image.pixel(1, 1), Some(0xe03c31));
        assert_eq!(image.pixel(2, 0), None);
        assert!(
            parse_ppm(b"P3\n1 1\n255\n0 0 0")
                .unwrap_err()
                .contains("magic")
        );
        assert!(
            parse_ppm(b"P6\n2 2\n255\n\x00")
                .unwrap_err()
                .contains("only")
        );
        assert!(parse_ppm(b"P6\n2").unwrap_err().contains("truncated"));
        assert!(
            parse_ppm(b"P6 1 1 65535 \0\0\0\0\0\0")
                .unwrap_err()
                .contains("maximum")
        );
    }

    #[test]
    fn expectation_lines() {
        let e = parse_expectation("screen: expect 12 34 e03c31 full: cell 5 (0x140000)")
            .unwrap()
            .unwrap();
        assert_eq!((e.x, e.y, e.rgb), (12, 34, 0xe03c31));
        assert_eq!(e.what, "full: cell 5 (0x140000)");
        let after_name = parse_expectation("screen::t...\tscreen: expect 1 2 00ff00 free");
        assert_eq!(after_name.unwrap().unwrap().rgb, 0x00ff00);
        assert_eq!(parse_expectation("screen: drawn"), None);
        assert_eq!(parse_expectation("kernel: 1 passed, 0 failed"), None);
        for bad in [
            "screen: expect 12 34",
            "screen: expect x 34 e03c31 full",
            "screen: expect 1 2 1234567 full",
            "screen: expect 1 2 12345 full",
        ] {
            assert!(parse_expectation(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn checking_pixels() {
        let image = parse_ppm(&ppm(2, 1, &[0x2ecc40, 0x101820])).unwrap();
        let e = |x, y, rgb| Expectation {
            x,
            y,
            rgb,
            what: "w".into(),
        };
        assert_eq!(
            check(&image, &[e(0, 0, 0x2ecc40), e(1, 0, 0x101820)]),
            Ok(2)
        );
        let wrong = check(&image, &[e(0, 0, 0xe03c31), e(5, 5, 0), e(1, 0, 0x101820)]).unwrap_err();
        assert_eq!(
            wrong,
            [
                "pixel (0, 0) is #2ecc40, expected #e03c31 (w)",
                "pixel (5, 5) lies outside the 2x1 screendump (w)"
            ]
        );
    }

    #[test]
    fn line_tap_passes_output_and_sends_lines() {
        let (tx, rx) = mpsc::channel();
        let mut out = Vec::new();
        let mut tap = LineTap::new(&mut out, Some(tx));
        tap.write_all(b"one\ntw").unwrap();
        tap.write_all(b"o\nrest").unwrap();
        drop(tap);
        assert_eq!(out, b"one\ntwo\nrest");
        assert_eq!(rx.iter().collect::<Vec<_>>(), ["one", "two"]);
    }

    #[test]
    fn display_arguments() {
        assert_eq!(display(&ScreenOptions::default()), "none");
        assert!(display_fw_cfg(&ScreenOptions::default()).is_empty());
        let window = ScreenOptions {
            display: Some("gtk".into()),
            ..ScreenOptions::default()
        };
        assert_eq!(display(&window), "gtk");
        assert_eq!(
            display_fw_cfg(&window).join(" "),
            "-fw_cfg name=opt/kernel/display,string=1"
        );
    }

    #[test]
    fn a_window_needs_a_graphical_session() {
        let window = ScreenOptions {
            display: Some("gtk".into()),
            ..ScreenOptions::default()
        };
        let err = check_display(&window, &|_| false).unwrap_err();
        assert!(err.contains("--screendump FILE.png"), "{err}");
        assert_eq!(check_display(&window, &|v| v == "WAYLAND_DISPLAY"), Ok(()));
        assert_eq!(check_display(&ScreenOptions::default(), &|_| false), Ok(()));
        let curses = ScreenOptions {
            display: Some("curses".into()),
            ..ScreenOptions::default()
        };
        assert_eq!(check_display(&curses, &|_| false), Ok(()));
    }

    /// A stand-in for QEMU's monitor: greets, answers each command with a prompt,
    /// writes a PPM for `screendump`, and records the commands.
    fn fake_monitor(socket: PathBuf, image: Vec<u8>) -> JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(&socket).unwrap();
        thread::spawn(move || {
            let mut commands = Vec::new();
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ")
                .unwrap();
            let mut pending = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let cmd = String::from_utf8(pending.drain(..=end).collect()).unwrap();
                    let cmd = cmd.trim().to_string();
                    if let Some(path) = cmd.strip_prefix("screendump ") {
                        let path = path.trim_end_matches(" -f png");
                        fs::write(path, &image).unwrap();
                    }
                    // QEMU echoes the command, then prompts again.
                    conn.write_all(format!("{cmd}\r\n(qemu) ").as_bytes())
                        .unwrap();
                    commands.push(cmd);
                }
            }
            commands
        })
    }

    #[test]
    fn a_session_dumps_at_the_marker_checks_and_presses_a_key() {
        let dir = std::env::temp_dir().join(format!("boot-screen-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let options = ScreenOptions {
            display: None,
            screendump: Some(dir.join("shot.png")),
            check: true,
        };
        let session = Session::start(&options, &dir.join("k-bios.img")).unwrap();
        let monitor = fake_monitor(session.socket.clone(), ppm(2, 1, &[0x2ecc40, 0x101820]));
        let mut out = Vec::new();
        let mut tap = LineTap::new(&mut out, session.line_sender());
        tap.write_all(b"screen: expect 0 0 2ecc40 free\nscreen: expect 1 0 101820 gap\n")
            .unwrap();
        tap.write_all(b"screen: drawn\nkernel: 1 passed, 0 failed\n")
            .unwrap();
        drop(tap);
        assert_eq!(session.finish(), Ok(()));
        let ppm_path = dir.join("k-bios.screen.ppm");
        assert_eq!(
            monitor.join().unwrap(),
            [
                format!("screendump {}", ppm_path.display()),
                format!("screendump {} -f png", dir.join("shot.png").display()),
                "sendkey ret".to_string(),
            ]
        );
        assert!(ppm_path.is_file() && dir.join("shot.png").is_file());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wrong_pixel_or_a_missing_marker_fails_the_session() {
        let dir = std::env::temp_dir().join(format!("boot-screen-fail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let options = ScreenOptions {
            check: true,
            ..ScreenOptions::default()
        };
        let session = Session::start(&options, &dir.join("k-bios.img")).unwrap();
        let monitor = fake_monitor(session.socket.clone(), ppm(1, 1, &[0x2ecc40]));
        let tx = session.line_sender().unwrap();
        tx.send("screen: expect 0 0 e03c31 full: cell 3".into())
            .unwrap();
        tx.send(MARKER.into()).unwrap();
        tx.send("screen: expect 0 0 2ecc40 never dumped".into())
            .unwrap();
        drop(tx);
        let err = session.finish().unwrap_err();
        assert!(
            err.contains("pixel (0, 0) is #2ecc40, expected #e03c31 (full: cell 3)"),
            "{err}"
        );
        assert!(
            err.contains("printed no `screen: drawn` after them"),
            "{err}"
        );
        assert_eq!(monitor.join().unwrap().last().unwrap(), "sendkey ret");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_session_without_a_screendump() {
        assert!(Session::start(&ScreenOptions::default(), Path::new("k.img")).is_none());
        let headless_window = ScreenOptions {
            display: Some("sdl".into()),
            ..ScreenOptions::default()
        };
        assert!(Session::start(&headless_window, Path::new("k.img")).is_none());
    }
}
