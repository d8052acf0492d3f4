#!/usr/bin/env bash
# Boots the kernel in QEMU (`./run-qemu.sh`), or runs every test (`./run-qemu.sh test`).
# Installs what a fresh machine lacks first. `./run-qemu.sh --help` explains the options.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

readonly APT_PACKAGES=(qemu-system-x86 ovmf)
readonly OVMF_DEFAULT=/usr/share/ovmf/OVMF.fd

# Kernel test runs that differ from the defaults (512M memory, 1 CPU, 30 s timeout), one run
# per entry: "TEST MEMORY [CPUS] [TIMEOUT_SECS]". TEST is a file name in kernel/tests/
# without .rs, or `lib` for the #[test_case]s inside the kernel library. A test listed here
# runs once per entry instead of once with the defaults; every other test runs once with
# the defaults.
KERNEL_TEST_RUNS=(
  "basic_boot 128M"
  "basic_boot 1G"
  # Memory management at a small machine, a mid-size one and one above 4 GiB (QEMU then
  # splits RAM around the PCI hole, so the memory map has a hole). They take 5-90 s on an
  # idle machine under emulation; the timeouts leave room for a busy one.
  "mm_frames 128M 1 120"
  "mm_frames 1G 1 240"
  "mm_frames 5G 1 480"
  "mm_heap 128M 1 120"
  "mm_heap 5G 1 120"
  "mm_address_spaces 128M 1 120"
  "mm_address_spaces 5G 1 120"
  "mm_interrupts 128M 1 120"
  "mm_interrupts 1G 1 120"
  "mm_interrupts 512M 4 120"
  # Several CPUs (multi-threaded TCG): bring-up, per-CPU data, timers, jobs on every CPU;
  # a panic and a stack overflow on an application processor.
  "smp 512M 1 120"
  "smp 512M 2 120"
  "smp 512M 4 180"
  "smp_panic 512M 2 60"
  "smp_stack_overflow 512M 2 60"
  # Several CPUs racing on the frame allocator (multi-threaded TCG).
  "mm_smp 512M 2 240"
  "mm_smp 256M 4 300"
)

# Kernel test runs built with --release as well (same format): optimised code and another
# image size move every frame; no test may care.
KERNEL_RELEASE_RUNS=(
  "lib 512M 1 60"
  "mm_frames 1G 1 240"
  "mm_smp 512M 4 300"
)

usage() {
  cat <<'EOF'
Usage: ./run-qemu.sh [OPTIONS] [-- QEMU_ARGS...]    build the kernel and boot it in QEMU
       ./run-qemu.sh test                           run every test (what CI runs)

Boot options:
  --uefi          boot through UEFI firmware (OVMF) instead of BIOS
  --memory SIZE   guest memory, e.g. 128M, 1G, 4G (default 512M)
  --smp N         number of CPUs (default 1)
  --timeout S     kill QEMU and fail after S seconds; 0 = never (default 30)
  --release       build the kernel with optimisations
  --kvm           use KVM instead of QEMU's emulator (off by default; can hang here)
  --boot-log      show the bootloader's own log on serial
  --shell         boot the memory console instead (kernel/src/bin/shell.rs): type
                  commands such as help, alloc 3, tree; quit ends it; no timeout
  --display[=UI]  show the picture of physical memory in a QEMU window (UI: gtk, the
                  default, or sdl; needs a graphical session); the kernel pauses at
                  each step and waits for a key at the end; no timeout
  --screendump FILE
                  save the picture to FILE (PNG if it ends in .png, else PPM) when
                  the kernel offers it (the demo's step with frames of every kind;
                  not with --shell, whose console draws no picture)
  -h, --help      show this help
  --              pass everything after it to QEMU, e.g. -- -d int,cpu_reset

The exit status is the kernel's: 0 when it reports success, 1 otherwise (kernel failure,
panic, triple fault, timeout, QEMU missing), 2 for bad usage.

