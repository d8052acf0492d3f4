//! Command line and environment of the `boot` tool.
//!
//! Every option can come from a flag or from an environment variable; a flag wins. The
//! variables let a script choose QEMU settings for a kernel test run through cargo, where
//! the command line is cargo's.

use crate::screen::ScreenOptions;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default guest memory.
pub const DEFAULT_MEMORY: &str = "512M";
/// Default timeout: boots take seconds here, so a run this long has hung.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// QEMU display for `--display` without a value.
pub const DEFAULT_DISPLAY: &str = "gtk";
/// Least guest memory `boot` accepts for a UEFI run of a debug kernel: with less, the UEFI
/// bootloader runs out of memory loading the kernel file and the run hangs until its
/// timeout. Measured with QEMU 7.2 and Debian's OVMF: an 8.3 MiB debug kernel boots at
/// 62M and not at 61M; the limit leaves room for the kernel to grow.
pub const UEFI_MIN_MEMORY_DEBUG_MIB: u64 = 64;
/// The same for a release kernel (a 0.3 MiB file: boots at 42M, not at 40M).
pub const UEFI_MIN_MEMORY_RELEASE_MIB: u64 = 48;
/// Default UEFI firmware (Debian's `ovmf` package).
pub const DEFAULT_OVMF_PATH: &str = "/usr/share/ovmf/OVMF.fd";

pub const USAGE: &str = "\
boot: build a BIOS or UEFI disk image of a kernel ELF and run it in QEMU (headless)

Usage: boot [OPTIONS] <KERNEL_ELF> [OPTIONS] [-- QEMU_ARGS...]

It is the cargo runner for the kernel and every kernel test (see .cargo/config.toml), so
`cargo krun -- OPTIONS` and `cargo ktest` reach it. Exit status: 0 when the kernel reports
success through isa-debug-exit, 1 on anything else (kernel failure, timeout, triple fault,
QEMU missing or failing), 2 on bad usage.

Options (environment variable in brackets; a flag wins over the variable):
  --uefi             boot through UEFI firmware (OVMF) instead of BIOS   [BOOT_UEFI=1]
  --bios             boot through BIOS (the default)                      [BOOT_UEFI=0]
  --memory SIZE      guest memory, e.g. 128M, 1G, 5G (default 512M; at least
                     32M, and for UEFI 64M, or 48M for a release kernel)  [BOOT_MEMORY]
  --smp N            number of CPUs (default 1)                           [BOOT_SMP]
  --timeout SECS     kill QEMU and fail after SECS seconds; 0 = never
                     (default 30)                                         [BOOT_TIMEOUT]
  --qemu-arg ARG     pass ARG to QEMU (repeatable)        [BOOT_QEMU_ARGS, split on spaces]
  --kvm              use KVM (off by default: TCG is what the tests use)  [BOOT_KVM=1]
  --boot-log         let the bootloader log to serial at trace level      [BOOT_LOG=1]
  --shell            interactive: the terminal's keys go to the serial port, and
                     there is no timeout unless one is given              [BOOT_SHELL=1]
  --serial-script FILE
                     type FILE's `send:` lines into the serial port and wait for
                     its `expect:` lines in the output (see boot/src/script.rs);
                     the run fails if one is not seen     [BOOT_SERIAL_SCRIPT]
  --display[=UI]     show the screen in a window (QEMU's -display UI: gtk, the
                     default, or sdl); no timeout unless one is given, and
                     the kernel pauses so you can watch        [BOOT_DISPLAY=1|gtk|sdl]
  --screendump FILE  when the kernel prints `screen: drawn`, save the screen to
                     FILE (PNG if it ends in .png, else PPM)              [BOOT_SCREENDUMP]
  --screen-check     also check the pixels the kernel names in `screen: expect`
                     lines against that screendump; a wrong one fails the run
                     (see boot/src/screen.rs)                      [BOOT_SCREEN_CHECK=1]
  --images-only      build the disk image(s), print their paths, do not run
  -h, --help         show this help
  --                 everything after it goes to QEMU unchanged

