//! `boot`: the host side of the kernel. Builds a BIOS or UEFI disk image of a kernel ELF
//! with the `bootloader` crate and runs it in QEMU, headless, with a timeout. Cargo uses
//! it as the runner for every binary built for the kernel target. `boot --help` explains
//! the options.

mod filter;
mod options;
mod run;
mod screen;
mod script;

use options::{Command, Firmware, Options, USAGE};
use run::{Outcome, build_image, kernel_name, run_qemu};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match options::parse(&args, &|name| std::env::var(name).ok()) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(e) => {
            eprintln!("boot: {e}\nboot: see `boot --help` (or `./run-qemu.sh --help`)");
            return ExitCode::from(2);
        }
    };
    match boot(&options) {
        Ok(outcome) => {
            if let Some(message) = outcome.message() {
                // Start on a new line: the kernel's output may have stopped mid-line.
                eprintln!("\nboot: {}: {message}", kernel_name(&options.kernel));
            }
            ExitCode::from(outcome.exit_code() as u8)
        }
        Err(message) => {
            eprintln!("boot: {message}");
            ExitCode::FAILURE
        }
    }
}

fn boot(options: &Options) -> Result<Outcome, String> {
    if !options.kernel.is_file() {
        return Err(format!(
            "kernel ELF not found: {} (build it with `cargo kbuild`, or run `./run-qemu.sh`)",
            options.kernel.display()
        ));
    }
    if options.firmware == Firmware::Uefi && !options.images_only && !options.ovmf_path.is_file() {
        return Err(format!(
            "UEFI firmware not found at {}. Install it with: {}  (or set OVMF_PATH)",
            options.ovmf_path.display(),
            run::install_command()
        ));
    }
    if !options.images_only {
        screen::check_display(&options.screen, &|var| std::env::var_os(var).is_some())?;
    }
    let image = build_image(options)?;
    if options.images_only {
        println!("{}", image.display());
        return Ok(Outcome::Success);
    }
    eprintln!(
        "boot: running {} ({}, {} memory, {} CPU{}, {})",
        kernel_name(&options.kernel),
        options.firmware,
        options.memory,
        options.smp,
        if options.smp == 1 { "" } else { "s" },
        match options.timeout {
            Some(t) => format!("timeout {} s", run::fmt_secs(t)),
            None => "no timeout".to_string(),
        }
    );
    run_qemu(options, &image)
}
