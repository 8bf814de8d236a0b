//! netfw's eBPF programs, written here as instructions (no compiler, no prebuilt object).
//!
//! - `steer` (XDP): every frame of a receive queue goes to that queue's AF_XDP socket:
//!   `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`.
//! - `forward` (the VIP-facing NIC, when netfw hands established flows to the kernel): a
//!   client's plain TCP/UDP packet whose 5-tuple is in the kernel's flow map, sent to this
//!   NIC's MAC, is forwarded right there: its MACs rewritten to its backend's (from the
//!   backends array), counted, and sent out. Everything else is left to netfw: SYN, FIN and
//!   RST (they change the flow's state), fragments, IP options, other flows, ARP, ICMP, the
//!   DIP's traffic. It runs in one of two hooks:
//!   - XDP (with AF_XDP): forwarded with `XDP_TX` on the same NIC or `bpf_redirect` to the
//!     RS-facing one; the rest is steered as above.
//!   - tc ingress (with AF_PACKET): on the kernel's socket buffer, merged frames (GRO, the
//!     host's TSO) included, forwarded whole with `bpf_redirect` to a NIC that segments them
//!     if it must; the rest goes on (`TC_ACT_OK`) to netfw's socket.
//! - `skip_forwarded` (socket filter, with the tc hook): an AF_PACKET socket sees each frame
//!   before tc does, so this filter keeps from netfw's socket exactly the frames `forward`
//!   will forward: the same checks, read with `LD_ABS`.
//! - `mark` (tc ingress, ipvs mode): a packet to a VIP whose protocol and destination port a
//!   rule covers gets that rule's firewall mark (`skb->mark`), which IPVS looks its
//!   firewall-mark services up by (`marks`); every packet goes on (`TC_ACT_OK`).
//!
//! The layouts the programs share with netfw (`kernel_flows`):
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
const HELPER_SKB_PULL_DATA: i32 = 39;
const HELPER_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
const TC_ACT_OK: i32 = 0;

/// `struct xdp_md` fields.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_INGRESS_IFINDEX: i16 = 12;
const MD_RX_QUEUE_INDEX: i16 = 16;
/// `struct __sk_buff` fields.
const SKB_LEN: i16 = 0;
const SKB_MARK: i16 = 8;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
/// The reach of the headers the programs read: Ethernet, IPv4 without options, then the
/// ports (UDP), or up to TCP's flags.
const REACH_PORTS: i32 = 38;
const REACH_TCP_FLAGS: i32 = 54;

// Opcodes (class | size/op | source).
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const LD_ABS_W: u8 = 0x20;
const LD_ABS_H: u8 = 0x28;
const LD_ABS_B: u8 = 0x30;
const STX_W: u8 = 0x63;
const STX_H: u8 = 0x6b;
const STX_DW: u8 = 0x7b;
const ATOMIC_DW: u8 = 0xdb;
const MOV_K: u8 = 0xb7;
const MOV_X: u8 = 0xbf;
const ADD_K: u8 = 0x07;
const ADD_X: u8 = 0x0f;
const LSH_K: u8 = 0x67;
const AND_K: u8 = 0x57;
const BE: u8 = 0xdc;
const LD_IMM64: u8 = 0x18;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const JGT_X: u8 = 0x2d;
const JGT_K: u8 = 0x25;
const JA: u8 = 0x05;
const JLT_K: u8 = 0xa5;
const JLE_K: u8 = 0xb5;
const JLE_X: u8 = 0xbd;
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
    /// Not forwarded here: steered to netfw (XDP), passed on (tc), kept (filter).
    Miss,
    Key,
    Redirect,
    Parse,
    /// The marking program's next rule.
    Rule(usize),
}

/// How a program reads the headers: in place through the packet pointers in r2/r3 (XDP, tc:
/// loads see the wire's bytes in little-endian order), or with `LD_ABS` into r0 (a socket
/// filter: host order, i.e. the wire's big-endian numbers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Read {
    Direct,
    Abs,
}

