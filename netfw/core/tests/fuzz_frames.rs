//! Property tests: no input makes the frame path panic (issue 2 §6.8), whether random bytes or
//! valid frames with random damage.

#![allow(clippy::cast_possible_truncation, reason = "fixture values are small")]

mod common;

use common::*;
use netfw_core::forward::Side;
use netfw_core::model::{Protocol, SchedKind};
use netfw_core::time::Millis;
use netfw_core::wire::{classify, csum::complete_l4_checksum, frame::icmp_embedded};
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let mut frag = Ip::new(CLIENT, VIP, 17);
    frag.frag_offset = 64;
    let inner = ipv4([0; 6], Ip::new(VIP, CLIENT, 6), &tcp(80, 1, ACK));
    let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 5, 0xdc];
    icmp.extend_from_slice(&inner[14..42]);
    vec![
        client_tcp(1, SYN),
        ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(1, 53, b"x")),
        ipv4(VIP_MAC, frag, &[0; 16]),
        ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 1), &icmp),
        arp(1, ROUTER_MAC, CLIENT, [0; 6], VIP),
        arp(2, rs_mac(1), rip(1), RS_SIDE_MAC, DIP),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600), rs_side in any::<bool>()) {
        let mut f = forwarder(spec(SchedKind::Mh, Protocol::Udp, 53, &[1, 2], 10));
        let mut b = bytes.clone();
        let side = if rs_side { Side::Rs } else { Side::Vip };
        let _ = f.process(side, &mut b, Millis(1));
        let _ = classify(&bytes);
        let mut c = bytes.clone();
        let _ = complete_l4_checksum(&mut c);
        f.drain_released(|_| true);
        f.poll_timers(Millis(5_000), |_, _| true);
    }

    /// The fast path's view and its checksum check take exactly the frames whose IPv4
    /// header the full classifier accepts, among valid TCP frames with random header
    /// damage: a random checksum, or the right one off by a little (`off`; 0 leaves it right).
    #[test]
    fn the_fast_view_accepts_what_the_classifier_accepts(header in proptest::collection::vec(any::<u8>(), 20), sport in any::<u16>(), fix in proptest::option::of(0u16..24)) {
        let mut f = client_tcp(sport, ACK);
        f[14..34].copy_from_slice(&header);
        f[14] = 0x45; // the fast view takes only 20-byte headers: keep that, damage the rest
        let ip_len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[20] &= 0x80; // nor fragments
        f[21] = 0;
        f[23] = 6;
        if let Some(off) = fix {
            f[24..26].copy_from_slice(&[0, 0]);
            let s: u32 = f[14..34].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
            let s = (s & 0xffff) + (s >> 16);
            let s = (s & 0xffff) + (s >> 16);
            f[24..26].copy_from_slice(&(!(s as u16)).wrapping_add(off).to_be_bytes());
        }
        let fast = netfw_core::wire::fast::Packet::parse(&f).is_some_and(|p| p.header_checksum_ok());
        prop_assert_eq!(fast, classify(&f).is_ok(), "{:02x?}", &f[14..34]);
    }

    #[test]
    fn damaged_valid_frames_never_panic(which in 0usize..6, flips in proptest::collection::vec((0usize..80, any::<u8>()), 1..6), cut in 0usize..90) {
        let mut f = forwarder(spec(SchedKind::Rr, Protocol::Udp, 53, &[1, 1], 0));
        let mut fr = seeds()[which].clone();
        for (at, v) in flips {
            if let Some(b) = fr.get_mut(at) { *b = v; }
        }
        fr.truncate(fr.len().saturating_sub(cut % 8 * 4).max(cut.min(fr.len())));
        let _ = f.process(Side::Vip, &mut fr, Millis(0));
        if let Ok(netfw_core::wire::Frame::Ipv4(info)) = classify(&fr) {
            let _ = icmp_embedded(&fr, &info);
        }
        let _ = complete_l4_checksum(&mut fr);
        f.drain_released(|_| true);
    }
}

#[test]
fn completed_checksums_match_a_reference() {
    // A UDP frame whose checksum field holds garbage gets the RFC 768 checksum.
    let mut fr = ipv4(VIP_MAC, Ip::new(CLIENT, VIP, 17), &udp(1234, 53, b"hello"));
    fr[14 + 20 + 6] = 0xab;
    assert!(complete_l4_checksum(&mut fr));
    let l4 = &fr[34..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&CLIENT.octets());
    pseudo.extend_from_slice(&VIP.octets());
    pseudo.extend_from_slice(&[0, 17, 0, l4.len() as u8]);
    pseudo.extend_from_slice(l4);
    assert_eq!(checksum(&pseudo), 0, "a correct checksum sums to zero");
    // Fragments and non-TCP/UDP are left alone.
    let mut frag = Ip::new(CLIENT, VIP, 17);
    frag.more_frags = true;
    assert!(!complete_l4_checksum(&mut ipv4(VIP_MAC, frag, &udp(1, 2, b"x"))));
}
