//! netfw's XDP programs, written here as eBPF instructions (no compiler, no prebuilt object).
//!
//! - `steer`: every frame of a receive queue goes to that queue's AF_XDP socket:
//!   `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`.
//! - `forward_then_steer` (the VIP-facing NIC, when netfw hands established flows to the
//!   kernel): a client's plain TCP/UDP packet whose 5-tuple is in the kernel's flow map, sent
//!   to this NIC's MAC, is forwarded right there: its MACs rewritten to its backend's (from the
//!   backends array), counted, and sent out (`XDP_TX` on the same NIC, `bpf_redirect` to the
//!   RS-facing one). Everything else is steered as above: SYN, FIN and RST (they change the
//!   flow's state), fragments, IP options, other flows, ARP, ICMP, the DIP's traffic.
//!
//! The layouts the program shares with netfw (`kernel_flows`):
//!
//! ```text
//! flow key   (16 B): client IPv4, VIP, client port, VIP port (as on the wire), protocol, 0 0 0
//! flow value (16 B): backend index u32, 0 u32, last packet forwarded (CLOCK_MONOTONIC ns) u64
//! backend    (40 B): valid u32, out ifindex u32, MAC of the real server [8..14],
//!                    MAC to send from [18..24], frames u64 [24], bytes (IP length) u64 [32]
//! ```

/// Bytes of a flow key.
pub const FLOW_KEY: usize = 16;
/// Where in a flow value: the last-seen stamp.
pub const FLOW_SEEN: usize = 8;
/// Bytes of a flow value.
pub const FLOW_VALUE: usize = 16;
/// Bytes of a backend entry.
pub const BACKEND: usize = 40;
/// Where in a backend entry: valid flag, out ifindex, server MAC, source MAC, frames, bytes.
pub const BACKEND_VALID: usize = 0;
/// Out ifindex.
pub const BACKEND_IFINDEX: usize = 4;
/// Real server's MAC.
pub const BACKEND_DST_MAC: usize = 8;
/// The MAC the frame leaves with.
pub const BACKEND_SRC_MAC: usize = 18;
/// Frames forwarded.
pub const BACKEND_FRAMES: usize = 24;
/// Bytes forwarded.
pub const BACKEND_BYTES: usize = 32;

const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_KTIME_GET_NS: i32 = 5;
const HELPER_REDIRECT: i32 = 23;
const HELPER_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;

/// `struct xdp_md` fields.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_INGRESS_IFINDEX: i16 = 12;
const MD_RX_QUEUE_INDEX: i16 = 16;

// Opcodes (class | size/op | source).
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const STX_W: u8 = 0x63;
const STX_H: u8 = 0x6b;
const STX_DW: u8 = 0x7b;
const ATOMIC_DW: u8 = 0xdb;
const MOV_K: u8 = 0xb7;
const MOV_X: u8 = 0xbf;
const ADD_K: u8 = 0x07;
const AND_K: u8 = 0x57;
const BE: u8 = 0xdc;
const LD_IMM64: u8 = 0x18;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const JGT_X: u8 = 0x2d;
const JNE32_K: u8 = 0x56;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// `src_reg` of an `LD_IMM64` whose immediate is a map's descriptor.
const PSEUDO_MAP_FD: u8 = 1;

/// A layout offset (all under 64) as an instruction's offset field.
fn off(at: usize) -> i16 {
    i16::try_from(at).unwrap_or(i16::MAX)
}

/// Jump targets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Steer,
    Key,
    Redirect,
}

