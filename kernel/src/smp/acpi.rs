//! Just enough ACPI to find the CPUs: the RSDP the bootloader hands over, the XSDT (or
//! RSDT of ACPI 1.0) it points to, and the MADT ("APIC") among its tables.
//!
//! Every table is read through the physical-memory mapping and checked (signature,
//! checksum, lengths) before it is trusted.

use alloc::vec::Vec;
use core::fmt;
use x86_64::PhysAddr;

/// A CPU listed in the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MadtCpu {
    /// Its local APIC id (an x2APIC id for MADT type 9 entries).
    pub apic_id: u32,
    /// Whether the entry is enabled (else only online-capable).
    pub enabled: bool,
}

/// What the MADT says about the CPUs.
#[derive(Clone, Debug)]
pub struct Madt {
    /// Physical address of the local APIC registers (after any 64-bit override).
    pub lapic_addr: u64,
    /// Usable CPUs: enabled or online-capable local APICs and x2APICs, in table order.
    pub cpus: Vec<MadtCpu>,
}

/// Why the MADT could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The bootloader found no RSDP.
    NoRsdp,
    /// A table's signature is not what was expected.
    BadSignature {
        /// Physical address of the table.
        addr: u64,
        /// The signature expected.
        expected: &'static str,
    },
    /// A table's bytes do not add up to 0.
    BadChecksum {
        /// Physical address of the table.
        addr: u64,
    },
    /// A table's length is impossible.
    BadLength {
        /// Physical address of the table.
        addr: u64,
        /// The length it claims.
        len: u32,
    },
    /// The root table lists no MADT.
    NoMadt,
    /// A MADT entry runs past the table's end or is shorter than 2 bytes.
    BadEntry {
        /// Offset of the entry in the MADT.
        offset: usize,
    },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AcpiError::NoRsdp => write!(f, "the bootloader found no ACPI RSDP"),
            AcpiError::BadSignature { addr, expected } => {
                write!(f, "ACPI table at {addr:#x} is not a {expected}")
            }
            AcpiError::BadChecksum { addr } => {
                write!(f, "ACPI table at {addr:#x} has a bad checksum")
            }
            AcpiError::BadLength { addr, len } => {
                write!(
                    f,
                    "ACPI table at {addr:#x} claims an impossible length {len}"
                )
            }
            AcpiError::NoMadt => write!(f, "ACPI lists no MADT (\"APIC\" table)"),
            AcpiError::BadEntry { offset } => {
                write!(f, "the MADT's entry at offset {offset} is malformed")
            }
        }
    }
}

/// Tables larger than this are refused (a MADT for hundreds of CPUs is a few KiB).
const MAX_TABLE_LEN: u32 = 1 << 20;
const SDT_HEADER_LEN: usize = 36;

/// `len` bytes of physical memory at `addr`, through the physical-memory mapping.
fn phys_bytes(addr: u64, len: usize) -> &'static [u8] {
    let virt = crate::mm::phys_to_virt(PhysAddr::new(addr));
    // SAFETY: the bootloader maps all physical memory (at least the first 4 GiB and every
    // region of the memory map) at the offset, and firmware tables are never written
    // while the kernel runs. Callers bound `len` by the table's checked length.
    unsafe { core::slice::from_raw_parts(virt.as_ptr::<u8>(), len) }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)) == 0
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The system description table at `addr`, checked against `signature`.
fn sdt(addr: u64, signature: &'static str) -> Result<&'static [u8], AcpiError> {
    let header = phys_bytes(addr, SDT_HEADER_LEN);
    if &header[..4] != signature.as_bytes() {
        return Err(AcpiError::BadSignature {
            addr,
            expected: signature,
        });
    }
    let len = u32_at(header, 4);
    if (len as usize) < SDT_HEADER_LEN || len > MAX_TABLE_LEN {
        return Err(AcpiError::BadLength { addr, len });
    }
    let table = phys_bytes(addr, len as usize);
    if !checksum_ok(table) {
        return Err(AcpiError::BadChecksum { addr });
    }
    Ok(table)
}

/// Finds and reads the MADT from the RSDP at `rsdp_addr`.
pub fn read_madt(rsdp_addr: Option<u64>) -> Result<Madt, AcpiError> {
    let rsdp_addr = rsdp_addr.ok_or(AcpiError::NoRsdp)?;
    let rsdp = phys_bytes(rsdp_addr, 20);
    if &rsdp[..8] != b"RSD PTR " {
        return Err(AcpiError::BadSignature {
            addr: rsdp_addr,
            expected: "RSDP",
        });
    }
    if !checksum_ok(rsdp) {
        return Err(AcpiError::BadChecksum { addr: rsdp_addr });
    }
    let revision = rsdp[15];
    // ACPI 2.0+ has a 64-bit XSDT; 1.0 only the RSDT of 32-bit pointers.
    let (root, entry_len) = if revision >= 2 {
        let ext = phys_bytes(rsdp_addr, 36);
        if !checksum_ok(ext) {
            return Err(AcpiError::BadChecksum { addr: rsdp_addr });
        }
        (sdt(u64_at(ext, 24), "XSDT")?, 8)
    } else {
        (sdt(u64::from(u32_at(rsdp, 16)), "RSDT")?, 4)
    };
    let madt = root[SDT_HEADER_LEN..]
        .chunks_exact(entry_len)
        .map(|e| {
            if entry_len == 8 {
                u64_at(e, 0)
            } else {
                u64::from(u32_at(e, 0))
            }
        })
        .find(|&addr| addr != 0 && phys_bytes(addr, 4) == b"APIC")
        .ok_or(AcpiError::NoMadt)?;
    parse_madt(sdt(madt, "APIC")?)
}

/// Reads the CPUs out of a checked MADT.
fn parse_madt(t: &[u8]) -> Result<Madt, AcpiError> {
    if t.len() < SDT_HEADER_LEN + 8 {
        return Err(AcpiError::BadEntry {
            offset: SDT_HEADER_LEN,
        });
    }
    let mut lapic_addr = u64::from(u32_at(t, SDT_HEADER_LEN));
    let mut cpus = Vec::new();
    let mut off = SDT_HEADER_LEN + 8;
    while off + 2 <= t.len() {
        let (kind, len) = (t[off], usize::from(t[off + 1]));
        if len < 2 || off + len > t.len() {
            return Err(AcpiError::BadEntry { offset: off });
        }
        let e = &t[off..off + len];
        const ENABLED: u32 = 1;
        const ONLINE_CAPABLE: u32 = 2;
        match kind {
            // Processor local APIC: ACPI id, APIC id, flags.
            0 if len >= 8 => {
                let flags = u32_at(e, 4);
                if flags & (ENABLED | ONLINE_CAPABLE) != 0 {
                    cpus.push(MadtCpu {
                        apic_id: u32::from(e[3]),
                        enabled: flags & ENABLED != 0,
                    });
                }
            }
            // Local APIC address override.
            5 if len >= 12 => lapic_addr = u64_at(e, 4),
            // Processor local x2APIC: reserved, x2APIC id, flags, ACPI uid.
            9 if len >= 16 => {
                let flags = u32_at(e, 8);
                if flags & (ENABLED | ONLINE_CAPABLE) != 0 {
                    cpus.push(MadtCpu {
                        apic_id: u32_at(e, 4),
                        enabled: flags & ENABLED != 0,
                    });
                }
            }
            0 | 5 | 9 => return Err(AcpiError::BadEntry { offset: off }),
            _ => {}
        }
        off += len;
    }
    Ok(Madt { lapic_addr, cpus })
}
