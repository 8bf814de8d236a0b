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