`test` runs: cargo fmt --check; clippy (-D warnings) on the host crates and on the kernel;
the host crates' unit tests; a 60-second fuzz run of pagealloc; a build of pagealloc for
x86_64-unknown-none; every kernel test in QEMU (BIOS), some at several memory sizes and CPU
counts (the table KERNEL_TEST_RUNS in this script), some also built with --release
(KERNEL_RELEASE_RUNS),
with the pixels they name checked in a screendump (BOOT_SCREEN_CHECK=1); the picture test
through UEFI too; the memory console driven by kernel/tests/shell_script.txt; the example
kernel of the allocator guide (examples/guide-kernel); a boot of the kernel through BIOS and
through UEFI, each with a screendump; the guide's exercise checks against their solutions;
and every transcript in README.md and the guide against the kernel's real output. It prints
each suite's result, then a summary, and fails if anything failed.

On a fresh machine it first installs the pinned Rust toolchain (rustup toolchain install)
and, when run as root, QEMU and OVMF with apt-get.
EOF
}

say() { printf 'run-qemu.sh: %s\n' "$*" >&2; }
usage_error() {
  say "$*"
  say "see ./run-qemu.sh --help"
  exit 2
}

# --- what a fresh machine needs -------------------------------------------------------

ensure_toolchain() {
  if ! command -v rustup >/dev/null 2>&1; then
    say "rustup not found. Install rustup (https://rustup.rs), then run this script again:"
    say "it installs the pinned toolchain named in rust-toolchain.toml by itself."
    exit 1
  fi
  local channel
  channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
  if toolchain_complete "$channel"; then
    return
  fi
  say "installing the pinned Rust toolchain $channel (rust-toolchain.toml)..."
  # With no arguments, rustup installs what rust-toolchain.toml names: the channel, its
  # components and its targets. (RUSTUP_AUTO_INSTALL=0 machines need this explicitly.)
  rustup toolchain install
  if ! toolchain_complete "$channel"; then
    say "the toolchain $channel is still incomplete after 'rustup toolchain install'."
    say "Try: rustup toolchain install $channel --component rust-src,llvm-tools,clippy,rustfmt --target x86_64-unknown-none"
    exit 1
  fi
}

toolchain_complete() {
  local channel=$1 components targets
  components=$(rustup component list --installed --toolchain "$channel" 2>/dev/null) || return 1
  targets=$(rustup target list --installed --toolchain "$channel" 2>/dev/null) || return 1
  local c
  for c in rust-src llvm-tools clippy rustfmt; do
    grep -q "^$c" <<<"$components" || return 1
  done
  grep -qx x86_64-unknown-none <<<"$targets"
}

