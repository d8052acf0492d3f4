//! Disk images, the QEMU command line, and what QEMU's exit status means.

use crate::filter::SerialFilter;
use crate::options::{Firmware, Options};
use crate::screen::{LineTap, Session};
use crate::script::{self, Transcript};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// I/O port of the `isa-debug-exit` device every run adds. The kernel's side of this
/// protocol is `kernel/src/qemu.rs`; a test below checks that both say the same.
pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;
/// What the kernel writes to `isa-debug-exit` on success (`QemuExitCode::Success`).
pub const EXIT_SUCCESS_VALUE: i32 = 0x10;
/// What it writes on failure (`QemuExitCode::Failed`).
pub const EXIT_FAILURE_VALUE: i32 = 0x11;

/// Status QEMU exits with when the kernel writes [`EXIT_SUCCESS_VALUE`] to
/// `isa-debug-exit`: QEMU exits with `(value << 1) | 1`.
pub const QEMU_SUCCESS: i32 = (EXIT_SUCCESS_VALUE << 1) | 1;
/// Same for [`EXIT_FAILURE_VALUE`].
pub const QEMU_FAILURE: i32 = (EXIT_FAILURE_VALUE << 1) | 1;

/// The package names to install QEMU and OVMF on Debian.
pub const INSTALL_PACKAGES: &str = "qemu-system-x86 ovmf";

/// The command that installs QEMU and OVMF, for messages.
pub fn install_command() -> String {
    format!("sudo apt-get update && sudo apt-get install -y {INSTALL_PACKAGES}")
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel wrote the success code.
    Success,
    /// The kernel wrote the failure code.
    KernelFailed,
    /// QEMU exited 0: the guest never wrote an exit code. With `--no-reboot` a triple fault
    /// (or any reset) ends QEMU this way.
    NoExitCode,
    /// QEMU exited 1: its own error (bad arguments, missing file), or a kernel writing 0.
    QemuError,
    /// The kernel wrote a value other than 0x10/0x11.
    UnknownExitCode(u32),
    /// Some other status.
    OtherStatus(i32),
    /// QEMU was killed by a signal (e.g. Ctrl-C).
    Signal(i32),
    /// We killed QEMU after the timeout.
    TimedOut(Duration),
    /// A serial script step failed (and QEMU was stopped, if it still ran).
    ScriptFailed(String),
    /// A screendump could not be taken, or its pixels were not what the kernel expected.
    ScreenCheckFailed(String),
}

impl Outcome {
    /// Reads QEMU's exit status.
    pub fn from_status(status: ExitStatus) -> Outcome {
        match status.code() {
            Some(code) => Outcome::from_code(code),
            None => {
                use std::os::unix::process::ExitStatusExt;
                Outcome::Signal(status.signal().unwrap_or(0))
            }
        }
    }

    pub fn from_code(code: i32) -> Outcome {
        match code {
            QEMU_SUCCESS => Outcome::Success,
            QEMU_FAILURE => Outcome::KernelFailed,
            0 => Outcome::NoExitCode,
            1 => Outcome::QemuError,
            c if c > 1 && c % 2 == 1 => Outcome::UnknownExitCode((c as u32) >> 1),
            c => Outcome::OtherStatus(c),
        }
    }

    /// The status `boot` exits with: 0 only for success.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Success => 0,
            _ => 1,
        }
    }

    /// A sentence for the user; `None` for success.
    pub fn message(&self) -> Option<String> {
        Some(match self {
            Outcome::Success => return None,
            Outcome::KernelFailed => "the kernel reported failure (isa-debug-exit 0x11)".into(),
            Outcome::NoExitCode => "QEMU exited without an exit code from the kernel: the CPU \
                 reset (most likely a triple fault; --no-reboot turns a reset into an exit) or \
                 the guest powered off"
                .into(),
            Outcome::QemuError => "QEMU exited with status 1: a QEMU error (see its message \
                 above), or the kernel wrote 0 to isa-debug-exit"
                .into(),
            Outcome::UnknownExitCode(v) => {
                format!("the kernel wrote an unknown exit code {v:#x} to isa-debug-exit")
            }
            Outcome::OtherStatus(c) => format!("QEMU exited with unexpected status {c}"),
            Outcome::Signal(s) => format!("QEMU was killed by signal {s}"),
            Outcome::TimedOut(d) => format!(
                "timed out after {} s: QEMU killed (raise it with --timeout or BOOT_TIMEOUT)",
                fmt_secs(*d)
            ),
            Outcome::ScriptFailed(why) => format!("serial script failed at {why}"),
            Outcome::ScreenCheckFailed(why) => format!("screen check failed: {why}"),
        })
    }
}