/// The header checks every forwarding program makes, whichever way it reads: sent to the NIC's
/// MAC, IPv4 with a 20-byte header, not a fragment; then UDP, or TCP without SYN, FIN or RST.
/// (offset, bytes, mask, value), masks and values as the wire's big-endian numbers.
const ETHERTYPE_IPV4: (usize, u8, u32, u32) = (12, 2, 0xffff, 0x0800);
const IPV4_NO_OPTIONS: (usize, u8, u32, u32) = (14, 1, 0xff, 0x45);
const NOT_A_FRAGMENT: (usize, u8, u32, u32) = (20, 2, 0x3fff, 0);
const TCP_NO_SYN_FIN_RST: (usize, u8, u32, u32) = (47, 1, 0x07, 0);
const IP_PROTOCOL: usize = 23;

/// A big-endian number of `size` bytes as a little-endian load of the same bytes reads it.
fn as_loaded(size: u8, x: u32) -> u32 {
    match size {
        1 => x & 0xff,
        2 => u32::from(u16::try_from(x & 0xffff).unwrap_or(0).swap_bytes()),
        _ => x.swap_bytes(),
    }
}

/// A 32-bit pattern as an instruction's immediate.
fn imm(x: u32) -> i32 {
    i32::from_ne_bytes(x.to_ne_bytes())
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
    /// tc: a socket buffer (in r6) may hold only part of the headers in its linear part (a
    /// merged frame, a driver that copies just the Ethernet header): pull `reach` bytes in when
    /// short, as far as the frame goes.
    fn pull_headers(&mut self, reach: i32) -> &mut Self {
        self.raw(LDX_W, 2, 6, SKB_DATA, 0)
            .raw(LDX_W, 3, 6, SKB_DATA_END, 0)
            .raw(MOV_X, 4, 2, 0, 0)
            .raw(ADD_K, 4, 0, 0, reach)
            .jump(JLE_X, 4, 3, 0, Label::Parse)
            .raw(LDX_W, 2, 6, SKB_LEN, 0)
            .raw(JLE_K, 2, 0, 1, reach)
            .raw(MOV_K, 2, 0, 0, reach)
            .raw(MOV_X, 1, 6, 0, 0)
            .raw(CALL, 0, 0, 0, HELPER_SKB_PULL_DATA)
            .label(Label::Parse)
    }
    /// Miss unless `data + reach <= data_end`; leaves r2 = data, r3 = data_end (context in r6).
    fn packet_or_miss(&mut self, hook: Hook, reach: i32) -> &mut Self {
        let (data, end) = hook.data_offsets();
        self.raw(LDX_W, 2, 6, data, 0).raw(LDX_W, 3, 6, end, 0).raw(MOV_X, 4, 2, 0, 0).raw(ADD_K, 4, 0, 0, reach).jump(
            JGT_X,
            4,
            3,
            0,
            Label::Miss,
        )
    }
    /// Miss unless the `size` bytes at `at`, masked, equal `value` (see `ETHERTYPE_IPV4`).
    fn expect(&mut self, read: Read, (at, size, mask, value): (usize, u8, u32, u32)) -> &mut Self {
        let reg = match read {
            Read::Direct => {
                let op = match size {
                    1 => LDX_B,
                    2 => LDX_H,
                    _ => LDX_W,
                };
                self.raw(op, 4, 2, off(at), 0);
                4
            }
            Read::Abs => {
                let op = match size {
                    1 => LD_ABS_B,
                    2 => LD_ABS_H,
                    _ => LD_ABS_W,
                };
                self.raw(op, 0, 0, 0, i32::try_from(at).unwrap_or(0));
                0
            }
        };
        let (mask, value) = if read == Read::Direct { (as_loaded(size, mask), as_loaded(size, value)) } else { (mask, value) };
        let full = as_loaded(size, u32::MAX);
        if mask != full {
            self.raw(AND_K, reg, 0, 0, imm(mask));
        }
        // 32-bit compare: a 64-bit one would sign-extend a value with its top bit set.
        self.jump(JNE32_K, reg, 0, imm(value), Label::Miss)
    }
    /// The header checks (see `ETHERTYPE_IPV4`) of a frame at least `REACH_PORTS` long: to
    /// `mac`, IPv4 without options, not a fragment; leaves the protocol in `proto` and jumps to
    /// `Key` for UDP; TCP (at least `REACH_TCP_FLAGS` long, its length in r7 for `Abs`) goes on
    /// to `Key` only without SYN, FIN or RST; everything else misses.
    fn header_checks(&mut self, read: Read, mac: [u8; 6], proto: u8) -> &mut Self {
        let mac_lo = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
        let mac_hi = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
        self.expect(read, (0, 4, u32::MAX, mac_lo))
            .expect(read, (4, 2, 0xffff, mac_hi))
            .expect(read, ETHERTYPE_IPV4)
            .expect(read, IPV4_NO_OPTIONS)
            .expect(read, NOT_A_FRAGMENT);
        match read {
            Read::Direct => self.raw(LDX_B, proto, 2, off(IP_PROTOCOL), 0),
            Read::Abs => self.raw(LD_ABS_B, 0, 0, 0, i32::try_from(IP_PROTOCOL).unwrap_or(0)).raw(MOV_X, proto, 0, 0, 0),
        };
        self.jump(JEQ_K, proto, 0, 17, Label::Key).jump(JNE_K, proto, 0, 6, Label::Miss);
        match read {
            Read::Direct => self.raw(MOV_X, 4, 2, 0, 0).raw(ADD_K, 4, 0, 0, REACH_TCP_FLAGS).jump(JGT_X, 4, 3, 0, Label::Miss),
            Read::Abs => self.jump(JLT_K, 7, 0, REACH_TCP_FLAGS, Label::Miss),
        };
        self.expect(read, TCP_NO_SYN_FIN_RST)
    }
    /// `into` = the value of the key at `r10 + key_at` in map `fd`; no entry: miss.
    fn lookup_or_miss(&mut self, fd: i32, key_at: i32, into: u8) -> &mut Self {
        self.map(1, fd)
            .raw(MOV_X, 2, 10, 0, 0)
            .raw(ADD_K, 2, 0, 0, key_at)
            .raw(CALL, 0, 0, 0, HELPER_MAP_LOOKUP)
            .jump(JEQ_K, 0, 0, 0, Label::Miss)
            .raw(MOV_X, into, 0, 0, 0)
    }
    /// With the flow key on the stack at r10-16: r8 = the flow's value, r9 = its backend,
    /// which must be valid now (a reload, a MAC being rewritten: the frame is netfw's).
    fn flow_and_backend_or_miss(&mut self, m: ForwardMaps) -> &mut Self {
        self.lookup_or_miss(m.flows, -16, 8)
            .raw(LDX_W, 1, 8, 0, 0)
            .raw(STX_W, 10, 1, -20, 0)
            .lookup_or_miss(m.backends, -20, 9)
            .raw(LDX_W, 1, 9, off(BACKEND_VALID), 0)
            .jump(JEQ_K, 1, 0, 0, Label::Miss)
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

/// One rule of the marking program: a packet to `vip` of protocol `proto` (6, 17) whose
/// destination port is in `first..=last` gets `mark` (0: none, the packet is a more specific
/// service's), and the rules after it are not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkRule {
    /// The VIP.
    pub vip: [u8; 4],
    /// IP protocol number.
    pub proto: u8,
    /// First destination port.
    pub first: u16,
    /// Last destination port.
    pub last: u16,
    /// The firewall mark (0: leave unmarked).
    pub mark: u32,
}

/// The reach the marking program pulls in: Ethernet, the longest IPv4 header, the ports.
const REACH_MARK: i32 = 14 + 60 + 4;

/// The marking program for tc ingress: the first of `rules` that a packet matches (IPv4, the
/// first fragment or none, header options allowed) sets its mark; every packet goes on.
pub fn mark(rules: &[MarkRule]) -> Vec<u8> {
    use Label::{Miss, Rule};
    let mut a = Asm::default();
    // r6 = the socket buffer; the headers pulled into its linear part as far as they go.
    a.raw(MOV_X, 6, 1, 0, 0)
        .pull_headers(REACH_MARK)
        // IPv4, not a later fragment (the first has the ports; IPVS sees the reassembled
        // packet with the first fragment's mark).
        .packet_or_miss(Hook::Tc, 34)
        .expect(Read::Direct, ETHERTYPE_IPV4)
        .expect(Read::Direct, (20, 2, 0x1fff, 0))
        // r7 = the IP header's length (20 to 60), r8 = the VIP as loaded, r9 = the protocol.
        .raw(LDX_B, 7, 2, 14, 0)
        .raw(AND_K, 7, 0, 0, 0x0f)
        .raw(LSH_K, 7, 0, 0, 2)
        .jump(JLT_K, 7, 0, 20, Miss)
        .raw(LDX_W, 8, 2, 30, 0)
        .raw(LDX_B, 9, 2, off(IP_PROTOCOL), 0)
        // r7 = the destination port, in host order.
        .raw(MOV_X, 5, 2, 0, 0)
        .raw(ADD_K, 5, 0, 0, 14)
        .raw(ADD_X, 5, 7, 0, 0)
        .raw(MOV_X, 4, 5, 0, 0)
        .raw(ADD_K, 4, 0, 0, 4)
        .jump(JGT_X, 4, 3, 0, Miss)
        .raw(LDX_H, 7, 5, 2, 0)
        .raw(BE, 7, 0, 0, 16);
    for (i, r) in rules.iter().enumerate() {
        a.jump(JNE32_K, 8, 0, imm(as_loaded(4, u32::from_be_bytes(r.vip))), Rule(i)).jump(JNE_K, 9, 0, i32::from(r.proto), Rule(i));
        if r.first > 0 {
            a.jump(JLT_K, 7, 0, i32::from(r.first), Rule(i));
        }
        if r.last < u16::MAX {
            a.jump(JGT_K, 7, 0, i32::from(r.last), Rule(i));
        }
        if r.mark != 0 {
            a.raw(MOV_K, 1, 0, 0, imm(r.mark)).raw(STX_W, 6, 1, SKB_MARK, 0);
        }
        a.jump(JA, 0, 0, 0, Miss).label(Rule(i));
    }
    a.label(Miss).raw(MOV_K, 0, 0, 0, TC_ACT_OK).raw(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The maps and facts the forwarding program and its filter are built with.
#[derive(Clone, Copy, Debug)]
pub struct ForwardMaps {
    /// The kernel's flow map.
    pub flows: i32,
    /// The backends array.
    pub backends: i32,
    /// The NIC's MAC: only frames sent to it are forwarded.
    pub mac: [u8; 6],
}

/// Where the forwarding program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP, steering what it does not forward through the XSK map `xsks`.
    Xdp {
        /// The XSK map.
        xsks: i32,
    },
    /// tc ingress, passing on what it does not forward.
    Tc,
}

impl Hook {
    /// Where the context holds `data` and `data_end`.
    fn data_offsets(self) -> (i16, i16) {
        match self {
            Hook::Xdp { .. } => (MD_DATA, MD_DATA_END),
            Hook::Tc => (SKB_DATA, SKB_DATA_END),
        }
    }
}

/// The program that forwards established flows in `hook`, leaving everything else to netfw.
pub fn forward(m: ForwardMaps, hook: Hook) -> Vec<u8> {
    use Label::{Key, Miss, Redirect};
    let mut a = Asm::default();
    a.raw(MOV_X, 6, 1, 0, 0);
    if hook == Hook::Tc {
        // The headers this program reads, in the linear part (its socket filter reads the
        // whole frame with LD_ABS, and needs no pull).
        a.pull_headers(REACH_TCP_FLAGS);
    }
    // r2 = data; r3 = data_end; Ethernet + IPv4 (no options) + ports in reach; r5 = protocol.
    a.packet_or_miss(hook, REACH_PORTS)
        .header_checks(Read::Direct, m.mac, 5)
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
        .flow_and_backend_or_miss(m)
        // Rewrite the MACs (the packet pointers again: the calls took them).
        .packet_or_miss(hook, 14)
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
        .raw(LDX_W, 1, 9, off(BACKEND_IFINDEX), 0);
    match hook {
        Hook::Xdp { xsks } => {
            // Out of this NIC, or redirected to the other.
            a.raw(LDX_W, 2, 6, MD_INGRESS_IFINDEX, 0)
                .jump(JNE_X, 1, 2, 0, Redirect)
                .raw(MOV_K, 0, 0, 0, XDP_TX)
                .raw(EXIT, 0, 0, 0, 0)
                .label(Redirect)
                .raw(MOV_K, 2, 0, 0, 0)
                .raw(CALL, 0, 0, 0, HELPER_REDIRECT)
                .raw(EXIT, 0, 0, 0, 0)
                .label(Miss)
                .steer(6, xsks);
        }
        Hook::Tc => {
            // Out of the backend's NIC (this one, in one arm), segmented there if merged.
            a.raw(MOV_K, 2, 0, 0, 0)
                .raw(CALL, 0, 0, 0, HELPER_REDIRECT)
                .raw(EXIT, 0, 0, 0, 0)
                .label(Miss)
                .raw(MOV_K, 0, 0, 0, TC_ACT_OK)
                .raw(EXIT, 0, 0, 0, 0);
        }
    }
    a.finish()
}

/// The socket filter for netfw's AF_PACKET socket on the NIC `forward` runs on in tc: 0 (not
/// for this socket) for the frames it forwards, the whole frame for every other.
pub fn skip_forwarded(m: ForwardMaps) -> Vec<u8> {
    use Label::{Key, Miss};
    let mut a = Asm::default();
    // LD_ABS reads from the socket buffer in r6 into r0, in host order; a read past the end
    // would end the program with 0 (dropping the frame), so the length (r7) is checked first.
    a.raw(MOV_X, 6, 1, 0, 0)
        .raw(LDX_W, 7, 6, SKB_LEN, 0)
        .jump(JLT_K, 7, 0, REACH_PORTS, Miss)
        .header_checks(Read::Abs, m.mac, 8)
        // The flow key as the wire has it (LD_ABS gave host order: back to big-endian).
        .label(Key)
        .raw(LD_ABS_W, 0, 0, 0, 26)
        .raw(BE, 0, 0, 0, 32)
        .raw(STX_W, 10, 0, -16, 0)
        .raw(LD_ABS_W, 0, 0, 0, 30)
        .raw(BE, 0, 0, 0, 32)
        .raw(STX_W, 10, 0, -12, 0)
        .raw(LD_ABS_W, 0, 0, 0, 34)
        .raw(BE, 0, 0, 0, 32)
        .raw(STX_W, 10, 0, -8, 0)
        .raw(STX_W, 10, 8, -4, 0)
        .flow_and_backend_or_miss(m)
        .raw(MOV_K, 0, 0, 0, 0)
        .raw(EXIT, 0, 0, 0, 0)
        .label(Miss)
        .raw(MOV_K, 0, 0, 0, -1)
        .raw(EXIT, 0, 0, 0, 0);
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

    /// Every jump lands inside the program, and its last instruction is an exit.
    fn jumps_land_inside(p: &[u8]) -> Vec<&[u8]> {
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
        assert_eq!(*insns.last().unwrap(), &[EXIT, 0, 0, 0, 0, 0, 0, 0]);
        insns
    }

    const MAPS: ForwardMaps = ForwardMaps { flows: 4, backends: 5, mac: [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc] };

    fn uses_maps(insns: &[&[u8]], fds: &[u8]) {
        for fd in fds {
            assert!(insns.iter().any(|i| i[0] == LD_IMM64 && i[1] == 0x10 | (i[1] & 0x0f) && i[4] == *fd), "map {fd}");
        }
    }

    #[test]
    fn every_jump_of_the_forwarding_programs_lands_inside_them_and_they_use_their_maps() {
        let xdp = forward(MAPS, Hook::Xdp { xsks: 3 });
        let insns = jumps_land_inside(&xdp);
        // The MAC check compares the first four bytes as the wire has them.
        assert!(insns.iter().any(|i| i[0] == JNE32_K && i[4..8] == [0x52, 0x54, 0, 0xaa]));
        uses_maps(&insns, &[3, 4, 5]);
        let tc = forward(MAPS, Hook::Tc);
        let insns = jumps_land_inside(&tc);
        uses_maps(&insns, &[4, 5]);
        assert!(insns.iter().any(|i| i[0] == CALL && i[4] == 39), "tc pulls short headers in");
        assert!(!insns.iter().any(|i| i[0] == LDX_W && i[2] == 16), "tc reads no XDP context field");
    }

    #[test]
    fn the_marking_program_tests_each_rule_in_order_and_marks_only_where_a_rule_has_a_mark() {
        let vip = [203, 0, 113, 10];
        let rules = [
            MarkRule { vip, proto: 6, first: 80, last: 80, mark: 0 },
            MarkRule { vip, proto: 6, first: 21, last: 21, mark: 0x4c56_0001 },
            MarkRule { vip, proto: 6, first: 10000, last: 20000, mark: 0x4c56_0001 },
            MarkRule { vip, proto: 17, first: 0, last: u16::MAX, mark: 0x4c56_0002 },
        ];
        let p = mark(&rules);
        let insns = jumps_land_inside(&p);
        // Every rule compares the VIP as a little-endian load of the wire's bytes reads it.
        let vip_checks = insns.iter().filter(|i| i[0] == JNE32_K && i[4..8] == vip).count();
        assert_eq!(vip_checks, 4);
        // Three marks written (the port-80 rule only stops the search), into skb->mark.
        let stores: Vec<_> = insns.iter().filter(|i| i[0] == STX_W && i[1] == 0x16).collect();
        assert_eq!(stores.len(), 3);
        assert!(stores.iter().all(|i| i16::from_le_bytes([i[2], i[3]]) == SKB_MARK));
        let marks: Vec<u32> =
            insns.iter().filter(|i| i[0] == MOV_K && i[1] == 1).map(|i| u32::from_le_bytes([i[4], i[5], i[6], i[7]])).collect();
        assert_eq!(marks, [0x4c56_0001, 0x4c56_0001, 0x4c56_0002]);
        // The port bounds: an every-port rule tests none; a one-port rule tests both ends.
        let lows: Vec<i32> =
            insns.iter().filter(|i| i[0] == JLT_K && i[1] == 7).map(|i| i32::from_le_bytes([i[4], i[5], i[6], i[7]])).collect();
        assert_eq!(lows, [20, 80, 21, 10000], "the header length check, then each rule's first port");
        let highs = insns.iter().filter(|i| i[0] == JGT_K).count();
        assert_eq!(highs, 3);
        // One exit, which lets every packet go on.
        let exits: Vec<usize> = insns.iter().enumerate().filter(|(_, i)| i[0] == EXIT).map(|(n, _)| n).collect();
        assert_eq!(exits.len(), 1);
        assert_eq!(insns[exits[0] - 1], &[MOV_K, 0, 0, 0, 0, 0, 0, 0]);
        // No rule: the checks alone, every packet unmarked.
        let none = mark(&[]);
        assert!(!jumps_land_inside(&none).iter().any(|i| i[0] == STX_W && i[1] == 0x16));
    }

    #[test]
    fn the_filter_reads_the_mac_in_host_order_and_drops_only_at_the_end_of_a_hit() {
        let f = skip_forwarded(MAPS);
        let insns = jumps_land_inside(&f);
        uses_maps(&insns, &[4, 5]);
        // LD_ABS gives host order: the MAC's first word compared as a big-endian number.
        assert!(insns.iter().any(|i| i[0] == JNE32_K && i[4..8] == 0x5254_00aa_u32.to_le_bytes()));
        // One exit says 0 (a hit), the other keeps the whole frame.
        let exits: Vec<usize> = insns.iter().enumerate().filter(|(_, i)| i[0] == EXIT).map(|(n, _)| n).collect();
        assert_eq!(exits.len(), 2);
        assert_eq!(insns[exits[0] - 1], &[MOV_K, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(insns[exits[1] - 1], &[MOV_K, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        // Every read past the length check: no LD_ABS before it.
        let len_check = insns.iter().position(|i| i[0] == JLT_K).unwrap();
        assert!(insns[..len_check].iter().all(|i| i[0] & 0x07 != 0), "no packet read before the length check");
    }
}