ensure_qemu() {
  local need_ovmf=$1 qemu=${BOOT_QEMU:-qemu-system-x86_64} ovmf=${OVMF_PATH:-$OVMF_DEFAULT}
  local missing=()
  command -v "$qemu" >/dev/null 2>&1 || missing+=("QEMU ($qemu)")
  if [[ $need_ovmf == yes && ! -f $ovmf ]]; then
    missing+=("UEFI firmware ($ovmf)")
  fi
  ((${#missing[@]} == 0)) && return
  # Only the default locations come from the packages; a path the user chose is theirs.
  if [[ $(id -u) == 0 && -z ${BOOT_QEMU:-} && -z ${OVMF_PATH:-} && ${2:-} != installed ]] &&
    command -v apt-get >/dev/null; then
    say "missing: ${missing[*]}; installing ${APT_PACKAGES[*]} with apt-get..."
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${APT_PACKAGES[@]}"
    ensure_qemu "$need_ovmf" installed
    return
  fi
  say "missing: ${missing[*]}."
  if [[ -n ${BOOT_QEMU:-} || -n ${OVMF_PATH:-} ]]; then
    say "BOOT_QEMU / OVMF_PATH point there; fix or unset them."
  elif [[ ${2:-} == installed ]]; then
    say "apt-get installed ${APT_PACKAGES[*]}, yet it is still missing."
  else
    say "Install it with:  sudo apt-get update && sudo apt-get install -y ${APT_PACKAGES[*]}"
  fi
  exit 1
}

# --- ./run-qemu.sh [OPTIONS] ----------------------------------------------------------

# user_path PATH: PATH as the user meant it, from the directory they ran this script in
# (the script has moved to the repository root since; `cd` left the old one in OLDPWD).
user_path() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "${OLDPWD:-$PWD}" "$1" ;;
  esac
}

run_kernel() {
  local cargo_args=() boot_args=() uefi=no alias=krun
  while (($#)); do
    case $1 in
      -h | --help) usage; exit 0 ;;
      --uefi) uefi=yes; boot_args+=(--uefi) ;;
      --bios) uefi=no; boot_args+=(--bios) ;;
      --release) cargo_args+=(--release) ;;
      --kvm | --boot-log) boot_args+=("$1") ;;
      --shell) alias=kshell; boot_args+=(--shell) ;;
      --display | --display=*) boot_args+=("$1") ;;
      --screendump)
        (($# >= 2)) || usage_error "$1 needs a value"
        boot_args+=("$1" "$(user_path "$2")")
        shift
        ;;
      --screendump=*) boot_args+=(--screendump "$(user_path "${1#--screendump=}")") ;;
      --memory | --smp | --timeout)
        (($# >= 2)) || usage_error "$1 needs a value"
        boot_args+=("$1" "$2")
        shift
        ;;
      --memory=* | --smp=* | --timeout=*) boot_args+=("$1") ;;
      --) shift; boot_args+=(-- "$@"); break ;;
      test) usage_error "'test' takes no options and must come first: ./run-qemu.sh test" ;;
      *) usage_error "unknown option '$1'" ;;
    esac
    shift
  done

  if [[ $alias == kshell ]] && [[ " ${boot_args[*]} " == *" --screendump "* ]]; then
    usage_error "--screendump saves the demo's picture, which the memory console (--shell) does not draw; use one or the other"
  fi
  ensure_toolchain
  ensure_qemu "$uefi"
  # Build the host tool first so its (slow, first-time) build shows progress; as the
  # cargo runner it is built quietly.
  if [[ -x target/debug/boot ]]; then
    cargo build -q -p boot
  else
    say "first build: compiling the host tool boot, with the bootloader's BIOS and UEFI"
    say "stages (fetched from crates.io); this takes several minutes, once."
    cargo build -p boot
  fi
  # cargo builds the kernel, then hands it to the runner (`boot`, see .cargo/config.toml)
  # with boot_args; its exit status is the kernel's.
  exec cargo "$alias" "${cargo_args[@]}" -- "${boot_args[@]}"
}

# --- ./run-qemu.sh test ---------------------------------------------------------------

SUITE_NAMES=()
SUITE_RESULTS=()
SUITE_FAILED=0
TESTS_PASSED=0
TESTS_FAILED=0
LOG_DIR=

