//! The real-mode code an application processor starts in, and the temporary page tables
//! that carry it into the kernel.
//!
//! A start-up IPI starts a CPU in 16-bit real mode at `CS = page << 8, IP = 0`, so the
//! code is copied into a frame below 1 MiB. It loads its own GDT, enters 32-bit protected
//! mode, turns on PAE and long mode with a temporary top-level page table (below 4 GiB, as
//! CR3 is 32 bits there) that identity-maps the low 2 MiB and shares the kernel's upper
//! half, jumps to 64-bit code, sets `GS` base, CR0, CR4 and the stack, and calls the
//! kernel's entry with the CPU's index. The entry switches to the kernel's own CR3.
//!
//! The code addresses its data relative to its own base (computed from `CS`); the
//! bootstrap CPU fills in the absolute addresses and the per-CPU values before each start.

use x86_64::PhysAddr;
use x86_64::structures::paging::{PageTable, PageTableFlags};

use crate::mm::{self, FrameError, FrameRequest, Frames};

core::arch::global_asm!(
    r#"
    .section .text.smp_trampoline, "ax"
    .global smp_trampoline_start
    .global smp_trampoline_end
    .code16
smp_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    xor %ebx, %ebx
    mov %ax, %bx
    shl $4, %ebx
    lgdtl (smp_tr_gdtr - smp_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl *(smp_tr_far32 - smp_trampoline_start)

    .code32
smp_tr_pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov (smp_tr_cr3 - smp_trampoline_start)(%ebx), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0
    ljmp *(smp_tr_far64 - smp_trampoline_start)(%ebx)

    .code64
smp_tr_lm64:
    mov %ebx, %ebx
    mov (smp_tr_cr4 - smp_trampoline_start)(%rbx), %rax
    mov %rax, %cr4
    mov (smp_tr_cr0 - smp_trampoline_start)(%rbx), %rax
    mov %rax, %cr0
    mov $0xc0000101, %ecx
    mov (smp_tr_gs - smp_trampoline_start)(%rbx), %eax
    mov (smp_tr_gs + 4 - smp_trampoline_start)(%rbx), %edx
    wrmsr
    mov (smp_tr_stack - smp_trampoline_start)(%rbx), %rsp
    mov (smp_tr_arg - smp_trampoline_start)(%rbx), %rdi
    mov (smp_tr_entry - smp_trampoline_start)(%rbx), %rax
    movl $1, (smp_tr_alive - smp_trampoline_start)(%rbx)
    call *%rax
    ud2

    .balign 8
smp_tr_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
smp_tr_gdt_end:
smp_tr_gdtr:
    .word smp_tr_gdt_end - smp_tr_gdt - 1
    .long 0
    .balign 8
smp_tr_far32:
    .long 0
    .word 0x08
    .balign 8
smp_tr_far64:
    .long 0
    .word 0x18
    .balign 8
smp_tr_cr3: .quad 0
smp_tr_cr0: .quad 0
smp_tr_cr4: .quad 0
smp_tr_gs: .quad 0
smp_tr_stack: .quad 0
smp_tr_arg: .quad 0
smp_tr_entry: .quad 0
smp_tr_alive: .quad 0
smp_trampoline_end:

    .global smp_tr_offsets
    .section .rodata.smp_trampoline, "a"
    .balign 8
smp_tr_offsets:
    .quad smp_tr_gdtr - smp_trampoline_start
    .quad smp_tr_gdt - smp_trampoline_start
    .quad smp_tr_far32 - smp_trampoline_start
    .quad smp_tr_pm32 - smp_trampoline_start
    .quad smp_tr_far64 - smp_trampoline_start
    .quad smp_tr_lm64 - smp_trampoline_start
    .quad smp_tr_cr3 - smp_trampoline_start
    .quad smp_tr_cr0 - smp_trampoline_start
    .quad smp_tr_cr4 - smp_trampoline_start
    .quad smp_tr_gs - smp_trampoline_start
    .quad smp_tr_stack - smp_trampoline_start
    .quad smp_tr_arg - smp_trampoline_start
    .quad smp_tr_entry - smp_trampoline_start
    .quad smp_tr_alive - smp_trampoline_start
    .quad smp_trampoline_end - smp_trampoline_start
    .text
    "#,
    options(att_syntax)
);

/// Offsets into the trampoline, computed by the assembler (see `smp_tr_offsets`).
#[repr(C)]
struct Offsets {
    gdtr: u64,
    gdt: u64,
    far32: u64,
    pm32: u64,
    far64: u64,
    lm64: u64,
    cr3: u64,
    cr0: u64,
    cr4: u64,
    gs: u64,
    stack: u64,
    arg: u64,
    entry: u64,
    alive: u64,
    len: u64,
}

unsafe extern "C" {
    static smp_trampoline_start: u8;
    static smp_tr_offsets: Offsets;
}

fn offsets() -> &'static Offsets {
    // SAFETY: `smp_tr_offsets` is read-only data defined above with this layout.
    unsafe { &smp_tr_offsets }
}

