//! Extra addresses a NIC must receive: the HA pair's virtual MAC (a unicast address the NIC
//! would otherwise filter out) and the VRRP group's multicast MAC. Held by an AF_PACKET socket
//! of protocol 0 (it receives nothing itself); the kernel removes them when it closes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netfw_core::wire::Mac;

use super::nic::ifindex;

const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_MULTICAST: libc::c_ushort = 0;
const PACKET_MR_UNICAST: libc::c_ushort = 3;

/// The addresses held on one NIC while this lives.
#[derive(Debug)]
pub struct Membership {
    _fd: OwnedFd,
}

/// Have `nic` receive frames to `unicast` and `multicast` besides its own MAC.
pub fn hold(nic: &str, unicast: &[Mac], multicast: &[Mac]) -> io::Result<Membership> {
    let index = ifindex(nic).map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let kinds = unicast.iter().map(|m| (PACKET_MR_UNICAST, m)).chain(multicast.iter().map(|m| (PACKET_MR_MULTICAST, m)));
    for (kind, mac) in kinds {
        let mut address = [0u8; 8];
        address[..6].copy_from_slice(mac);
        let mreq = libc::packet_mreq { mr_ifindex: index, mr_type: kind, mr_alen: 6, mr_address: address };
        // SAFETY: `mreq` is a live packet_mreq of the size passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                std::ptr::from_ref(&mreq).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::packet_mreq>()).unwrap_or(0),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{nic}: cannot receive frames to {}: {e}", super::nic::fmt_mac(mac))));
        }
    }
    Ok(Membership { _fd: fd })
}