# run_suite NAME KIND COMMAND...: runs COMMAND, showing its output, and records the result.
# KIND says how to count tests in the output: `cargo` (libtest's "test result:" lines),
# `kernel` (the kernel's final "kernel: N passed, M failed" line), or `check` (no tests).
# A suite that fails without reporting a failed test counts as one failed test.
run_suite() {
  local name=$1 kind=$2
  shift 2
  local log="$LOG_DIR/suite-${#SUITE_NAMES[@]}.log" start end status passed=0 failed=0
  printf '\n==> %s\n    $ %s\n' "$name" "$*"
  start=$(date +%s.%N)
  set +e
  "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  end=$(date +%s.%N)

  case $kind in
    cargo)
      read -r passed failed < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed.*/\1 \2/p' "$log" |
        awk '{p += $1; f += $2} END {print p + 0, f + 0}')
      ;;
    kernel)
      read -r passed failed < <(sed -n 's/^kernel: \([0-9]*\) passed, \([0-9]*\) failed\r*$/\1 \2/p' "$log" |
        tail -n 1 | awk '{print $1 + 0, $2 + 0} END {if (NR == 0) print 0, 0}')
      ;;
  esac
  if ((status != 0 && failed == 0)); then
    failed=1
  fi
  TESTS_PASSED=$((TESTS_PASSED + passed))
  TESTS_FAILED=$((TESTS_FAILED + failed))

  local verdict=ok detail="" secs
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')
  if ((status != 0)); then
    verdict=FAILED
    SUITE_FAILED=$((SUITE_FAILED + 1))
    local why
    why=$(grep -m1 -o 'timed out after [0-9.]* s' "$log" || true)
    detail=" (exit status $status${why:+, $why})"
  fi
  if [[ $kind != check ]]; then
    detail="$detail, $passed passed, $failed failed"
  fi
  local line
  line=$(printf '%-48s %-6s %6s s%s' "$name" "$verdict" "$secs" "$detail")
  printf '<== %s\n' "$line"
  SUITE_NAMES+=("$name")
  SUITE_RESULTS+=("$line")
}