libtest's flags that `cargo test` may pass (--quiet, --nocapture, --test-threads N, ...)
are accepted and ignored.

Other environment variables:
  OVMF_PATH          UEFI firmware file (default /usr/share/ovmf/OVMF.fd)
  BOOT_QEMU          QEMU binary (default qemu-system-x86_64)
";

/// libtest flags that `cargo test` may pass to a runner; ignored.
const LIBTEST_FLAGS: &[&str] = &[
    "-q",
    "--quiet",
    "--nocapture",
    "--no-capture",
    "--show-output",
    "--exact",
    "--ignored",
    "--include-ignored",
];
/// libtest options with a value; ignored with their value.
const LIBTEST_OPTIONS: &[&str] = &["--test-threads", "--color", "--format"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::Bios => "BIOS",
            Firmware::Uefi => "UEFI",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub kernel: PathBuf,
    pub firmware: Firmware,
    /// In QEMU's `-m` syntax, e.g. `512M`.
    pub memory: String,
    pub smp: u32,
    /// `None`: no timeout.
    pub timeout: Option<Duration>,
    pub kvm: bool,
    pub boot_log: bool,
    /// Window, screendump and pixel check.
    pub screen: ScreenOptions,
    /// Interactive: QEMU reads the terminal.
    pub shell: bool,
    /// A script to drive the serial console with.
    pub serial_script: Option<PathBuf>,
    pub images_only: bool,
    pub qemu_args: Vec<String>,
    pub ovmf_path: PathBuf,
    pub qemu_binary: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Run(Box<Options>),
}

