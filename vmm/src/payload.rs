//! A tiny x86 encoder for the hand-written guest payloads of the KVM probe
//! and the vCPU tests: only the dozen instructions they use, each encoded by
//! hand from the SDM and checked against a disassembler's bytes in the tests.

/// Operand size the payload runs with; it decides which encodings need the
/// 0x66 operand-size prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMode {
    /// 16-bit real mode.
    Real,
    /// 32-bit protected mode (the PVH entry state).
    Protected,
    /// 64-bit long mode.
    Long,
}

/// Builds a payload instruction by instruction.
#[derive(Debug, Clone)]
pub struct Asm {
    mode: CodeMode,
    code: Vec<u8>,
}

const OPERAND_SIZE: u8 = 0x66;

impl Asm {
    /// An empty payload for `mode`.
    pub fn new(mode: CodeMode) -> Self {
        Asm {
            mode,
            code: Vec::new(),
        }
    }

    /// The bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.code
    }

    /// Current offset from the start of the payload.
    pub fn offset(&self) -> usize {
        self.code.len()
    }

    /// Finishes the payload.
    pub fn finish(self) -> Vec<u8> {
        self.code
    }

    fn prefix_if(&mut self, mode: CodeMode) {
        if self.mode == mode {
            self.code.push(OPERAND_SIZE);
        }
    }

    /// `mov dx, imm16`.
    pub fn mov_dx(mut self, value: u16) -> Self {
        // A 16-bit operand needs the prefix outside real mode.
        if self.mode != CodeMode::Real {
            self.code.push(OPERAND_SIZE);
        }
        self.code.push(0xba);
        self.code.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `mov al, imm8`.
    pub fn mov_al(mut self, value: u8) -> Self {
        self.code.extend_from_slice(&[0xb0, value]);
        self
    }

    /// `mov eax, imm32`.
    pub fn mov_eax(mut self, value: u32) -> Self {
        self.prefix_if(CodeMode::Real);
        self.code.push(0xb8);
        self.code.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `mov ecx, imm32`.
    pub fn mov_ecx(mut self, value: u32) -> Self {
        self.prefix_if(CodeMode::Real);
        self.code.push(0xb9);
        self.code.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `out dx, al`: one byte to the port in `dx`.
    pub fn out_dx_al(mut self) -> Self {
        self.code.push(0xee);
        self
    }

    /// `out dx, eax`: four bytes to the port in `dx`.
    pub fn out_dx_eax(mut self) -> Self {
        self.prefix_if(CodeMode::Real);
        self.code.push(0xef);
        self
    }

    /// `mov dx, port` then `mov al, b; out dx, al` for every byte of `text`.
    pub fn write_port(self, port: u16, text: &[u8]) -> Self {
        text.iter()
            .fold(self.mov_dx(port), |asm, &b| asm.mov_al(b).out_dx_al())
    }

    /// `mov rax, imm64; mov dword [rax], imm32` (long mode only): a 32-bit
    /// store to an absolute address, such as a PCI BAR.
    pub fn store_dword(mut self, addr: u64, value: u32) -> Self {
        debug_assert_eq!(
            self.mode,
            CodeMode::Long,
            "store_dword is a long-mode encoding"
        );
        self.code.extend_from_slice(&[0x48, 0xb8]);
        self.code.extend_from_slice(&addr.to_le_bytes());
        self.code.extend_from_slice(&[0xc7, 0x00]);
        self.code.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// `mov ecx, n; 1: dec ecx; jnz 1b`: a countdown of `n` iterations
    /// (`n` must be at least 1; 0 would wrap to 2^32).
    pub fn countdown(self, n: u32) -> Self {
        let mut asm = self.mov_ecx(n);
        asm.prefix_if(CodeMode::Real);
        // dec ecx (ff /1), then jnz back over both instructions.
        asm.code.extend_from_slice(&[0xff, 0xc9]);
        let back = if asm.mode == CodeMode::Real { 5 } else { 4 };
        asm.code.extend_from_slice(&[0x75, (-(back as i8)) as u8]);
        asm
    }

    /// `mov al, value; out port, al` with an 8-bit immediate port.
    pub fn out_imm8(mut self, port: u8, value: u8) -> Self {
        self.code.extend_from_slice(&[0xb0, value, 0xe6, port]);
        self
    }

    /// `in al, dx`: one byte from the port in `dx`.
    pub fn in_al_dx(mut self) -> Self {
        self.code.push(0xec);
        self
    }

    /// `mov edi, [rsi + disp]` (long mode): load a 32-bit pointer from the
    /// structure `rsi` points to, such as `cmd_line_ptr` in the zero page.
    pub fn load_edi_from_rsi(mut self, disp: u32) -> Self {
        self.code.extend_from_slice(&[0x8b, 0xbe]);
        self.code.extend_from_slice(&disp.to_le_bytes());
        self
    }

    /// Writes the NUL-terminated string at `rdi` to the port in `dx`, one
    /// `out` per byte (long mode):
    /// `1: mov al, [rdi]; test al, al; jz 2f; out dx, al; inc rdi; jmp 1b; 2:`.
    pub fn out_cstring_at_rdi(mut self) -> Self {
        self.code.extend_from_slice(&[
            0x8a, 0x07, // mov al, [rdi]
            0x84, 0xc0, // test al, al
            0x74, 0x06, // jz +6
            0xee, // out dx, al
            0x48, 0xff, 0xc7, // inc rdi
            0xeb, 0xf4, // jmp -12
        ]);
        self
    }

    /// `mov edi, [ebx + disp]` (protected mode): load a 32-bit pointer from
    /// the structure `ebx` points to, such as `cmdline_paddr` in the PVH
    /// start info.
    pub fn load_edi_from_ebx(mut self, disp: u32) -> Self {
        self.code.extend_from_slice(&[0x8b, 0xbb]);
        self.code.extend_from_slice(&disp.to_le_bytes());
        self
    }

    /// Writes the NUL-terminated string at `edi` to the port in `dx`
    /// (protected mode):
    /// `1: mov al, [edi]; test al, al; jz 2f; out dx, al; inc edi; jmp 1b; 2:`.
    pub fn out_cstring_at_edi(mut self) -> Self {
        self.code.extend_from_slice(&[
            0x8a, 0x07, // mov al, [edi]
            0x84, 0xc0, // test al, al
            0x74, 0x04, // jz +4
            0xee, // out dx, al
            0x47, // inc edi
            0xeb, 0xf6, // jmp -10
        ]);
        self
    }

    /// `in eax, dx`: four bytes from the port in `dx`.
    pub fn in_eax_dx(mut self) -> Self {
        self.prefix_if(CodeMode::Real);
        self.code.push(0xed);
        self
    }

    /// Echoes bytes from COM1 back to it until a newline, polling the line
    /// status register (long mode):
    /// `1: mov dx, 0x3fd; in al, dx; test al, 1; jz 1b; mov dx, 0x3f8;
    /// in al, dx; out dx, al; cmp al, 10; jne 1b`.
    pub fn echo_com1_line(mut self) -> Self {
        self.code.extend_from_slice(&[
            0x66, 0xba, 0xfd, 0x03, // mov dx, 0x3fd
            0xec, // in al, dx
            0xa8, 0x01, // test al, 1
            0x74, 0xf7, // jz -9
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xec, // in al, dx
            0xee, // out dx, al
            0x3c, 0x0a, // cmp al, '\n'
            0x75, 0xed, // jne -19
        ]);
        self
    }

    /// `sti`: accept maskable interrupts.
    pub fn sti(mut self) -> Self {
        self.code.push(0xfb);
        self
    }

    /// `cli`: mask interrupts.
    pub fn cli(mut self) -> Self {
        self.code.push(0xfa);
        self
    }

    /// `1: hlt; jmp 1b`: wait for interrupts forever.
    pub fn halt_loop(mut self) -> Self {
        self.code.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
        self
    }

    /// `hlt`: without an in-kernel irqchip this exits to the VMM.
    pub fn hlt(mut self) -> Self {
        self.code.push(0xf4);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected bytes are what GNU as produces for the same instructions
    // (`.code64` / `.code16`), except that in 16-bit code as picks the
    // one-byte `dec ecx` (0x49) where we use `ff /1`, valid in both modes.
    #[test]
    fn long_mode_encodings() {
        let code = Asm::new(CodeMode::Long)
            .mov_dx(0x3f8)
            .mov_al(b'A')
            .out_dx_al()
            .mov_eax(0xdead_beef)
            .out_dx_eax()
            .countdown(1000)
            .store_dword(0xc000_1000, 0x1234_5678)
            .hlt()
            .finish();
        let expected: &[u8] = &[
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xb0, 0x41, // mov al, 'A'
            0xee, // out dx, al
            0xb8, 0xef, 0xbe, 0xad, 0xde, // mov eax, 0xdeadbeef
            0xef, // out dx, eax
            0xb9, 0xe8, 0x03, 0x00, 0x00, // mov ecx, 1000
            0xff, 0xc9, // dec ecx
            0x75, 0xfc, // jnz -4
            0x48, 0xb8, 0x00, 0x10, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, // movabs rax
            0xc7, 0x00, 0x78, 0x56, 0x34, 0x12, // mov dword [rax], imm32
            0xf4, // hlt
        ];
        assert_eq!(code, expected);
    }

    // GNU as (`.code32`) picks a disp8 for `mov edi, [ebx + 0x18]`
    // (8b 7b 18); the disp32 form here is the same instruction.
    #[test]
    fn protected_mode_encodings() {
        let code = Asm::new(CodeMode::Protected)
            .mov_dx(0x3f8)
            .load_edi_from_ebx(0x18)
            .out_cstring_at_edi()
            .mov_eax(0xcafe_f00d)
            .out_dx_eax()
            .finish();
        let expected: &[u8] = &[
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0x8b, 0xbb, 0x18, 0x00, 0x00, 0x00, // mov edi, [ebx + 0x18]
            0x8a, 0x07, 0x84, 0xc0, 0x74, 0x04, // mov al, [edi]; test; jz
            0xee, 0x47, 0xeb, 0xf6, // out dx, al; inc edi; jmp back
            0xb8, 0x0d, 0xf0, 0xfe, 0xca, // mov eax, imm32
            0xef, // out dx, eax
        ];
        assert_eq!(code, expected);
    }

    #[test]
    fn real_mode_encodings() {
        let code = Asm::new(CodeMode::Real)
            .mov_dx(0x600)
            .mov_eax(0xcafe_f00d)
            .out_dx_eax()
            .countdown(3)
            .hlt()
            .finish();
        let expected: &[u8] = &[
            0xba, 0x00, 0x06, // mov dx, 0x600
            0x66, 0xb8, 0x0d, 0xf0, 0xfe, 0xca, // mov eax, imm32
            0x66, 0xef, // out dx, eax
            0x66, 0xb9, 0x03, 0x00, 0x00, 0x00, // mov ecx, 3
            0x66, 0xff, 0xc9, // dec ecx
            0x75, 0xfb, // jnz -5
            0xf4,
        ];
        assert_eq!(code, expected);
    }

    #[test]
    fn interrupt_helpers() {
        let code = Asm::new(CodeMode::Real)
            .out_imm8(0x21, 0xef)
            .in_al_dx()
            .sti()
            .cli()
            .halt_loop()
            .finish();
        // mov al, 0xef; out 0x21, al; in al, dx; sti; cli; 1: hlt; jmp 1b
        assert_eq!(
            code,
            [0xb0, 0xef, 0xe6, 0x21, 0xec, 0xfb, 0xfa, 0xf4, 0xeb, 0xfd]
        );
    }

    #[test]
    fn write_port_emits_one_out_per_byte() {
        let code = Asm::new(CodeMode::Long).write_port(0x3f8, b"ok").finish();
        assert_eq!(
            code,
            [0x66, 0xba, 0xf8, 0x03, 0xb0, b'o', 0xee, 0xb0, b'k', 0xee]
        );
    }
}