/// A program being written: instructions, and jumps resolved when done.
#[derive(Default)]
struct Asm {
    code: Vec<[u8; 8]>,
    jumps: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Self {
        let mut i = [0u8; 8];
        i[0] = code;
        i[1] = (src << 4) | (dst & 0x0f);
        i[2..4].copy_from_slice(&off.to_le_bytes());
        i[4..8].copy_from_slice(&imm.to_le_bytes());
        self.code.push(i);
        self
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) -> &mut Self {
        self.jumps.push((self.code.len(), to));
        self.raw(code, dst, src, 0, imm)
    }
    fn label(&mut self, l: Label) -> &mut Self {
        self.labels.push((l, self.code.len()));
        self
    }
    fn map(&mut self, dst: u8, fd: i32) -> &mut Self {
        self.raw(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd).raw(0, 0, 0, 0, 0)
    }
    fn finish(mut self) -> Vec<u8> {
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = self.labels.iter().find(|(l, _)| *l == to).map_or(at + 1, |(_, i)| *i);
            let off = i64::try_from(target).unwrap_or(0) - i64::try_from(at).unwrap_or(0) - 1;
            let off = i16::try_from(off).unwrap_or(0);
            self.code[at][2..4].copy_from_slice(&off.to_le_bytes());
        }
        self.code.concat()
    }
    /// Steer unless `data + reach <= data_end`; leaves r2 = data, r3 = data_end (context in r6).
    fn packet_or_steer(&mut self, reach: i32) -> &mut Self {
        self.raw(LDX_W, 2, 6, MD_DATA, 0).raw(LDX_W, 3, 6, MD_DATA_END, 0).raw(MOV_X, 4, 2, 0, 0).raw(ADD_K, 4, 0, 0, reach).jump(
            JGT_X,
            4,
            3,
            0,
            Label::Steer,
        )
    }
    /// `into` = the value of the key at `r10 + key_at` in map `fd`; no entry: steer.
    fn lookup_or_steer(&mut self, fd: i32, key_at: i32, into: u8) -> &mut Self {
        self.map(1, fd)
            .raw(MOV_X, 2, 10, 0, 0)
            .raw(ADD_K, 2, 0, 0, key_at)
            .raw(CALL, 0, 0, 0, HELPER_MAP_LOOKUP)
            .jump(JEQ_K, 0, 0, 0, Label::Steer)
            .raw(MOV_X, into, 0, 0, 0)
    }
    /// The steering tail: `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS)`,
    /// with the context in `ctx`.
    fn steer(&mut self, ctx: u8, xsks: i32) -> &mut Self {
        self.raw(LDX_W, 2, ctx, MD_RX_QUEUE_INDEX, 0)
            .map(1, xsks)
            .raw(MOV_K, 3, 0, 0, XDP_PASS)
            .raw(CALL, 0, 0, 0, HELPER_REDIRECT_MAP)
            .raw(EXIT, 0, 0, 0, 0)
    }
}

/// The steering program, redirecting through the XSK map `xsks`.
pub fn steer(xsks: i32) -> Vec<u8> {
    let mut a = Asm::default();
    a.steer(1, xsks);
    a.finish()
}

/// The maps and facts the forwarding program is built with.
#[derive(Clone, Copy, Debug)]
pub struct ForwardMaps {
    /// The XSK map (frames it does not forward go to netfw).
    pub xsks: i32,
    /// The kernel's flow map.
    pub flows: i32,
    /// The backends array.
    pub backends: i32,
    /// The NIC's MAC: only frames sent to it are forwarded.
    pub mac: [u8; 6],
}