/// A usage error, shown with a pointer to `--help`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Parses `args` (without the program name), reading environment variables through `env`.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, UsageError> {
    // Start from the environment, then let flags override it.
    let env_nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut firmware = match env_nonempty("BOOT_UEFI") {
        Some(v) if parse_bool("BOOT_UEFI", &v)? => Firmware::Uefi,
        _ => Firmware::Bios,
    };
    let mut memory = match env_nonempty("BOOT_MEMORY") {
        Some(v) => parse_memory(&v).map_err(|e| usage(format!("BOOT_MEMORY: {e}")))?,
        None => DEFAULT_MEMORY.to_string(),
    };
    let mut smp = match env_nonempty("BOOT_SMP") {
        Some(v) => parse_smp(&v).map_err(|e| usage(format!("BOOT_SMP: {e}")))?,
        None => 1,
    };
    let mut timeout_given = env_nonempty("BOOT_TIMEOUT").is_some();
    let mut timeout = match env_nonempty("BOOT_TIMEOUT") {
        Some(v) => parse_timeout(&v).map_err(|e| usage(format!("BOOT_TIMEOUT: {e}")))?,
        None => Some(Duration::from_secs(DEFAULT_TIMEOUT_SECS)),
    };
    let mut kvm = match env_nonempty("BOOT_KVM") {
        Some(v) => parse_bool("BOOT_KVM", &v)?,
        None => false,
    };
    let mut screen = ScreenOptions {
        display: match env_nonempty("BOOT_DISPLAY") {
            Some(v) => parse_display("BOOT_DISPLAY", &v)?,
            None => None,
        },
        screendump: env_nonempty("BOOT_SCREENDUMP").map(PathBuf::from),
        check: match env_nonempty("BOOT_SCREEN_CHECK") {
            Some(v) => parse_bool("BOOT_SCREEN_CHECK", &v)?,
            None => false,
        },
    };
    let mut boot_log = match env_nonempty("BOOT_LOG") {
        Some(v) => parse_bool("BOOT_LOG", &v)?,
        None => false,
    };
    let mut shell = match env_nonempty("BOOT_SHELL") {
        Some(v) => parse_bool("BOOT_SHELL", &v)?,
        None => false,
    };
    let mut serial_script = env_nonempty("BOOT_SERIAL_SCRIPT").map(PathBuf::from);
    let mut qemu_args: Vec<String> = env("BOOT_QEMU_ARGS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mut images_only = false;
    let mut kernel: Option<PathBuf> = None;

    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        // Accept `--flag=value` as well as `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value_of = |flag: &str| match &inline {
            Some(v) => Ok(v.clone()),
            None => value(flag),
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "--uefi" => firmware = Firmware::Uefi,
            "--bios" => firmware = Firmware::Bios,
            "--kvm" => kvm = true,
            "--boot-log" => boot_log = true,
            // The window's UI is optional: only `--display=UI` gives one.
            "--display" => {
                screen.display = match &inline {
                    Some(v) => parse_display("--display", v)?,
                    None => Some(DEFAULT_DISPLAY.to_string()),
                }
            }
            "--screendump" => screen.screendump = Some(PathBuf::from(value_of("--screendump")?)),
            "--screen-check" => screen.check = true,
            "--shell" => shell = true,
            "--serial-script" => serial_script = Some(PathBuf::from(value_of("--serial-script")?)),
            "--images-only" => images_only = true,
            "--memory" | "-m" => {
                let v = value_of("--memory")?;
                memory = parse_memory(&v).map_err(|e| usage(format!("--memory: {e}")))?;
            }
            "--smp" => {
                let v = value_of("--smp")?;
                smp = parse_smp(&v).map_err(|e| usage(format!("--smp: {e}")))?;
            }
            "--timeout" => {
                let v = value_of("--timeout")?;
                timeout = parse_timeout(&v).map_err(|e| usage(format!("--timeout: {e}")))?;
                timeout_given = true;
            }
            "--qemu-arg" => qemu_args.push(value_of("--qemu-arg")?),
            // `cargo test` hands libtest's flags to the runner (e.g. `cargo ktest -q` adds
            // `--quiet`). They mean nothing to a kernel test run; accept and ignore them.
            f if LIBTEST_FLAGS.contains(&f) => {}
            f if LIBTEST_OPTIONS.contains(&f) => {
                value_of(f)?;
            }
            "--" => {
                qemu_args.extend(it.by_ref().cloned());
                break;
            }
            _ if flag.starts_with('-') => {
                return Err(usage(format!("unknown option `{arg}`")));
            }
            _ => {
                if let Some(first) = &kernel {
                    return Err(usage(format!(
                        "one kernel only: got `{}` and `{arg}` (QEMU arguments go after `--`; \
                         kernel tests cannot be filtered by name)",
                        first.display()
                    )));
                }
                kernel = Some(PathBuf::from(arg));
            }
        }
    }

    let kernel = kernel.ok_or_else(|| usage("no kernel ELF given"))?;
    if firmware == Firmware::Uefi {
        check_uefi_memory(&memory, &kernel)?;
    }
    // A person at the console takes their time.
    if shell && !timeout_given {
        timeout = None;
    }
    // Nor does someone watching the screen.
    if screen.display.is_some() && !timeout_given {
        timeout = None;
    }
    Ok(Command::Run(Box::new(Options {
        kernel,
        firmware,
        memory,
        smp,
        timeout,
        kvm,
        boot_log,
        screen,
        shell,
        serial_script,
        images_only,
        qemu_args,
        ovmf_path: env_nonempty("OVMF_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_OVMF_PATH)),
        qemu_binary: env_nonempty("BOOT_QEMU").unwrap_or_else(|| "qemu-system-x86_64".to_string()),
    })))
}

/// `1`/`yes`/... for the default UI, `0`/`no`/`none`/... for no window, or a UI's name.
fn parse_display(name: &str, v: &str) -> Result<Option<String>, UsageError> {
    let v = v.trim().to_ascii_lowercase();
    match v.as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(DEFAULT_DISPLAY.to_string())),
        "0" | "false" | "no" | "off" | "none" => Ok(None),
        ui if !ui.is_empty() && ui.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') => {
            Ok(Some(v))
        }
        _ => Err(usage(format!(
            "{name}: expected a QEMU display such as gtk or sdl, got `{v}`"
        ))),
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, UsageError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(usage(format!("{name}: expected 1 or 0, got `{v}`"))),
    }
}