/// The trampoline page and the temporary page tables, all freed on drop.
pub(super) struct Trampoline {
    page: Frames,
    /// Top-level table, its level-3 and level-2 tables for the low 2 MiB.
    tables: [Frames; 3],
}

/// Why the trampoline could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum TrampolineError {
    /// No free frame below 1 MiB.
    NoLowFrame(FrameError),
    /// No frames below 4 GiB for the temporary page tables.
    NoTableFrames(FrameError),
}

impl core::fmt::Display for TrampolineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TrampolineError::NoLowFrame(e) => write!(
                f,
                "no free frame below 1 MiB for the real-mode start-up code ({e})"
            ),
            TrampolineError::NoTableFrames(e) => write!(
                f,
                "no frames below 4 GiB for the start-up page tables ({e})"
            ),
        }
    }
}

impl Trampoline {
    /// Copies the code into a frame below 1 MiB and builds the temporary page tables.
    /// Call after every page-table entry of the kernel's upper half that the new CPUs use
    /// exists (the temporary table copies them).
    pub(super) fn new() -> Result<Trampoline, TrampolineError> {
        let mut page = mm::alloc(FrameRequest::pages(1).below(1 << 20))
            .map_err(TrampolineError::NoLowFrame)?;
        let table = || {
            mm::alloc_zeroed(FrameRequest::pages(1).below(4 << 30))
                .map_err(TrampolineError::NoTableFrames)
        };
        let mut tables = [table()?, table()?, table()?];
        let o = offsets();
        let base = page.start_address().as_u64();
        // SAFETY: the assembler defines `len` bytes from `smp_trampoline_start`; they are
        // code and data of this image, never written.
        let code =
            unsafe { core::slice::from_raw_parts(&raw const smp_trampoline_start, o.len as usize) };
        assert!(code.len() <= 4096, "the trampoline outgrew its page");
        let bytes = page.as_mut_bytes();
        bytes[..code.len()].copy_from_slice(code);
        let put32 = |b: &mut [u8], off: u64, v: u32| {
            b[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes())
        };
        // Absolute addresses the code needs: its GDT and its two far jumps.
        put32(bytes, o.gdtr + 2, (base + o.gdt) as u32);
        put32(bytes, o.far32, (base + o.pm32) as u32);
        put32(bytes, o.far64, (base + o.lm64) as u32);

        // The temporary tables: the kernel's upper half, and the low 2 MiB identity-mapped
        // with one large page so the trampoline keeps running when paging turns on.
        let [l4, l3, l2] = &mut tables;
        let present = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
        let as_table = |f: &mut Frames| {
            // SAFETY: a zeroed, page-aligned frame is a valid empty page table.
            unsafe { &mut *(f.as_mut_bytes().as_mut_ptr() as *mut PageTable) }
        };
        as_table(l2)[0].set_addr(PhysAddr::new(0), present | PageTableFlags::HUGE_PAGE);
        let l2_addr = l2.start_address();
        as_table(l3)[0].set_addr(l2_addr, present);
        let l3_addr = l3.start_address();
        let pml4 = as_table(l4);
        pml4[0].set_addr(l3_addr, present);
        let kernel = mm::phys_to_virt(mm::kernel_pml4().start_address()).as_ptr::<PageTable>();
        // SAFETY: the kernel's top-level table is mapped at this address; this only reads
        // its upper-half entries, which nothing changes while CPUs are being started.
        let kernel = unsafe { &*kernel };
        for i in 256..512 {
            pml4[i] = kernel[i].clone();
        }
        Ok(Trampoline { page, tables })
    }

    /// Physical address of the code (page-aligned, below 1 MiB).
    pub(super) fn address(&self) -> u64 {
        self.page.start_address().as_u64()
    }

    /// The start-up IPI's vector: the code's page number.
    pub(super) fn vector(&self) -> u8 {
        (self.address() >> 12) as u8
    }

    /// Fills in what the next CPU needs.
    pub(super) fn prepare(&mut self, gs_base: u64, stack_top: u64, arg: u64, entry: u64) {
        let o = offsets();
        let cr3 = self.tables[0].start_address().as_u64();
        let cr0 = x86_64::registers::control::Cr0::read_raw();
        let cr4 = x86_64::registers::control::Cr4::read_raw();
        let bytes = self.page.as_mut_bytes();
        for (off, v) in [
            (o.cr3, cr3),
            (o.cr0, cr0),
            (o.cr4, cr4),
            (o.gs, gs_base),
            (o.stack, stack_top),
            (o.arg, arg),
            (o.entry, entry),
            (o.alive, 0),
        ] {
            bytes[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Whether the last CPU started reached 64-bit mode (the code sets a flag there).
    pub(super) fn reached_long_mode(&self) -> bool {
        let p = mm::phys_to_virt(PhysAddr::new(self.address() + offsets().alive));
        // SAFETY: the page is ours and mapped; the starting CPU writes this word, so it is
        // read volatile.
        unsafe { p.as_ptr::<u64>().read_volatile() != 0 }
    }
}