/// The program that forwards established flows and steers everything else.
pub fn forward_then_steer(m: ForwardMaps) -> Vec<u8> {
    use Label::{Key, Redirect, Steer};
    let mac_lo = i32::from_le_bytes([m.mac[0], m.mac[1], m.mac[2], m.mac[3]]);
    let mac_hi = i32::from(u16::from_le_bytes([m.mac[4], m.mac[5]]));
    let mut a = Asm::default();
    // r6 = ctx; r2 = data; r3 = data_end; Ethernet + IPv4 (no options) + ports in reach.
    a.raw(MOV_X, 6, 1, 0, 0)
        .packet_or_steer(38)
        // To this NIC's MAC, IPv4, header of 20 bytes, not a fragment.
        .raw(LDX_W, 4, 2, 0, 0)
        .jump(JNE32_K, 4, 0, mac_lo, Steer)
        .raw(LDX_H, 4, 2, 4, 0)
        .jump(JNE_K, 4, 0, mac_hi, Steer)
        .raw(LDX_H, 4, 2, 12, 0)
        .jump(JNE_K, 4, 0, 0x0008, Steer)
        .raw(LDX_B, 4, 2, 14, 0)
        .jump(JNE_K, 4, 0, 0x45, Steer)
        .raw(LDX_H, 4, 2, 20, 0)
        .raw(AND_K, 4, 0, 0, 0xff3f)
        .jump(JNE_K, 4, 0, 0, Steer)
        // r5 = protocol: UDP, or TCP without SYN, FIN or RST.
        .raw(LDX_B, 5, 2, 23, 0)
        .jump(JEQ_K, 5, 0, 17, Key)
        .jump(JNE_K, 5, 0, 6, Steer)
        .raw(MOV_X, 4, 2, 0, 0)
        .raw(ADD_K, 4, 0, 0, 54)
        .jump(JGT_X, 4, 3, 0, Steer)
        .raw(LDX_B, 4, 2, 47, 0)
        .raw(AND_K, 4, 0, 0, 0x07)
        .jump(JNE_K, 4, 0, 0, Steer)
        // The flow key on the stack at r10-16; r7 = IP total length.
        .label(Key)
        .raw(LDX_W, 4, 2, 26, 0)
        .raw(STX_W, 10, 4, -16, 0)
        .raw(LDX_W, 4, 2, 30, 0)
        .raw(STX_W, 10, 4, -12, 0)
        .raw(LDX_W, 4, 2, 34, 0)
        .raw(STX_W, 10, 4, -8, 0)
        .raw(STX_W, 10, 5, -4, 0)
        .raw(LDX_H, 7, 2, 16, 0)
        .raw(BE, 7, 0, 0, 16)
        // r8 = the flow's value, or steer.
        .lookup_or_steer(m.flows, -16, 8)
        // r9 = its backend, or steer; a backend not valid now (a reload, a MAC being
        // rewritten) leaves the frame to netfw.
        .raw(LDX_W, 1, 8, 0, 0)
        .raw(STX_W, 10, 1, -20, 0)
        .lookup_or_steer(m.backends, -20, 9)
        .raw(LDX_W, 1, 9, off(BACKEND_VALID), 0)
        .jump(JEQ_K, 1, 0, 0, Steer)
        // Rewrite the MACs (the packet pointers again: the calls took them).
        .packet_or_steer(14)
        .raw(LDX_W, 4, 9, off(BACKEND_DST_MAC), 0)
        .raw(STX_W, 2, 4, 0, 0)
        .raw(LDX_H, 4, 9, off(BACKEND_DST_MAC + 4), 0)
        .raw(STX_H, 2, 4, 4, 0)
        .raw(LDX_H, 4, 9, off(BACKEND_SRC_MAC), 0)
        .raw(STX_H, 2, 4, 6, 0)
        .raw(LDX_W, 4, 9, off(BACKEND_SRC_MAC + 2), 0)
        .raw(STX_W, 2, 4, 8, 0)
        // The flow was seen now; the backend counts the frame and its bytes.
        .raw(CALL, 0, 0, 0, HELPER_KTIME_GET_NS)
        .raw(STX_DW, 8, 0, off(FLOW_SEEN), 0)
        .raw(MOV_K, 1, 0, 0, 1)
        .raw(ATOMIC_DW, 9, 1, off(BACKEND_FRAMES), 0)
        .raw(ATOMIC_DW, 9, 7, off(BACKEND_BYTES), 0)
        // Out of this NIC, or redirected to the other.
        .raw(LDX_W, 1, 9, off(BACKEND_IFINDEX), 0)
        .raw(LDX_W, 2, 6, MD_INGRESS_IFINDEX, 0)
        .jump(JNE_X, 1, 2, 0, Redirect)
        .raw(MOV_K, 0, 0, 0, XDP_TX)
        .raw(EXIT, 0, 0, 0, 0)
        .label(Redirect)
        .raw(MOV_K, 2, 0, 0, 0)
        .raw(CALL, 0, 0, 0, HELPER_REDIRECT)
        .raw(EXIT, 0, 0, 0, 0)
        .label(Steer)
        .steer(6, m.xsks);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steering_program_is_the_six_instructions_of_a_queue_redirect() {
        let p = steer(7);
        assert_eq!(p.len(), 48);
        assert_eq!(&p[0..8], &[0x61, 0x12, 16, 0, 0, 0, 0, 0], "r2 = *(u32 *)(r1 + 16)");
        assert_eq!(&p[8..16], &[0x18, 0x11, 0, 0, 7, 0, 0, 0], "r1 = map fd 7 (pseudo map fd)");
        assert_eq!(&p[32..40], &[0x85, 0, 0, 0, 51, 0, 0, 0], "call bpf_redirect_map");
        assert_eq!(&p[40..48], &[0x95, 0, 0, 0, 0, 0, 0, 0], "exit");
    }

    #[test]
    fn every_jump_of_the_forwarding_program_lands_inside_it_and_unsteered_paths_exit() {
        let p = forward_then_steer(ForwardMaps { xsks: 3, flows: 4, backends: 5, mac: [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc] });
        let insns: Vec<&[u8]> = p.chunks(8).collect();
        let n = i64::try_from(insns.len()).unwrap();
        for (i, ins) in insns.iter().enumerate() {
            let class = ins[0] & 0x07;
            if class == 0x05 || class == 0x06 {
                if ins[0] == CALL || ins[0] == EXIT {
                    continue;
                }
                let off = i64::from(i16::from_le_bytes([ins[2], ins[3]]));
                let to = i64::try_from(i).unwrap() + 1 + off;
                assert!(off >= 0 && to < n, "jump at {i} lands at {to}");
            }
        }
        // The MAC check compares the first four bytes as the wire has them.
        assert!(insns.iter().any(|i| i[0] == JNE32_K && i[4..8] == [0x52, 0x54, 0, 0xaa]));
        assert_eq!(*insns.last().unwrap(), &[EXIT, 0, 0, 0, 0, 0, 0, 0]);
        // The three maps are referenced by descriptor.
        for fd in [3u8, 4, 5] {
            assert!(insns.iter().any(|i| i[0] == LD_IMM64 && i[1] == 0x10 | (i[1] & 0x0f) && i[4] == fd));
        }
    }
}