/// Checks a memory size and returns it in QEMU's `-m` syntax: a number with a binary suffix
/// `K`, `M`, `G` or `T` (`KiB`/`KB` etc. accepted); no suffix means MiB, as in QEMU.
pub fn parse_memory(v: &str) -> Result<String, String> {
    let v = v.trim();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, suffix) = v.split_at(digits_end);
    let bad = || format!("`{v}` is not a size like 128M, 1G or 4G");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let (unit, shift) = match suffix.to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => ("M", 20),
        "K" | "KB" | "KIB" => ("K", 10),
        "G" | "GB" | "GIB" => ("G", 30),
        "T" | "TB" | "TIB" => ("T", 40),
        _ => return Err(bad()),
    };
    let bytes = number
        .checked_shl(shift)
        .filter(|b| b >> shift == number)
        .ok_or_else(bad)?;
    // The bootloader and kernel need a few MiB; below this QEMU boots nothing useful.
    if bytes < 32 << 20 {
        return Err(format!("`{v}` is too small: give at least 32M"));
    }
    Ok(format!("{number}{unit}"))
}

/// The bytes of a size in the form [`parse_memory`] returns.
fn memory_bytes(v: &str) -> u64 {
    let (number, unit) = v.split_at(v.len() - 1);
    let shift = match unit {
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => 40,
    };
    number.parse::<u64>().map_or(u64::MAX, |n| n << shift)
}

/// Refuses a UEFI run with less memory than the UEFI path needs to reach `kernel` (a
/// release build when its path has a `release` directory).
fn check_uefi_memory(memory: &str, kernel: &std::path::Path) -> Result<(), UsageError> {
    let release = kernel.components().any(|c| c.as_os_str() == "release");
    let (min_mib, build) = if release {
        (UEFI_MIN_MEMORY_RELEASE_MIB, "a release")
    } else {
        (UEFI_MIN_MEMORY_DEBUG_MIB, "a debug")
    };
    if memory_bytes(memory) < min_mib << 20 {
        return Err(usage(format!(
            "UEFI with {memory} of memory never reaches {build} kernel: the UEFI bootloader \
             runs out of memory loading it; give at least {min_mib}M, or boot through BIOS \
             (from 33M)"
        )));
    }
    Ok(())
}

fn parse_smp(v: &str) -> Result<u32, String> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=255).contains(&n) => Ok(n),
        _ => Err(format!("`{v}` is not a CPU count from 1 to 255")),
    }
}