# kernel_test_runs: prints "TEST MEMORY CPUS TIMEOUT" for every kernel test run.
kernel_test_runs() {
  local tests=(lib) file entry name found
  for file in kernel/tests/*.rs; do
    tests+=("$(basename "$file" .rs)")
  done
  for name in "${tests[@]}"; do
    found=no
    for entry in "${KERNEL_TEST_RUNS[@]}"; do
      read -r -a fields <<<"$entry"
      if [[ ${fields[0]} == "$name" ]]; then
        found=yes
        echo "$name ${fields[1]:-512M} ${fields[2]:-1} ${fields[3]:-30}"
      fi
    done
    if [[ $found == no ]]; then
      echo "$name 512M 1 30"
    fi
  done
  for entry in "${KERNEL_TEST_RUNS[@]}"; do
    read -r -a fields <<<"$entry"
    if [[ ${fields[0]} != lib && ! -f kernel/tests/${fields[0]}.rs ]]; then
      say "KERNEL_TEST_RUNS names '${fields[0]}', which is not in kernel/tests/"
      echo "${fields[0]} - - -"
    fi
  done
}

# Boots the kernel binary and checks it got through to its end by the firmware given.
boot_kernel_check() {
  local firmware=$1
  shift
  local out
  out=$(mktemp)
  set +e
  cargo krun -q -- --screen-check "$@" 2>&1 | tee "$out"
  local status=${PIPESTATUS[0]}
  set -e
  if ((status == 0)) && ! grep -q "via $firmware" "$out"; then
    echo "run-qemu.sh: the kernel exited 0 but did not report booting via $firmware"
    status=1
  fi
  if ((status == 0)) && ! grep -q '^usable memory: ' "$out"; then
    echo "run-qemu.sh: the kernel exited 0 but printed no memory map"
    status=1
  fi
  if ((status == 0)) && ! grep -q '^boot: screendump written to ' "$out"; then
    echo "run-qemu.sh: the kernel exited 0 but offered no screendump of its picture"
    status=1
  fi
  rm -f "$out"
  return "$status"
}

# The guide's exercises: every check passes against the solutions, and fails (panics in
# the todo!()) against the unsolved exercises, one failure per check.
exercises_check() {
  cargo test -p pagealloc-exercises --features solutions -- --ignored || return 1
  local out="$LOG_DIR/exercises-unsolved.out" checks
  checks=$(grep -c '^#\[ignore' examples/exercises/tests/checks.rs)
  cargo test -q -p pagealloc-exercises -- --ignored >"$out" 2>&1
  if ! grep -q "^test result: FAILED\. 0 passed; $checks failed" "$out"; then
    cat "$out"
    echo "run-qemu.sh: each of the $checks exercise checks must fail before its exercise is solved"
    return 1
  fi
  echo "run-qemu.sh: all $checks exercise checks fail on the unsolved exercises, as they should"
}

# Every transcript in README.md and the guide against real output: the console replaying
# the guide's session, a plain boot of the kernel (BIOS) and the guide's example kernel
# (kept by guide_kernel_check); and the guide's quotes against their source.
docs_check() {
  local session="$LOG_DIR/guide-session.out"
  env BOOT_SERIAL_SCRIPT=kernel/tests/guide_session.txt BOOT_TIMEOUT=60 BOOT_UEFI=0 \
    cargo kshell -q >"$session" 2>&1 || { cat "$session"; return 1; }
  # The demo as `./run-qemu.sh` shows it (the boot suites add screendump lines).
  local demo="$LOG_DIR/demo.out"
  env BOOT_TIMEOUT=60 BOOT_UEFI=0 cargo krun -q >"$demo" 2>&1 || { cat "$demo"; return 1; }
  cargo run -q -p guide-tools -- check-docs shell="$session" demo="$demo" \
    guide-kernel="$LOG_DIR/guide-kernel.out"
}

# The example kernel of kernel/pagealloc/GUIDE.md section 10 (examples/guide-kernel): clippy,
# then a boot at 128 MiB; it checks itself and must print its closing line. Its output is
# kept for the guide's transcript check.
guide_kernel_check() {
  cargo kguide-clippy -q -- -D warnings || return 1
  local out="$LOG_DIR/guide-kernel.out"
  set +e
  env BOOT_MEMORY=128M BOOT_TIMEOUT=60 BOOT_UEFI=0 cargo kguide -q 2>&1 | tee "$out"
  local status=${PIPESTATUS[0]}
  set -e
  if ((status == 0)) && ! grep -q '^guide-kernel: invariants hold; every check passed' "$out"; then
    echo "run-qemu.sh: the guide's kernel exited 0 but did not print its closing line"
    status=1
  fi
  return "$status"
}

run_tests() {
  if (($#)); then
    [[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
    usage_error "'test' takes no options (got '$1')"
  fi
  ensure_toolchain
  ensure_qemu yes
  LOG_DIR=$(mktemp -d)
  trap 'rm -rf "$LOG_DIR"' EXIT
  local started=$SECONDS

  run_suite "format (cargo fmt --check)" check cargo fmt --all --check
  run_suite "build: boot tool and kernel tests" check \
    bash -c 'cargo build -p boot && cargo ktest --no-run'
  run_suite "clippy: host crates" check \
    bash -c 'cargo clippy -p boot -p pagealloc -p pagealloc-model -p pagealloc-x86_64 -p guide-tools -p pagealloc-exercises --all-targets -- -D warnings &&
      cargo clippy -p pagealloc-exercises --all-targets --features solutions -- -D warnings'
  run_suite "clippy: kernel (x86_64-target.json)" check cargo kclippy -- -D warnings
  run_suite "host tests: boot" cargo cargo test -p boot
  run_suite "host tests: guide-tools" cargo cargo test -p guide-tools
  # Includes tests/public_api.rs: the public API against the committed public-api.txt.
  run_suite "host tests: pagealloc (and its public-API snapshot)" cargo cargo test -p pagealloc
  run_suite "host tests: pagealloc-model, pagealloc-x86_64" cargo \
    cargo test -p pagealloc-model -p pagealloc-x86_64
  # The API docs as docs.rs builds them, with broken links and other warnings as errors.
  run_suite "docs: pagealloc, pagealloc-x86_64 (warnings denied)" check \
    env RUSTDOCFLAGS="-D warnings --cfg docsrs" \
    cargo doc -q --no-deps -p pagealloc -p pagealloc-x86_64 --features pagealloc/check,pagealloc/inspect
  # Both crates as crates.io would get them (each built from its packaged sources).
  run_suite "package: pagealloc, pagealloc-x86_64" check \
    cargo package -q -p pagealloc -p pagealloc-x86_64 --allow-dirty
  # A minute of coverage-guided fuzzing of the allocator from its seed corpus (installs
  # cargo-fuzz if missing; skipped with a message where it cannot be installed).
  run_suite "fuzz smoke: pagealloc ops (60 s)" check bash kernel/pagealloc/fuzz/smoke.sh 60
  # The allocator crate on its own, for a bare-metal target, as another kernel would use it.
  run_suite "build: pagealloc for x86_64-unknown-none" check \
    cargo build -q -p pagealloc --target x86_64-unknown-none

  local name memory smp timeout target
  while read -r name memory smp timeout; do
    if [[ $memory == - ]]; then
      run_suite "kernel test $name (not found)" kernel false
      continue
    fi
    if [[ $name == lib ]]; then target=(--lib); else target=(--test "$name"); fi
    run_suite "kernel test $name ($memory, $smp CPU, BIOS)" kernel \
      env BOOT_MEMORY="$memory" BOOT_SMP="$smp" BOOT_TIMEOUT="$timeout" BOOT_UEFI=0 \
      BOOT_SCREEN_CHECK=1 cargo ktest -q "${target[@]}"
  done < <(kernel_test_runs)
  for entry in "${KERNEL_RELEASE_RUNS[@]}"; do
    read -r name memory smp timeout <<<"$entry"
    if [[ $name == lib ]]; then target=(--lib); else target=(--test "$name"); fi
    run_suite "kernel test $name (release, $memory, $smp CPU, BIOS)" kernel \
      env BOOT_MEMORY="$memory" BOOT_SMP="$smp" BOOT_TIMEOUT="$timeout" BOOT_UEFI=0 \
      BOOT_SCREEN_CHECK=1 cargo ktest -q --release "${target[@]}"
  done
  # The picture on UEFI's framebuffer (4 bytes a pixel, another size) as well.
  run_suite "kernel test screen (512M, 1 CPU, UEFI)" kernel \
    env BOOT_UEFI=1 BOOT_SCREEN_CHECK=1 cargo ktest -q --test screen

  # The memory console, typed into through the serial port (see the script for its format).
  run_suite "kernel shell: serial script (BIOS, 2 CPUs)" check \
    env BOOT_SERIAL_SCRIPT=kernel/tests/shell_script.txt BOOT_TIMEOUT=60 BOOT_UEFI=0 \
    BOOT_SMP=2 cargo kshell -q
  run_suite "example kernel of GUIDE.md section 10 (128M, BIOS)" check guide_kernel_check
  run_suite "kernel boot (BIOS)" check boot_kernel_check BIOS
  run_suite "kernel boot (UEFI)" check boot_kernel_check UEFI --uefi
  run_suite "guide: exercise checks (solutions)" cargo exercises_check
  run_suite "guide: transcripts and quotes in README and GUIDE" check docs_check

  printf '\n==> summary (%d s)\n' $((SECONDS - started))
  printf '    %s\n' "${SUITE_RESULTS[@]}"
  printf '%d of %d suites failed\n' "$SUITE_FAILED" "${#SUITE_NAMES[@]}"
  # One closing line with every test added up (a suite that failed without reporting a
  # failed test, e.g. fmt, clippy or a hung kernel, counts as one failure).
  printf 'tests: %d passed, %d failed\n' "$TESTS_PASSED" "$TESTS_FAILED"
  ((SUITE_FAILED == 0))
}

# --- main -----------------------------------------------------------------------------

if [[ ${1:-} == test ]]; then
  shift
  run_tests "$@"
else
  run_kernel "$@"
fi
