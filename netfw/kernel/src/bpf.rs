//! The bpf(2) system call, as netfw uses it: maps (the XSK map that steers frames to the
//! AF_XDP sockets, the kernel's flow map, the backends array mapped into our memory) and
//! loading programs (XDP, tc, socket filter; built by `programs`: no compiler, no prebuilt
//! object).

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_ANY: u64 = 0;
const BPF_EXIST: u64 = 2;
/// `union bpf_attr` in Linux 6.1.
const ATTR_SIZE: usize = 144;

/// Why the program or its map could not be made.
#[derive(Debug)]
pub enum BpfError {
    /// A bpf(2) command failed.
    Syscall {
        /// Which command.
        what: &'static str,
        /// errno.
        error: std::io::Error,
        /// The verifier's words, for a program it refused.
        log: String,
    },
    /// A key or value of the wrong size (a bug of ours, reported rather than passed on).
    Size {
        /// Which operation.
        what: &'static str,
        /// The map's size.
        expected: usize,
        /// What was given.
        got: usize,
    },
}

impl BpfError {
    /// The errno of a failed system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BpfError::Syscall { error, .. } => error.raw_os_error(),
            BpfError::Size { .. } => None,
        }
    }
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpfError::Syscall { what, error, log } if log.is_empty() => write!(f, "bpf {what}: {error}"),
            BpfError::Syscall { what, error, log } => write!(f, "bpf {what}: {error}: {}", log.trim()),
            BpfError::Size { what, expected, got } => write!(f, "bpf {what}: {got} bytes where the map has {expected}"),
        }
    }
}

impl std::error::Error for BpfError {}

/// A `union bpf_attr`, written field by field at the offsets of Linux 6.1's layout.
struct Attr([u8; ATTR_SIZE]);

impl Attr {
    fn new() -> Attr {
        Attr([0; ATTR_SIZE])
    }
    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn call(&mut self, cmd: libc::c_long, what: &'static str) -> Result<libc::c_long, BpfError> {
        // SAFETY: bpf(2) reads (and may write) `ATTR_SIZE` bytes of `self.0`; every pointer
        // written into it points at memory that outlives this call (the callers hold it).
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), ATTR_SIZE) };
        if r < 0 {
            Err(BpfError::Syscall { what, error: std::io::Error::last_os_error(), log: String::new() })
        } else {
            Ok(r)
        }
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a descriptor bpf(2) just returned; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(RawFd::try_from(fd).unwrap_or(-1)) }
}