pub fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

/// A short name for a kernel: cargo names test binaries `NAME-HASH`; drop the hash.
pub fn kernel_name(kernel: &Path) -> String {
    let name = kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| kernel.display().to_string());
    match name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem.to_string()
        }
        _ => name,
    }
}

/// Where the image for `kernel` goes: next to it, e.g. `kernel-bios.img`.
pub fn image_path(kernel: &Path, firmware: Firmware, boot_log: bool) -> PathBuf {
    let mut name = kernel.file_name().unwrap_or_default().to_os_string();
    name.push(match firmware {
        Firmware::Bios => "-bios",
        Firmware::Uefi => "-uefi",
    });
    if boot_log {
        name.push("-bootlog");
    }
    name.push(".img");
    kernel.with_file_name(name)
}

/// An image can be reused when it is at least as new as everything it is made from.
pub fn image_is_fresh(image: Option<SystemTime>, inputs: &[Option<SystemTime>]) -> bool {
    match image {
        None => false,
        Some(image) => inputs.iter().all(|input| input.is_some_and(|t| t <= image)),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Builds (or reuses) the disk image for `options.kernel` and returns its path.
pub fn build_image(options: &Options) -> Result<PathBuf, String> {
    let kernel = &options.kernel;
    let image = image_path(kernel, options.firmware, options.boot_log);
    // The boot tool's own binary stands for the bootloader version it embeds.
    let this_tool = std::env::current_exe().ok();
    let inputs = [modified(kernel), this_tool.as_deref().and_then(modified)];
    if image_is_fresh(modified(&image), &inputs) {
        return Ok(image);
    }

    let mut config = bootloader::BootConfig::default();
    if options.boot_log {
        config.log_level = bootloader::BootConfig::default().log_level;
    } else {
        // Keep the bootloader quiet on serial unless something goes wrong.
        config.log_level = bootloader_boot_config::LevelFilter::Warn;
    }
    // Build under a temporary name and rename, so a run that is interrupted, or two runs
    // at once, never leave a half-written image behind.
    let tmp = image.with_extension(format!("img.tmp{}", std::process::id()));
    let result = match options.firmware {
        Firmware::Bios => bootloader::BiosBoot::new(kernel)
            .set_boot_config(&config)
            .create_disk_image(&tmp),
        Firmware::Uefi => bootloader::UefiBoot::new(kernel)
            .set_boot_config(&config)
            .create_disk_image(&tmp),
    };
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "could not build the {} image of {}: {e:#}",
            options.firmware,
            kernel.display()
        ));
    }
    fs::rename(&tmp, &image).map_err(|e| format!("could not move image into place: {e}"))?;
    Ok(image)
}

/// The QEMU arguments for booting `image`.
pub fn qemu_args(options: &Options, image: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        // snapshot=on: QEMU never writes the image, so runs of one image can overlap.
        "-drive".into(),
        format!("format=raw,file={},snapshot=on", image.display()),
        // No default devices (CD-ROM, NIC: firmware would try to boot from them), but keep
        // a VGA card: the bootloader sets up a framebuffer on it.
        "-nodefaults".into(),
        "-vga".into(),
        "std".into(),
        "-display".into(),
        crate::screen::display(&options.screen),
        "-serial".into(),
        "stdio".into(),
        "--no-reboot".into(),
        "-device".into(),
        format!("isa-debug-exit,iobase={ISA_DEBUG_EXIT_PORT:#x},iosize=0x04"),
        "-m".into(),
        options.memory.clone(),
        "-smp".into(),
        options.smp.to_string(),
    ];
    if options.firmware == Firmware::Uefi {
        args.push("-bios".into());
        args.push(options.ovmf_path.display().to_string());
    }
    if options.kvm {
        args.extend(["-enable-kvm".into(), "-cpu".into(), "host".into()]);
    } else {
        // One host thread per guest CPU, so several CPUs really run at once.
        args.extend(["-accel".into(), "tcg,thread=multi".into()]);
    }
    args.extend(crate::screen::display_fw_cfg(&options.screen));
    args.extend(options.qemu_args.iter().cloned());
    args
}