/// Seconds, whole or with a fraction; 0 means no timeout.
fn parse_timeout(v: &str) -> Result<Option<Duration>, String> {
    let secs: f64 = v
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .ok_or_else(|| format!("`{v}` is not a number of seconds (0 = no timeout)"))?;
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Options, UsageError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args, &|name| env.get(name).cloned())? {
            Command::Run(options) => Ok(*options),
            Command::Help => panic!("unexpected help"),
        }
    }

    fn err(args: &[&str], env: &[(&str, &str)]) -> String {
        run(args, env).expect_err("should be rejected").0
    }

    #[test]
    fn defaults() {
        let o = run(&["target/kernel"], &[]).unwrap();
        assert_eq!(o.kernel, PathBuf::from("target/kernel"));
        assert_eq!(o.firmware, Firmware::Bios);
        assert_eq!(o.memory, "512M");
        assert_eq!(o.smp, 1);
        assert_eq!(o.timeout, Some(Duration::from_secs(30)));
        assert!(!o.kvm && !o.boot_log && !o.images_only && !o.shell);
        assert_eq!(o.serial_script, None);
        assert!(o.qemu_args.is_empty());
        assert_eq!(o.ovmf_path, PathBuf::from("/usr/share/ovmf/OVMF.fd"));
        assert_eq!(o.qemu_binary, "qemu-system-x86_64");
    }

    #[test]
    fn flags_before_and_after_the_kernel() {
        let o = run(
            &[
                "--uefi",
                "k",
                "--memory",
                "4G",
                "--smp=2",
                "--timeout",
                "2.5",
                "--kvm",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(o.firmware, Firmware::Uefi);
        assert_eq!(o.memory, "4G");
        assert_eq!(o.smp, 2);
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert!(o.kvm);
    }

    #[test]
    fn everything_after_double_dash_goes_to_qemu() {
        let o = run(&["k", "--qemu-arg", "-s", "--", "-d", "int", "--uefi"], &[]).unwrap();
        assert_eq!(o.qemu_args, ["-s", "-d", "int", "--uefi"]);
        assert_eq!(o.firmware, Firmware::Bios);
    }

    #[test]
    fn environment_sets_defaults_and_flags_win() {
        let env = [
            ("BOOT_UEFI", "1"),
            ("BOOT_MEMORY", "1g"),
            ("BOOT_SMP", "4"),
            ("BOOT_TIMEOUT", "0"),
            ("BOOT_QEMU_ARGS", " -d  int "),
            ("OVMF_PATH", "/fw.fd"),
        ];
        let o = run(&["k"], &env).unwrap();
        assert_eq!(
            (o.firmware, o.memory.as_str(), o.smp),
            (Firmware::Uefi, "1G", 4)
        );
        assert_eq!(o.timeout, None);
        assert_eq!(o.qemu_args, ["-d", "int"]);
        assert_eq!(o.ovmf_path, PathBuf::from("/fw.fd"));

        let o = run(
            &["k", "--bios", "--memory", "128M", "--qemu-arg", "-s"],
            &env,
        )
        .unwrap();
        assert_eq!((o.firmware, o.memory.as_str()), (Firmware::Bios, "128M"));
        assert_eq!(o.qemu_args, ["-d", "int", "-s"]);
        // Empty variables count as unset.
        let o = run(&["k"], &[("BOOT_MEMORY", ""), ("BOOT_UEFI", "")]).unwrap();
        assert_eq!((o.firmware, o.memory.as_str()), (Firmware::Bios, "512M"));
    }

    #[test]
    fn a_shell_waits_for_its_user_unless_told_otherwise() {
        let o = run(&["k", "--shell"], &[]).unwrap();
        assert!(o.shell);
        assert_eq!(o.timeout, None);
        let o = run(&["k", "--shell", "--timeout", "5"], &[]).unwrap();
        assert_eq!(o.timeout, Some(Duration::from_secs(5)));
        let o = run(&["k"], &[("BOOT_SHELL", "1"), ("BOOT_TIMEOUT", "7")]).unwrap();
        assert!(o.shell);
        assert_eq!(o.timeout, Some(Duration::from_secs(7)));
        let o = run(&["k", "--serial-script=s.txt"], &[]).unwrap();
        assert_eq!(o.serial_script, Some(PathBuf::from("s.txt")));
        assert_eq!(
            o.timeout,
            Some(Duration::from_secs(30)),
            "a script keeps the timeout"
        );
        let o = run(&["k"], &[("BOOT_SERIAL_SCRIPT", "t.txt")]).unwrap();
        assert_eq!(o.serial_script, Some(PathBuf::from("t.txt")));
    }

    #[test]
    fn libtest_flags_from_cargo_test_are_ignored() {
        let o = run(
            &[
                "k",
                "--quiet",
                "--test-threads",
                "1",
                "--nocapture",
                "--color=never",
            ],
            &[],
        );
        assert_eq!(o.unwrap(), run(&["k"], &[]).unwrap());
        assert!(err(&["k", "some_test_name"], &[]).contains("cannot be filtered"));
    }

    #[test]
    fn screen_options() {
        let o = run(&["k"], &[]).unwrap();
        assert_eq!(o.screen, ScreenOptions::default());
        let o = run(
            &[
                "k",
                "--display",
                "--screendump",
                "/t/s.png",
                "--screen-check",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(o.screen.display.as_deref(), Some("gtk"));
        assert_eq!(o.screen.screendump, Some(PathBuf::from("/t/s.png")));
        assert!(o.screen.check);
        assert_eq!(o.timeout, None, "someone watches: no timeout");
        let o = run(&["k", "--display=sdl", "--timeout", "9"], &[]).unwrap();
        assert_eq!(o.screen.display.as_deref(), Some("sdl"));
        assert_eq!(o.timeout, Some(Duration::from_secs(9)));
        let env = [
            ("BOOT_DISPLAY", "1"),
            ("BOOT_SCREENDUMP", "shot.ppm"),
            ("BOOT_SCREEN_CHECK", "yes"),
        ];
        let o = run(&["k"], &env).unwrap();
        assert_eq!(o.screen.display.as_deref(), Some("gtk"));
        assert_eq!(o.screen.screendump, Some(PathBuf::from("shot.ppm")));
        assert!(o.screen.check);
        let o = run(&["k"], &[("BOOT_DISPLAY", "none")]).unwrap();
        assert_eq!(
            (o.screen.display, o.timeout),
            (None, Some(Duration::from_secs(30)))
        );
        assert!(err(&["k", "--display=x11!"], &[]).contains("QEMU display"));
        assert!(err(&["k"], &[("BOOT_SCREEN_CHECK", "maybe")]).starts_with("BOOT_SCREEN_CHECK"));
        assert_eq!(
            err(&["k", "--screendump"], &[]),
            "--screendump needs a value"
        );
    }

    #[test]
    fn help() {
        let args = vec!["k".to_string(), "--help".to_string()];
        assert_eq!(parse(&args, &|_| None), Ok(Command::Help));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            err(&["k", "--memroy", "1G"], &[]),
            "unknown option `--memroy`"
        );
        assert_eq!(err(&[], &[]), "no kernel ELF given");
        assert_eq!(err(&["k", "--memory"], &[]), "--memory needs a value");
        assert!(err(&["k", "--memory", "lots"], &[]).contains("not a size"));
        assert!(err(&["k", "--memory", "1M"], &[]).contains("too small"));
        assert!(err(&["k", "--smp", "0"], &[]).contains("not a CPU count"));
        assert!(err(&["k", "--timeout", "-1"], &[]).contains("not a number of seconds"));
        assert!(err(&["a", "b"], &[]).starts_with("one kernel only"));
        assert!(err(&["k"], &[("BOOT_UEFI", "maybe")]).starts_with("BOOT_UEFI"));
        assert!(err(&["k"], &[("BOOT_MEMORY", "5X")]).starts_with("BOOT_MEMORY"));
    }

    #[test]
    fn uefi_below_its_minimum_memory_is_refused() {
        let debug = "target/x86_64-target/debug/kernel";
        let release = "target/x86_64-target/release/kernel";
        let e = err(&[debug, "--uefi", "--memory", "60M"], &[]);
        assert!(
            e.contains("UEFI with 60M") && e.contains("at least 64M"),
            "{e}"
        );
        assert!(e.contains("a debug kernel"), "{e}");
        let e = err(&[release, "--memory", "47M"], &[("BOOT_UEFI", "1")]);
        assert!(
            e.contains("at least 48M") && e.contains("a release kernel"),
            "{e}"
        );
        assert!(err(&[debug, "--uefi", "--memory", "65535K"], &[]).contains("at least 64M"));
        // At the minimum, and through BIOS below it, the run goes ahead.
        for args in [
            &[debug, "--uefi", "--memory", "64M"][..],
            &[release, "--uefi", "--memory", "48M"],
            &[debug, "--uefi", "--memory", "1G"],
            &[debug, "--memory", "33M"],
        ] {
            let o = run(args, &[]).unwrap_or_else(|e| panic!("{args:?} refused: {}", e.0));
            assert_eq!(o.memory, args[args.len() - 1]);
        }
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("128M").as_deref(), Ok("128M"));
        assert_eq!(parse_memory("512").as_deref(), Ok("512M"));
        assert_eq!(parse_memory("5GiB").as_deref(), Ok("5G"));
        assert_eq!(parse_memory("65536k").as_deref(), Ok("65536K"));
        assert_eq!(parse_memory(" 1t ").as_deref(), Ok("1T"));
        assert!(parse_memory("G").is_err());
        assert!(parse_memory("1.5G").is_err());
        assert!(parse_memory("99999999999999999999G").is_err());
        assert!(parse_memory("16777216T").is_err(), "overflows u64 bytes");
    }
}