/// A BPF map, by its descriptor.
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// Create a map (`name`: at most 15 bytes, shown by bpftool).
    fn create(
        kind: u32,
        key_size: u32,
        value_size: u32,
        entries: u32,
        flags: u32,
        name: &str,
        what: &'static str,
    ) -> Result<Map, BpfError> {
        let mut a = Attr::new();
        a.u32(0, kind).u32(4, key_size).u32(8, value_size).u32(12, entries.max(1)).u32(16, flags);
        let n = name.as_bytes();
        let n = &n[..n.len().min(15)];
        a.0[28..28 + n.len()].copy_from_slice(n);
        let fd = owned(a.call(BPF_MAP_CREATE, what)?);
        Ok(Map { fd, key_size: key_size as usize, value_size: value_size as usize })
    }

    /// A hash map of `entries` preallocated entries.
    pub fn hash(key_size: u32, value_size: u32, entries: u32, name: &str) -> Result<Map, BpfError> {
        Map::create(BPF_MAP_TYPE_HASH, key_size, value_size, entries, 0, name, "create a hash map")
    }

    /// An array map whose values can be mapped into our memory (`MmapArray`).
    pub fn mmapable_array(value_size: u32, entries: u32, name: &str) -> Result<Map, BpfError> {
        Map::create(BPF_MAP_TYPE_ARRAY, 4, value_size, entries, BPF_F_MMAPABLE, name, "create an array map")
    }

    /// Its descriptor (for programs that use it).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn elem(&self, cmd: libc::c_long, key: &[u8], value: u64, flags: u64, what: &'static str) -> Result<(), BpfError> {
        if key.len() != self.key_size {
            return Err(BpfError::Size { what, expected: self.key_size, got: key.len() });
        }
        let mut a = Attr::new();
        a.u32(0, u32::try_from(self.fd()).unwrap_or(u32::MAX)).u64(8, key.as_ptr() as u64).u64(16, value).u64(24, flags);
        a.call(cmd, what).map(|_| ())
    }

    /// Insert or replace `key` → `value`.
    pub fn update(&self, key: &[u8], value: &[u8]) -> Result<(), BpfError> {
        if value.len() != self.value_size {
            return Err(BpfError::Size { what: "update a map entry", expected: self.value_size, got: value.len() });
        }
        self.elem(BPF_MAP_UPDATE_ELEM, key, value.as_ptr() as u64, BPF_ANY, "update a map entry")
    }

    /// Replace the value of `key` if it is still there (false if it went meanwhile).
    pub fn update_existing(&self, key: &[u8], value: &[u8]) -> Result<bool, BpfError> {
        if value.len() != self.value_size {
            return Err(BpfError::Size { what: "update a map entry", expected: self.value_size, got: value.len() });
        }
        match self.elem(BPF_MAP_UPDATE_ELEM, key, value.as_ptr() as u64, BPF_EXIST, "update a map entry") {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The key after `prev` (the first with `None`) into `next`; false after the last.
    pub fn next_key(&self, prev: Option<&[u8]>, next: &mut [u8]) -> Result<bool, BpfError> {
        if next.len() != self.key_size || prev.is_some_and(|p| p.len() != self.key_size) {
            return Err(BpfError::Size { what: "walk a map", expected: self.key_size, got: next.len() });
        }
        let mut a = Attr::new();
        a.u32(0, u32::try_from(self.fd()).unwrap_or(u32::MAX))
            .u64(8, prev.map_or(0, |p| p.as_ptr() as u64))
            .u64(16, next.as_mut_ptr() as u64);
        match a.call(BPF_MAP_GET_NEXT_KEY, "walk a map") {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remove `key`; false if it was not there.
    pub fn delete(&self, key: &[u8]) -> Result<bool, BpfError> {
        match self.elem(BPF_MAP_DELETE_ELEM, key, 0, 0, "delete a map entry") {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The value of `key` into `value`; false if it is not there.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<bool, BpfError> {
        if value.len() != self.value_size {
            return Err(BpfError::Size { what: "look a map entry up", expected: self.value_size, got: value.len() });
        }
        match self.elem(BPF_MAP_LOOKUP_ELEM, key, value.as_mut_ptr() as u64, 0, "look a map entry up") {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remove every entry (a few syscalls per thousand entries); returns how many went.
    pub fn clear(&self) -> Result<u64, BpfError> {
        const BATCH: u32 = 1024;
        let mut keys = vec![0u8; self.key_size * BATCH as usize];
        let mut values = vec![0u8; self.value_size * BATCH as usize];
        let (mut token_in, mut token_out) = (0u64, 0u64);
        let mut first = true;
        let mut removed = 0u64;
        loop {
            let mut a = Attr::new();
            a.u64(0, if first { 0 } else { std::ptr::from_ref(&token_in) as u64 })
                .u64(8, std::ptr::from_mut(&mut token_out) as u64)
                .u64(16, keys.as_mut_ptr() as u64)
                .u64(24, values.as_mut_ptr() as u64)
                .u32(32, BATCH)
                .u32(36, u32::try_from(self.fd()).unwrap_or(u32::MAX));
            let r = a.call(BPF_MAP_LOOKUP_AND_DELETE_BATCH, "empty a map");
            // The kernel writes how many it took back into `count`, also with ENOENT (done).
            removed += u64::from(u32::from_ne_bytes([a.0[32], a.0[33], a.0[34], a.0[35]]));
            match r {
                Ok(_) => {}
                Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(removed),
                Err(e) => return Err(e),
            }
            token_in = token_out;
            first = false;
        }
    }
}

/// An array map's values, mapped into our memory: read and written with atomics while the
/// forwarding program (XDP or tc) uses them, without a syscall.
#[derive(Debug)]
pub struct MmapArray {
    map: Map,
    base: std::ptr::NonNull<u8>,
    map_len: usize,
    entries: usize,
}

impl MmapArray {
    /// Map the values of `map` (made by `Map::mmapable_array` with `entries` entries).
    pub fn new(map: Map, entries: u32) -> Result<MmapArray, BpfError> {
        let entries = entries as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = (map.value_size.next_multiple_of(8) * entries).next_multiple_of(page);
        // SAFETY: a shared mapping of the map's value area, which the kernel sized for this.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, map.fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(BpfError::Syscall { what: "map an array's values", error: std::io::Error::last_os_error(), log: String::new() });
        }
        let base = std::ptr::NonNull::new(p.cast::<u8>()).ok_or(BpfError::Size { what: "map an array's values", expected: len, got: 0 })?;
        Ok(MmapArray { map, base, map_len: len, entries })
    }

    /// The map (for programs that use it).
    pub fn map(&self) -> &Map {
        &self.map
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The 64-bit word at byte `offset` of entry `i` (8-aligned), if in bounds.
    pub fn u64_at(&self, i: usize, offset: usize) -> Option<&std::sync::atomic::AtomicU64> {
        let at = i.checked_mul(self.map.value_size.next_multiple_of(8))?.checked_add(offset)?;
        if !offset.is_multiple_of(8) || offset + 8 > self.map.value_size || i >= self.entries {
            return None;
        }
        let word = self.base.as_ptr().wrapping_add(at).cast::<std::sync::atomic::AtomicU64>();
        // SAFETY: in bounds of the mapping and 8-aligned (the mapping is page-aligned, entries
        // are multiples of 8); the kernel and we only touch these words atomically.
        Some(unsafe { &*word })
    }
}

impl Drop for MmapArray {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

// SAFETY: the mapping is plain shared memory accessed through atomics.
unsafe impl Send for MmapArray {}
// SAFETY: as above: every access goes through `u64_at`'s atomics, from any thread.
unsafe impl Sync for MmapArray {}

/// An XSK map: queue index → AF_XDP socket.
#[derive(Debug)]
pub struct XskMap(Map);

impl XskMap {
    /// A map for `queues` receive queues.
    pub fn new(queues: u32) -> Result<XskMap, BpfError> {
        Ok(XskMap(Map::create(BPF_MAP_TYPE_XSKMAP, 4, 4, queues, 0, "xsks", "create the XSK map")?))
    }

    /// Steer queue `queue` to the socket `xsk`.
    pub fn set(&self, queue: u32, xsk: RawFd) -> Result<(), BpfError> {
        let value = u32::try_from(xsk).unwrap_or(u32::MAX);
        self.0.elem(BPF_MAP_UPDATE_ELEM, &queue.to_ne_bytes(), std::ptr::from_ref(&value) as u64, BPF_ANY, "put a socket in the XSK map")
    }

    /// Its descriptor (for programs that use it).
    pub fn fd(&self) -> RawFd {
        self.0.fd()
    }
}

/// Where a program runs, which decides what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// On an AF_PACKET socket: how much of each frame the socket takes (0: none).
    SocketFilter,
    /// In tc, on a socket buffer (direct action).
    SchedCls,
    /// In XDP, before any socket buffer.
    Xdp,
}

impl ProgramKind {
    fn bpf_prog_type(self) -> u32 {
        match self {
            ProgramKind::SocketFilter => 1,
            ProgramKind::SchedCls => 3,
            ProgramKind::Xdp => 6,
        }
    }
    fn load_what(self) -> &'static str {
        match self {
            ProgramKind::SocketFilter => "load the socket filter",
            ProgramKind::SchedCls => "load the tc program",
            ProgramKind::Xdp => "load the XDP program",
        }
    }
    /// The name the kernel shows (bpftool, tc).
    pub fn name(self) -> &'static str {
        match self {
            ProgramKind::SocketFilter => "netfw_skip",
            ProgramKind::SchedCls => "netfw_tc",
            ProgramKind::Xdp => "netfw_x",
        }
    }
}

/// A loaded program.
#[derive(Debug)]
pub struct Program(OwnedFd);

impl Program {
    /// Load a program of `kind` (`code`: eBPF instructions, see `programs`).
    pub fn load(kind: ProgramKind, code: &[u8]) -> Result<Program, BpfError> {
        let license = b"GPL\0";
        let mut log = vec![0u8; 65536];
        let mut a = Attr::new();
        a.u32(0, kind.bpf_prog_type())
            .u32(4, u32::try_from(code.len() / 8).unwrap_or(0))
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, 1)
            .u32(28, u32::try_from(log.len()).unwrap_or(0))
            .u64(32, log.as_mut_ptr() as u64);
        let name = kind.name().as_bytes();
        a.0[48..48 + name.len()].copy_from_slice(name);
        match a.call(BPF_PROG_LOAD, kind.load_what()) {
            Ok(fd) => Ok(Program(owned(fd))),
            Err(BpfError::Syscall { what, error, .. }) => {
                let text = String::from_utf8_lossy(log.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
                Err(BpfError::Syscall { what, error, log: text })
            }
            Err(e) => Err(e),
        }
    }

    /// Its descriptor (to attach it).
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