/// Runs QEMU to the end or to the timeout.
pub fn run_qemu(options: &Options, image: &Path) -> Result<Outcome, String> {
    let mut args = qemu_args(options, image);
    // Screendumps need QEMU's monitor and the kernel's output lines (see `screen`).
    let screen = Session::start(&options.screen, image);
    if let Some(session) = &screen {
        args.extend(session.qemu_args());
    }
    let script = match &options.serial_script {
        Some(path) => Some(script::load(path)?),
        None => None,
    };
    // QEMU's `-serial stdio` reads stdin: a script's pipe, the terminal for --shell (QEMU
    // puts it in raw mode, so keys go through as typed), or nothing at all.
    let stdin = if script.is_some() {
        Stdio::piped()
    } else if options.shell {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    if options.shell && script.is_none() {
        eprintln!("boot: interactive: your keys go to the kernel's serial port; Ctrl-C stops QEMU");
    }
    let mut child = Command::new(&options.qemu_binary)
        .args(&args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!(
                "QEMU not found (`{}`). Install it with: {}  (or set BOOT_QEMU to its path)",
                options.qemu_binary,
                install_command()
            ),
            _ => format!("could not start QEMU (`{}`): {e}", options.qemu_binary),
        })?;

    // Forward the serial output as it comes, cleaned (see `filter`). The thread ends when
    // QEMU exits or is killed and the pipe closes.
    let serial = child.stdout.take().expect("stdout is piped");
    let transcript = Arc::new(Transcript::default());
    let seen = Arc::clone(&transcript);
    let lines = screen.as_ref().and_then(Session::line_sender);
    let forwarder = thread::spawn(move || {
        let result = forward(
            serial,
            &mut Tee {
                out: LineTap::new(io::stdout(), lines),
                transcript: &seen,
            },
        );
        seen.close();
        result
    });
    // The script types into QEMU's stdin; it hands the pipe back when it is done, and
    // the pipe stays open until QEMU exits.
    let mut script_thread = script.map(|script| {
        let mut input = child.stdin.take().expect("stdin is piped for a script");
        let seen = Arc::clone(&transcript);
        thread::spawn(move || (script::run(&script, &mut input, &seen), input))
    });
    let mut script_result = None;
    let mut _script_input = None;

    let started = Instant::now();
    let outcome = loop {
        if script_thread.as_ref().is_some_and(|t| t.is_finished()) {
            let (result, input) = script_thread
                .take()
                .expect("checked")
                .join()
                .map_err(|_| "the serial script thread panicked")?;
            _script_input = Some(input);
            if let Err(why) = result {
                let _ = child.kill();
                let _ = child.wait();
                break Outcome::ScriptFailed(why);
            }
            script_result = Some(result);
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for QEMU: {e}"))?
        {
            break Outcome::from_status(status);
        }
        if let Some(limit) = options.timeout
            && started.elapsed() >= limit
        {
            let _ = child.kill();
            let _ = child.wait();
            break Outcome::TimedOut(limit);
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = forwarder.join();
    // A wrong pixel fails a run that would otherwise succeed.
    let outcome = match screen.map(Session::finish) {
        Some(Err(why)) if outcome == Outcome::Success => Outcome::ScreenCheckFailed(why),
        Some(Err(why)) => {
            eprintln!("\nboot: screen check failed: {why}");
            outcome
        }
        _ => outcome,
    };
    // The output has ended, so a script still waiting gives up now.
    if let Some(t) = script_thread {
        let (result, _) = t.join().map_err(|_| "the serial script thread panicked")?;
        script_result = Some(result);
    }
    Ok(match script_result {
        Some(Err(why)) if outcome == Outcome::Success => Outcome::ScriptFailed(why),
        Some(Err(why)) => {
            eprintln!("\nboot: serial script failed at {why}");
            outcome
        }
        Some(Ok(done)) => {
            eprintln!(
                "boot: serial script: {} lines sent, {} expected answers seen",
                done.sent, done.matched
            );
            outcome
        }
        None => outcome,
    })
}

/// Writes to `out` and records what it wrote for a serial script.
struct Tee<'a, W: Write> {
    out: W,
    transcript: &'a Transcript,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.transcript.append(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Copies `input` to `output` through a [`SerialFilter`], flushing every chunk so output
/// appears as the kernel writes it.
fn forward(mut input: impl Read, output: &mut impl Write) -> io::Result<()> {
    let mut filter = SerialFilter::default();
    let mut buf = [0u8; 4096];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        filter.feed(&buf[..n], &mut out);
        output.write_all(&out)?;
        output.flush()?;
    }
    out.clear();
    filter.finish(&mut out);
    output.write_all(&out)?;
    output.flush()
}

#[cfg(test)]
mod tests {
    /// The kernel's side of the exit protocol (`kernel/src/qemu.rs`) names the same port
    /// and values as this side.
    #[test]
    fn exit_protocol_matches_the_kernel() {
        let kernel = include_str!("../../kernel/src/qemu.rs");
        let has = |line: &str| kernel.lines().any(|l| l.trim() == line);
        let port = format!(
            "pub const ISA_DEBUG_EXIT_PORT: u16 = {:#x};",
            super::ISA_DEBUG_EXIT_PORT
        );
        let ok = format!("Success = {:#x},", super::EXIT_SUCCESS_VALUE);
        let failed = format!("Failed = {:#x},", super::EXIT_FAILURE_VALUE);
        for line in [&port, &ok, &failed] {
            assert!(has(line), "kernel/src/qemu.rs does not say `{line}`");
        }
    }

    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(Outcome::from_code(33), Outcome::Success);
        assert_eq!(Outcome::from_code(35), Outcome::KernelFailed);
        assert_eq!(Outcome::from_code(0), Outcome::NoExitCode);
        assert_eq!(Outcome::from_code(1), Outcome::QemuError);
        assert_eq!(Outcome::from_code(5), Outcome::UnknownExitCode(2));
        assert_eq!(Outcome::from_code(2), Outcome::OtherStatus(2));
        assert_eq!(Outcome::from_code(33).exit_code(), 0);
        for code in [0, 1, 2, 5, 35, 255] {
            let outcome = Outcome::from_code(code);
            assert_eq!(outcome.exit_code(), 1, "{outcome:?}");
            assert!(outcome.message().is_some());
        }
        assert_eq!(Outcome::Success.message(), None);
        let timeout = Outcome::TimedOut(Duration::from_secs(30))
            .message()
            .unwrap();
        assert!(timeout.starts_with("timed out after 30 s"), "{timeout}");
        assert!(
            Outcome::NoExitCode
                .message()
                .unwrap()
                .contains("triple fault")
        );
    }

    #[test]
    fn exit_status_from_a_real_process() {
        let status = Command::new("sh").args(["-c", "exit 33"]).status().unwrap();
        assert_eq!(Outcome::from_status(status), Outcome::Success);
        let status = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(Outcome::from_status(status), Outcome::Signal(9));
    }

    #[test]
    fn names_of_kernels() {
        let test = Path::new("target/x86_64-target/debug/deps/basic_boot-0123456789abcdef");
        assert_eq!(kernel_name(test), "basic_boot");
        assert_eq!(kernel_name(Path::new("target/x/debug/kernel")), "kernel");
        assert_eq!(kernel_name(Path::new("my-kernel")), "my-kernel");
    }

    #[test]
    fn images_sit_next_to_the_kernel() {
        let kernel = Path::new("/t/debug/kernel");
        assert_eq!(
            image_path(kernel, Firmware::Bios, false),
            Path::new("/t/debug/kernel-bios.img")
        );
        assert_eq!(
            image_path(kernel, Firmware::Uefi, true),
            Path::new("/t/debug/kernel-uefi-bootlog.img")
        );
    }

    #[test]
    fn image_freshness() {
        let t = |s| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert!(image_is_fresh(t(10), &[t(5), t(10)]));
        assert!(
            !image_is_fresh(t(10), &[t(5), t(11)]),
            "kernel rebuilt after the image"
        );
        assert!(!image_is_fresh(None, &[t(5)]), "no image yet");
        assert!(
            !image_is_fresh(t(10), &[None]),
            "unknown input age: rebuild"
        );
    }

    #[test]
    fn qemu_command_line() {
        let options = Options {
            kernel: PathBuf::from("k"),
            firmware: Firmware::Uefi,
            memory: "1G".into(),
            smp: 2,
            timeout: None,
            kvm: false,
            boot_log: false,
            screen: Default::default(),
            shell: false,
            serial_script: None,
            images_only: false,
            qemu_args: vec!["-d".into(), "int".into()],
            ovmf_path: PathBuf::from("/fw/OVMF.fd"),
            qemu_binary: "qemu-system-x86_64".into(),
        };
        let args = qemu_args(&options, Path::new("k-uefi.img")).join(" ");
        assert_eq!(
            args,
            "-drive format=raw,file=k-uefi.img,snapshot=on -nodefaults -vga std -display none \
             -serial stdio \
             --no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 1G -smp 2 -bios \
             /fw/OVMF.fd -accel tcg,thread=multi -d int"
        );
    }

    #[test]
    fn missing_qemu_is_explained() {
        let options = Options {
            kernel: PathBuf::from("k"),
            firmware: Firmware::Bios,
            memory: "512M".into(),
            smp: 1,
            timeout: Some(Duration::from_secs(1)),
            kvm: false,
            boot_log: false,
            screen: Default::default(),
            shell: false,
            serial_script: None,
            images_only: false,
            qemu_args: vec![],
            ovmf_path: PathBuf::from("/nonexistent"),
            qemu_binary: "/nonexistent/qemu-system-x86_64".into(),
        };
        let err = run_qemu(&options, Path::new("k.img")).unwrap_err();
        assert!(err.starts_with("QEMU not found"), "{err}");
        assert!(
            err.contains("apt-get install -y qemu-system-x86 ovmf"),
            "{err}"
        );
    }

    #[test]
    fn forwarding_cleans_the_stream() {
        let mut out = Vec::new();
        forward(
            &b"\x1b[2Jboot\r\nkernel: 1 passed, 0 failed\n"[..],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"boot\nkernel: 1 passed, 0 failed\n");
    }

    #[test]
    fn a_hanging_qemu_times_out() {
        // `sleep` stands in for a QEMU that never exits; it ignores the arguments it gets.
        let options = Options {
            kernel: PathBuf::from("k"),
            firmware: Firmware::Bios,
            memory: "512M".into(),
            smp: 1,
            timeout: Some(Duration::from_millis(300)),
            kvm: false,
            boot_log: false,
            screen: Default::default(),
            shell: false,
            serial_script: None,
            images_only: false,
            qemu_args: vec![],
            ovmf_path: PathBuf::new(),
            qemu_binary: String::new(),
        };
        let dir = std::env::temp_dir().join(format!("boot-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("hanging-qemu");
        // Written by a child shell, not by this process: a test thread forking at the same
        // moment would inherit our write descriptor until its exec, and running the script
        // in that window fails with "Text file busy" (ETXTBSY).
        let written = Command::new("sh")
            .arg("-c")
            .arg("printf '#!/bin/sh\\nexec sleep 30\\n' > \"$1\" && chmod 755 \"$1\"")
            .arg("sh")
            .arg(&fake)
            .status()
            .unwrap();
        assert!(written.success());
        let options = Options {
            qemu_binary: fake.display().to_string(),
            ..options
        };
        let started = Instant::now();
        let outcome = run_qemu(&options, Path::new("k.img")).unwrap();
        assert_eq!(outcome, Outcome::TimedOut(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(10));
        fs::remove_dir_all(&dir).unwrap();
    }
}
