//! The namespace lab of DESIGN.md:
//!
//! ```text
//! client ns ── router ns ──┬── director ns (netfw on veths with no kernel address)
//!                          ├── rs1 ns: RIP, VIP on lo/32, arp_ignore=1, arp_announce=2
//!                          └── rsN ns: same
//! ```
//!
//! Two-arm: the router reaches the director's VIP-facing NIC on its own link (203.0.113.0/24)
//! and the real servers and the director's RS-facing NIC on a bridge (198.18.0.0/24). One-arm
//! (seed 001's layout): one director NIC on the bridge carries both, and the router reaches the
//! VIP on-link over the bridge. Real servers are set up exactly as the seeds say, and route
//! their replies to the router, never through the director.
//!
//! Every name carries the lab's id, so labs never collide; `Drop` kills what the lab started
//! and deletes its namespaces, and `Lab::build` first removes leftovers of dead test runs.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::proc::{bin, output, run};
use crate::vm::{Firmware, Vm, VmNic};

/// A lab failure, with what went wrong.
#[derive(Debug, Clone)]
pub struct LabError(pub String);

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

/// Director NIC layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One NIC carries VIP and DIP.
    OneArm,
    /// VIP-facing and RS-facing NICs.
    TwoArm,
}

/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The router's address on the client side.
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The router's address on the VIP link (two-arm).
pub const ROUTER_VIP_SIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The router's address on the real-server segment.
pub const ROUTER_RS_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The router's address on the management segment (VM labs).
pub const ROUTER_MGMT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The VM's management MAC.
pub const VM_MGMT_MAC: &str = "02:00:00:00:d0:00";
/// The VIP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The DIP.
pub const DIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The director's VIP-facing MAC.
pub const DIRECTOR_VIP_MAC: &str = "02:00:00:00:d0:01";
/// The director's RS-facing MAC (two-arm).
pub const DIRECTOR_RS_MAC: &str = "02:00:00:00:d0:02";
/// The second director of an HA pair (`add_peer_director`): its DIP.
pub const PEER_DIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// Its VIP-facing MAC.
pub const PEER_VIP_MAC: &str = "02:00:00:00:d1:01";
/// Its RS-facing MAC.
pub const PEER_RS_MAC: &str = "02:00:00:00:d1:02";
/// Its management MAC (VM labs).
pub const PEER_MGMT_MAC: &str = "02:00:00:00:d1:00";

/// RIP of real server `i` (1-based): 198.18.0.1i.
pub fn rip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + u8::try_from(i).unwrap_or(0))
}

/// MAC of real server `i`.
pub fn rs_mac(i: usize) -> String {
    format!("02:00:00:00:01:{i:02x}")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running lab.
#[derive(Debug)]
pub struct Lab {
    id: String,
    /// Layout.
    pub layout: Layout,
    /// Number of real servers.
    pub real_servers: usize,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dir: PathBuf,
    netfw: Option<usize>,
    /// The appliance VM, when the director is the image under QEMU.
    pub vm: Option<Vm>,
    /// The second appliance VM of an HA pair (`boot_peer_vm`).
    pub peer_vm: Option<Vm>,
    /// Helper guests (TUN real servers), by real-server number.
    pub guests: Vec<(usize, Vm)>,
    vm_mode: bool,
    /// Queue pairs of the VM's NICs (multi_queue taps when more than 1).
    vm_queues: u16,
    /// The VM's virtual CPUs.
    pub vm_vcpus: u16,
}

fn prefix() -> String {
    format!("nf{}", std::process::id())
}

/// Remove namespaces left by lab runs whose process is gone.
pub fn remove_stale() {
    let Ok(list) = run(&["ip", "netns", "list"]) else { return };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("nf") else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            kill_ns_pids(name);
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

fn kill_ns_pids(ns: &str) {
    if let Ok(pids) = run(&["ip", "netns", "pids", ns]) {
        for p in pids.split_whitespace() {
            let _ = output(&["kill", "-9", p]);
        }
    }
}

impl Lab {
    /// Build a lab with `real_servers` real servers (each serving HTTP on 80 and UDP on 53).
    pub fn build(layout: Layout, real_servers: usize) -> Result<Lab, LabError> {
        Self::build_with(layout, real_servers, false, 1)
    }

    /// Build a lab whose director is the appliance image in QEMU (see `boot_vm`): the
    /// director namespace bridges each of its veths to a tap for the VM. Its VIP- and
    /// RS-facing NICs have two queue pairs for its one vCPU, as real NICs have more queues
    /// than a small box has cores (virtio_net then gives XDP a transmit queue of its own, and
    /// receives on that pair too).
    pub fn build_for_vm(layout: Layout, real_servers: usize) -> Result<Lab, LabError> {
        Self::build_with(layout, real_servers, true, 2)
    }

    /// `build_for_vm` for a VM with `vcpus` CPUs, its NICs with two queue pairs per CPU
    /// (virtio multiqueue).
    pub fn build_for_vm_smp(layout: Layout, real_servers: usize, vcpus: u16) -> Result<Lab, LabError> {
        let mut lab = Self::build_with(layout, real_servers, true, 2 * vcpus)?;
        lab.vm_vcpus = vcpus;
        Ok(lab)
    }

    fn build_with(layout: Layout, real_servers: usize, vm_mode: bool, vm_queues: u16) -> Result<Lab, LabError> {
        remove_stale();
        let id = format!("{}{}", prefix(), char::from(b'a' + u8::try_from(SEQ.fetch_add(1, Ordering::Relaxed) % 26).unwrap_or(0)));
        let dir = std::env::temp_dir().join(format!("{id}-lab"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| LabError(format!("cannot create {}: {e}", dir.display())))?;
        let mut lab = Lab {
            id,
            layout,
            real_servers,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
            netfw: None,
            vm: None,
            peer_vm: None,
            guests: Vec::new(),
            vm_mode,
            vm_queues: vm_queues.max(1),
            vm_vcpus: 1,
        };
        lab.wire()?;
        for i in 1..=real_servers {
            lab.spawn_server(i, &[])?;
        }
        for i in 1..=real_servers {
            lab.wait_tcp(&lab.ns("router"), rip(i), 80)?;
        }
        Ok(lab)
    }

    /// Start real server `i`'s HTTP (port 80) and UDP (port 53) service, named `rs<i>`, with
    /// `extra` arguments for `labtool serve`.
    fn spawn_server(&mut self, i: usize, extra: &[&str]) -> Result<(), LabError> {
        let ns = self.ns(&format!("rs{i}"));
        let tool = bin("labtool")?;
        let name = format!("rs{i}");
        // UDP answered from the VIP (and the RIP), as a DR real server must, unless `extra`
        // binds otherwise (`--udp-bind 0.0.0.0`: a wildcard socket answers from the RIP).
        let bind = format!("{VIP},{}", rip(i));
        let mut args =
            vec![tool.to_str().unwrap_or_default(), "serve", "--name", &name, "--port", "80", "--udp-port", "53", "--tls-port", "443"];
        if !extra.contains(&"--udp-bind") {
            args.extend(["--udp-bind", bind.as_str()]);
        }
        args.extend_from_slice(extra);
        self.spawn(&format!("rs{i}-server"), &ns, &args)?;
        Ok(())
    }

    /// Seed 001's FTP server on real server `i`: Debian's vsftpd, anonymous and read-only,
    /// passive ports 10000–20000 (`pasv_min_port`/`pasv_max_port` as the seed sets them). It
    /// answers PASV with the control connection's local address, the VIP. Its root holds
    /// `whoami.txt` with the server's name, so a download tells which server the data
    /// connection reached. Returns once it listens.
    pub fn spawn_ftp_server(&mut self, i: usize) -> Result<(), LabError> {
        let dir = self.dir.join(format!("ftp-rs{i}"));
        let root = dir.join("root");
        let err = |e: std::io::Error| LabError(format!("ftp server rs{i}: {e}"));
        std::fs::create_dir_all(&root).map_err(err)?;
        std::fs::write(root.join("whoami.txt"), format!("rs{i}\n")).map_err(err)?;
        // vsftpd refuses an anonymous root it could write to, and drops privileges into an
        // empty directory that must exist.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o555)).map_err(err)?;
        std::fs::create_dir_all("/var/run/vsftpd/empty").map_err(err)?;
        let conf = dir.join("vsftpd.conf");
        let text = format!(
            "listen=YES\nlisten_ipv6=NO\nbackground=NO\nanonymous_enable=YES\nlocal_enable=NO\nwrite_enable=NO\n\
             anon_root={}\npasv_enable=YES\npasv_min_port=10000\npasv_max_port=20000\n\
             secure_chroot_dir=/var/run/vsftpd/empty\nseccomp_sandbox=NO\nxferlog_enable=NO\n",
            root.display()
        );
        std::fs::write(&conf, text).map_err(err)?;
        let ns = self.ns(&format!("rs{i}"));
        let conf = conf.to_string_lossy().into_owned();
        self.spawn(&format!("rs{i}-ftp"), &ns, &["vsftpd", &conf])?;
        self.wait_tcp(&self.ns("router"), rip(i), 21)
    }

    /// Stop real server `i`'s service (its address still answers: a connection is refused).
    pub fn stop_server(&mut self, i: usize) {
        let label = format!("rs{i}-server");
        for (_, c) in self.children.iter_mut().filter(|(l, _)| *l == label) {
            stop_child(c);
        }
    }

    /// Start real server `i`'s service again (with `extra` arguments for `labtool serve`),
    /// once it listens.
    pub fn restart_server(&mut self, i: usize, extra: &[&str]) -> Result<(), LabError> {
        self.stop_server(i);
        self.spawn_server(i, extra)?;
        self.wait_tcp(&self.ns("router"), rip(i), 80)
    }

    /// The namespace name of a role: client, router, director, rs1…
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.id)
    }

    /// The lab's scratch directory (configs, logs, sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn add_ns(&mut self, role: &str) -> Result<String, LabError> {
        let ns = self.ns(role);
        run(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        for s in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
            self.sysctl(&ns, s)?;
        }
        self.ip(&ns, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `sysctl -w` inside a namespace.
    pub fn sysctl(&self, ns: &str, kv: &str) -> Result<(), LabError> {
        run(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv]).map(|_| ())
    }

    /// `ip -n NS …`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let mut a = vec!["ip", "-n", ns];
        a.extend_from_slice(args);
        run(&a)
    }

    fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str, mac_b: Option<&str>) -> Result<(), LabError> {
        self.ip(ns_a, &["link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b])?;
        if let Some(m) = mac_b {
            self.ip(ns_b, &["link", "set", b, "address", m])?;
        }
        self.ip(ns_a, &["link", "set", a, "up"])?;
        self.ip(ns_b, &["link", "set", b, "up"])?;
        Ok(())
    }

    fn wire(&mut self) -> Result<(), LabError> {
        let client = self.add_ns("client")?;
        let router = self.add_ns("router")?;
        let director = self.add_ns("director")?;

        // client <-> router
        self.veth(&router, "c0", &client, "eth0", None)?;
        self.ip(&client, &["addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
        for extra in 3..=9 {
            self.ip(&client, &["addr", "add", &format!("198.51.100.{extra}/24"), "dev", "eth0"])?;
        }
        self.ip(&client, &["route", "add", "default", "via", "198.51.100.1"])?;
        self.ip(&router, &["addr", "add", "198.51.100.1/24", "dev", "c0"])?;
        for s in ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"] {
            self.sysctl(&router, s)?;
        }

        // the real-server segment: a bridge in the router namespace
        self.ip(&router, &["link", "add", "br0", "type", "bridge"])?;
        self.ip(&router, &["addr", "add", "198.18.0.1/24", "dev", "br0"])?;
        self.ip(&router, &["link", "set", "br0", "up"])?;

        // In VM mode the director's MACs belong to the VM's NICs, not to these veth ends.
        let (vip_mac, rs_side_mac) = if self.vm_mode { (None, None) } else { (Some(DIRECTOR_VIP_MAC), Some(DIRECTOR_RS_MAC)) };
        match self.layout {
            Layout::TwoArm => {
                self.veth(&router, "v0", &director, "eth1", vip_mac)?;
                self.ip(&router, &["addr", "add", "203.0.113.1/24", "dev", "v0"])?;
                self.veth(&router, "d0", &director, "eth2", rs_side_mac)?;
                self.ip(&router, &["link", "set", "d0", "master", "br0"])?;
            }
            Layout::OneArm => {
                self.veth(&router, "d0", &director, "eth1", vip_mac)?;
                self.ip(&router, &["link", "set", "d0", "master", "br0"])?;
                // The VIP is on-link on the bridge: the router ARPs for it there (seed 001).
                self.ip(&router, &["route", "add", "203.0.113.0/24", "dev", "br0"])?;
            }
        }
        if self.vm_mode {
            self.vm_taps(&director)?;
            // Management: tap0 on a bridge with a veth to the router (198.19.0.1/24).
            self.veth(&router, "m0", &director, "mg", None)?;
            self.ip(&director, &["link", "set", "mg", "master", "bm"])?;
            self.ip(&router, &["addr", "add", "198.19.0.1/24", "dev", "m0"])?;
        }
        for d in ["c0", "br0", "v0", "d0"] {
            let _ = self.sysctl(&router, &format!("net.ipv4.conf.{d}.rp_filter=0"));
        }

        for i in 1..=self.real_servers {
            let ns = self.add_ns(&format!("rs{i}"))?;
            self.veth(&router, &format!("r{i}"), &ns, "eth0", Some(&rs_mac(i)))?;
            self.ip(&router, &["link", "set", &format!("r{i}"), "master", "br0"])?;
            self.ip(&ns, &["addr", "add", &format!("{}/24", rip(i)), "dev", "eth0"])?;
            // Seeds 000/001/003: the VIP on lo/32; never answer ARP for it, never announce it.
            self.ip(&ns, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            for s in [
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.lo.arp_ignore=1",
                "net.ipv4.conf.lo.arp_announce=2",
                "net.ipv4.conf.eth0.arp_ignore=1",
                "net.ipv4.conf.eth0.arp_announce=2",
            ] {
                self.sysctl(&ns, s)?;
            }
            // Seed 001 rule 7: the real server's gateway is the router, never the DIP.
            self.ip(&ns, &["route", "add", "default", "via", "198.18.0.1"])?;
        }
        Ok(())
    }

    /// In a director namespace of a VM lab: each director veth joins a bridge with a tap for
    /// the VM (tap1 VIP-facing, tap2 RS-facing); tap0 gets a bridge `bm` for the management
    /// veth the caller adds.
    fn vm_taps(&self, ns: &str) -> Result<(), LabError> {
        let mut pairs = vec![("bv", "eth1", "tap1")];
        if self.layout == Layout::TwoArm {
            pairs.push(("bs", "eth2", "tap2"));
        }
        let mq: &[&str] = if self.vm_queues > 1 { &["multi_queue"] } else { &[] };
        for (br, dev, tap) in pairs {
            self.ip(ns, &["link", "add", br, "type", "bridge"])?;
            self.ip(ns, &["link", "set", dev, "master", br])?;
            self.ip(ns, &[&["tuntap", "add", tap, "mode", "tap"][..], mq].concat())?;
            self.ip(ns, &["link", "set", tap, "master", br])?;
            self.ip(ns, &["link", "set", tap, "up"])?;
            self.ip(ns, &["link", "set", br, "up"])?;
        }
        if self.ip(ns, &["link", "show", "tap2"]).is_err() {
            self.ip(ns, &[&["tuntap", "add", "tap2", "mode", "tap"][..], mq].concat())?;
            self.ip(ns, &["link", "set", "tap2", "up"])?;
        }
        self.ip(ns, &["link", "add", "bm", "type", "bridge"])?;
        self.ip(ns, &["tuntap", "add", "tap0", "mode", "tap"])?;
        self.ip(ns, &["link", "set", "tap0", "master", "bm"])?;
        self.ip(ns, &["link", "set", "tap0", "up"])?;
        self.ip(ns, &["link", "set", "bm", "up"])?;
        Ok(())
    }

    /// Add the second director of an HA pair (two-arm), in namespace `director2`: the VIP link
    /// becomes a segment (bridge `bvip` in the router, holding the router's 203.0.113.1) that
    /// both directors' VIP-facing NICs join (router ports `v0`, `v1`); its RS-facing NIC joins
    /// the real servers' bridge (port `d1`). In a VM lab its namespace has taps for a second
    /// VM (`boot_peer_vm`), and both VMs' management veths join a router bridge `bmg`.
    pub fn add_peer_director(&mut self) -> Result<(), LabError> {
        if self.layout != Layout::TwoArm {
            return Err(LabError("an HA pair needs the two-arm layout".into()));
        }
        let router = self.ns("router");
        let peer = self.add_ns("director2")?;
        self.ip(&router, &["addr", "del", "203.0.113.1/24", "dev", "v0"])?;
        self.ip(&router, &["link", "add", "bvip", "type", "bridge"])?;
        self.ip(&router, &["addr", "add", "203.0.113.1/24", "dev", "bvip"])?;
        self.ip(&router, &["link", "set", "v0", "master", "bvip"])?;
        self.ip(&router, &["link", "set", "bvip", "up"])?;
        let (vip_mac, rs_mac) = if self.vm_mode { (None, None) } else { (Some(PEER_VIP_MAC), Some(PEER_RS_MAC)) };
        self.veth(&router, "v1", &peer, "eth1", vip_mac)?;
        self.ip(&router, &["link", "set", "v1", "master", "bvip"])?;
        self.veth(&router, "d1", &peer, "eth2", rs_mac)?;
        self.ip(&router, &["link", "set", "d1", "master", "br0"])?;
        for d in ["bvip", "v1", "d1"] {
            let _ = self.sysctl(&router, &format!("net.ipv4.conf.{d}.rp_filter=0"));
        }
        if self.vm_mode {
            self.vm_taps(&peer)?;
            self.ip(&router, &["addr", "del", "198.19.0.1/24", "dev", "m0"])?;
            self.ip(&router, &["link", "add", "bmg", "type", "bridge"])?;
            self.ip(&router, &["addr", "add", "198.19.0.1/24", "dev", "bmg"])?;
            self.ip(&router, &["link", "set", "m0", "master", "bmg"])?;
            self.veth(&router, "m1", &peer, "mg", None)?;
            self.ip(&peer, &["link", "set", "mg", "master", "bm"])?;
            self.ip(&router, &["link", "set", "m1", "master", "bmg"])?;
            self.ip(&router, &["link", "set", "bmg", "up"])?;
        }
        Ok(())
    }

    /// Cut (true) or restore the link between the two directors of a pair only: their ports
    /// on the router's bridges are isolated from each other (each still reaches the router and
    /// the real servers), as a switch fault between two boxes would.
    pub fn isolate_directors(&self, cut: bool) -> Result<(), LabError> {
        let router = self.ns("router");
        let state = if cut { "on" } else { "off" };
        for port in ["v0", "v1", "d0", "d1"] {
            run(&["ip", "netns", "exec", &router, "bridge", "link", "set", "dev", port, "isolated", state])?;
        }
        Ok(())
    }

    /// Start a process in a namespace; it is killed when the lab drops. Output goes to
    /// `<dir>/<label>.log`.
    pub fn spawn(&mut self, label: &str, ns: &str, args: &[&str]) -> Result<usize, LabError> {
        let log = std::fs::File::create(self.dir.join(format!("{label}.log"))).map_err(|e| LabError(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| LabError(e.to_string()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| LabError(format!("cannot start {label}: {e}")))?;
        self.children.push((label.into(), child));
        Ok(self.children.len() - 1)
    }

    /// The process id of a process the lab started.
    pub fn pid(&self, label: &str) -> Option<u32> {
        self.children.iter().rev().find(|(l, _)| l == label).map(|(_, c)| c.id())
    }

    /// A process's log so far.
    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    /// Run a command in a namespace to completion.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let mut a = vec!["ip", "netns", "exec", ns];
        a.extend_from_slice(args);
        run(&a)
    }

    fn wait_tcp(&self, ns: &str, ip: Ipv4Addr, port: u16) -> Result<(), LabError> {
        let tool = bin("labtool")?;
        let deadline = Instant::now() + crate::vm::scaled(Duration::from_secs(20));
        loop {
            if self.exec(ns, &[tool.to_str().unwrap_or_default(), "probe", &format!("{ip}:{port}")]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError(format!("nothing listens on {ip}:{port} in {ns} after 20 s")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The director NIC names for this layout: (vip_side, rs_side).
    pub fn director_nics(&self) -> (&'static str, &'static str) {
        match self.layout {
            Layout::TwoArm => ("eth1", "eth2"),
            Layout::OneArm => ("eth1", "eth1"),
        }
    }

    /// A config document for this lab: `services` is the JSON array of services.
    pub fn config(&self, services: &str) -> String {
        let (v, r) = self.director_nics();
        let gw = match self.layout {
            Layout::TwoArm => ROUTER_VIP_SIDE,
            Layout::OneArm => ROUTER_RS_SIDE,
        };
        format!(
            r#"{{"version": 1, "mode": "forwarder", "nics": {{"vip_side": "{v}", "rs_side": "{r}"}},
"dip": "{DIP}/24", "gateway": "{gw}", "flow_capacity": 65536, "arp_refresh_s": 1,
"services": {services}}}"#
        )
    }

    /// The same config with a `management` section (`nic` by name or MAC; `address` absent
    /// means DHCP).
    pub fn config_with_management(&self, services: &str, nic: &str, address: Option<&str>) -> String {
        let mut v: serde_json::Value = serde_json::from_str(&self.config(services)).unwrap_or_default();
        let mut m = serde_json::json!({ "nic": nic });
        if let Some(a) = address {
            m["address"] = a.into();
            m["gateway"] = ROUTER_MGMT.to_string().into();
        }
        v["management"] = m;
        v.to_string()
    }

    /// Run a DHCP server (dnsmasq, DHCP only) for the management segment in the router
    /// namespace; it stops with the lab.
    pub fn start_dhcp_server(&mut self) -> Result<(), LabError> {
        let router = self.ns("router");
        let leases = self.dir.join("dnsmasq.leases");
        self.spawn(
            "dnsmasq",
            &router,
            &[
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                "--interface=m0",
                "--bind-interfaces",
                "--dhcp-range=198.19.0.100,198.19.0.150,255.255.255.0,1h",
                "--dhcp-option=3,198.19.0.1",
                &format!("--dhcp-leasefile={}", leases.display()),
                "--pid-file=",
            ],
        )
        .map(|_| ())
    }

    /// Path of the config file netfw reads.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("netfw.json")
    }

    /// Path of netfw's control socket.
    pub fn control_path(&self) -> PathBuf {
        self.control_path_in("director")
    }

    /// Write the config and start netfw in the director namespace; waits until it answers
    /// and every real server that exists in the lab is resolved.
    pub fn start_netfw(&mut self, config: &str) -> Result<(), LabError> {
        let idx = self.start_netfw_in("director", config)?;
        self.netfw = Some(idx);
        Ok(())
    }

    /// The label of the netfw running in a director namespace (its log is `<label>.log`).
    pub fn netfw_label(role: &str) -> String {
        if role == "director" {
            "netfw".into()
        } else {
            format!("netfw-{role}")
        }
    }

    /// The control socket of the netfw in a director namespace.
    pub fn control_path_in(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{}.sock", Self::netfw_label(role)))
    }

    /// `start_netfw` in the director namespace `role` ("director", or "director2" of a pair);
    /// the index of its process.
    pub fn start_netfw_in(&mut self, role: &str, config: &str) -> Result<usize, LabError> {
        let label = Self::netfw_label(role);
        let cfg = self.dir.join(format!("{label}.json"));
        std::fs::write(&cfg, config).map_err(|e| LabError(e.to_string()))?;
        let netfw = bin("netfw")?;
        let ctl = self.control_path_in(role);
        let ns = self.ns(role);
        let idx = self.spawn(
            &label,
            &ns,
            &[
                netfw.to_str().unwrap_or_default(),
                "run",
                "--config",
                cfg.to_str().unwrap_or_default(),
                "--control",
                ctl.to_str().unwrap_or_default(),
            ],
        )?;
        let deadline = Instant::now() + crate::vm::scaled(Duration::from_secs(20));
        loop {
            if let Some((_, c)) = self.children.get_mut(idx) {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(LabError(format!("netfw exited ({st}):\n{}", self.log(&label))));
                }
            }
            if let Ok(s) = self.status_json_in(role) {
                if self.resolved(&s) {
                    return Ok(idx);
                }
            }
            if Instant::now() > deadline {
                return Err(LabError(format!(
                    "netfw did not resolve its real servers within 20 s:\n{}\n{}",
                    self.status_json_in(role).map(|s| s.to_string()).unwrap_or_default(),
                    self.log(&label)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn resolved(&self, s: &serde_json::Value) -> bool {
        let lab_rips: Vec<String> = (1..=self.real_servers).map(|i| rip(i).to_string()).collect();
        s["services"].as_array().is_some_and(|svcs| {
            svcs.iter().all(|svc| {
                svc["real_servers"].as_array().is_some_and(|rss| {
                    rss.iter().filter(|r| lab_rips.iter().any(|x| r["address"] == x.as_str())).all(|r| r["reachable"] == true)
                })
            })
        })
    }

    /// `netfw status` (text).
    pub fn status(&self) -> Result<String, LabError> {
        let netfw = bin("netfw")?;
        run(&[netfw.to_str().unwrap_or_default(), "status", "--control", self.control_path().to_str().unwrap_or_default()])
    }

    /// `netfw status --json`, parsed.
    pub fn status_json(&self) -> Result<serde_json::Value, LabError> {
        self.status_json_in("director")
    }

    /// `netfw status --json` of the netfw in director namespace `role`, parsed.
    pub fn status_json_in(&self, role: &str) -> Result<serde_json::Value, LabError> {
        let netfw = bin("netfw")?;
        let ctl = self.control_path_in(role);
        let out = run(&[netfw.to_str().unwrap_or_default(), "status", "--json", "--control", ctl.to_str().unwrap_or_default()])?;
        serde_json::from_str(&out).map_err(|e| LabError(format!("status is not JSON: {e}: {out}")))
    }

    /// Kill the netfw in director namespace `role` with `signal` (SIGKILL: the box dies as
    /// in a power loss; SIGTERM: a clean stop) and reap it.
    pub fn signal_netfw_in(&mut self, role: &str, signal: i32) {
        let label = Self::netfw_label(role);
        for (_, c) in self.children.iter_mut().filter(|(l, _)| *l == label) {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: signalling a child we spawned and have not reaped.
                unsafe { libc::kill(pid, signal) };
            }
            let _ = c.wait();
        }
    }

    /// Replace the config file and ask netfw to reload it. Returns netfw's answer; an error if
    /// it refused.
    pub fn reload(&self, config: &str) -> Result<String, LabError> {
        std::fs::write(self.config_path(), config).map_err(|e| LabError(e.to_string()))?;
        let netfw = bin("netfw")?;
        run(&[netfw.to_str().unwrap_or_default(), "reload", "--control", self.control_path().to_str().unwrap_or_default()])
    }

    /// Wait until every lab real server is resolved again (after a reload).
    pub fn wait_resolved(&self) -> Result<(), LabError> {
        let deadline = Instant::now() + crate::vm::scaled(Duration::from_secs(20));
        loop {
            let s = self.status_json()?;
            if self.resolved(&s) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LabError(format!("real servers not resolved after 20 s:\n{}", self.status().unwrap_or_default())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The MAC a namespace's neighbour table holds for `ip`, if any.
    pub fn neighbour(&self, ns: &str, ip: Ipv4Addr) -> Option<String> {
        let out = self.ip(ns, &["neigh", "show", &ip.to_string()]).ok()?;
        let mut words = out.split_whitespace();
        words.by_ref().find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }

    /// A NIC's receive byte counter.
    pub fn rx_bytes(&self, ns: &str, dev: &str) -> Result<u64, LabError> {
        let out = self.exec(ns, &["cat", &format!("/sys/class/net/{dev}/statistics/rx_bytes")])?;
        out.trim().parse().map_err(|_| LabError(format!("bad rx_bytes: {out}")))
    }

    /// Run `labtool` with arguments in a namespace.
    pub fn labtool(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let tool = bin("labtool")?;
        let mut a = vec![tool.to_str().unwrap_or_default()];
        a.extend_from_slice(args);
        self.exec(ns, &a)
    }

    /// The VM's own copy of the disk image.
    pub fn vm_disk(&self) -> PathBuf {
        self.dir.join("director.img")
    }

    /// Give the VM a fresh copy of the image with no config at all (a box out of the box).
    pub fn fresh_vm_disk(&self) -> Result<(), LabError> {
        let src = crate::vm::image_dir().join("director.img");
        std::fs::copy(&src, self.vm_disk())
            .map(|_| ())
            .map_err(|e| LabError(format!("{}: {e} (build it: cargo run -p image -- build)", src.display())))
    }

    /// Put `config` on the VM's disk (a fresh copy of `target/image/director.img` the first
    /// time) with the image tool, as an operator would before first boot.
    pub fn write_vm_config(&self, config: &str) -> Result<(), LabError> {
        self.write_config_to(&self.vm_disk(), config)
    }

    /// The second VM's (`boot_peer_vm`) own copy of the disk image.
    pub fn peer_vm_disk(&self) -> PathBuf {
        self.dir.join("director2.img")
    }

    /// `write_vm_config` for the second VM of an HA pair.
    pub fn write_peer_vm_config(&self, config: &str) -> Result<(), LabError> {
        self.write_config_to(&self.peer_vm_disk(), config)
    }

    fn write_config_to(&self, disk: &Path, config: &str) -> Result<(), LabError> {
        let disk = disk.to_path_buf();
        if !disk.exists() {
            let src = crate::vm::image_dir().join("director.img");
            std::fs::copy(&src, &disk).map_err(|e| LabError(format!("{}: {e} (build it: cargo run -p image -- build)", src.display())))?;
        }
        let cfg = self.dir.join("vm-config.json");
        std::fs::write(&cfg, config).map_err(|e| LabError(e.to_string()))?;
        let image = bin("image")?;
        run(&[
            image.to_str().unwrap_or_default(),
            "config-set",
            "--disk",
            disk.to_str().unwrap_or_default(),
            "--config",
            cfg.to_str().unwrap_or_default(),
        ])
        .map(|_| ())
    }

    /// The config the VM's disk holds, as the box will boot with it (`image config-get`:
    /// the newest saved slot, else `director.json`).
    pub fn read_vm_config(&self) -> Result<String, LabError> {
        let image = bin("image")?;
        run(&[image.to_str().unwrap_or_default(), "config-get", "--disk", self.vm_disk().to_str().unwrap_or_default()])
    }

    /// Boot the appliance VM from its disk (run `write_vm_config` first) and wait for the
    /// ready marker. Returns the time from power-on to ready.
    pub fn boot_vm(&mut self, firmware: Firmware) -> Result<Duration, LabError> {
        self.boot_vm_with(firmware, None)
    }

    /// Like `boot_vm`, with the VIP-facing NIC advertising `vip_mtu` (jumbo frames).
    pub fn boot_vm_with(&mut self, firmware: Firmware, vip_mtu: Option<u32>) -> Result<Duration, LabError> {
        let vmdir = self.dir.join("vm");
        std::fs::create_dir_all(&vmdir).map_err(|e| LabError(e.to_string()))?;
        let q = self.vm_queues;
        let nics = [("tap0", VM_MGMT_MAC, None, 1), ("tap1", DIRECTOR_VIP_MAC, vip_mtu, q), ("tap2", DIRECTOR_RS_MAC, None, q)]
            .map(|(t, m, mtu, queues)| VmNic { tap: t.into(), mac: m.into(), mtu, queues });
        let mut vm = Vm::boot_smp(&vmdir, &self.vm_disk(), firmware, &nics, Some(&self.ns("director")), self.vm_vcpus)?;
        let t = vm.wait_for(crate::READY_MARKER, Duration::from_secs(120))?;
        self.vm = Some(vm);
        Ok(t)
    }

    /// Boot real server `i` as a QEMU guest on the real-server segment, set up for VS/TUN as
    /// seed 002 says (`image lab-guest` builds it; see `qemu/src/bin/lab-rs-guest.rs`): RIP
    /// `rip(i)`, MAC `rs_mac(i)`, VIP on tunl0, gateway the router. Waits until it serves.
    pub fn boot_tun_real_server(&mut self, i: usize) -> Result<Duration, LabError> {
        let router = self.ns("router");
        let tap = format!("t{i}");
        self.ip(&router, &["tuntap", "add", &tap, "mode", "tap"])?;
        self.ip(&router, &["link", "set", &tap, "master", "br0"])?;
        self.ip(&router, &["link", "set", &tap, "up"])?;
        let dir = self.dir.join(format!("rs{i}-guest"));
        std::fs::create_dir_all(&dir).map_err(|e| LabError(e.to_string()))?;
        let append = format!("labrs.name=rs{i} labrs.rip={}/24 labrs.gw={ROUTER_RS_SIDE} labrs.vip={VIP}", rip(i));
        let nic = VmNic { tap, mac: rs_mac(i), mtu: None, queues: 1 };
        let mut vm = Vm::boot_guest(&dir, "lab-rs-guest.cpio.gz", &append, &[nic], Some(&router))?;
        let t = vm.wait_for("lab-rs: ready", Duration::from_secs(90));
        let log = vm.console_log();
        self.guests.push((i, vm));
        t.map_err(|e| LabError(format!("{e}\n{log}")))
    }

    /// Boot both VMs of an HA pair at once (`add_peer_director` first; configs on both disks):
    /// the first in `director` with the director's MACs, the second in `director2` with the
    /// peer's. Waits for both ready markers; their power-on to ready times.
    pub fn boot_vm_pair(&mut self, firmware: Firmware) -> Result<(Duration, Duration), LabError> {
        let first = self.start_vm(firmware, "director")?;
        let second = self.start_vm(firmware, "director2")?;
        self.vm = Some(first);
        self.peer_vm = Some(second);
        let a = self.vm().wait_for(crate::READY_MARKER, Duration::from_secs(120))?;
        let b = self.peer_vm().wait_for(crate::READY_MARKER, Duration::from_secs(120))?;
        Ok((a, b))
    }

    /// Boot one of the pair's VMs again (after a power cut or poweroff): `role` is `director`
    /// or `director2`. Waits for the ready marker.
    pub fn boot_pair_vm(&mut self, firmware: Firmware, role: &str) -> Result<Duration, LabError> {
        let mut vm = self.start_vm(firmware, role)?;
        let t = vm.wait_for(crate::READY_MARKER, Duration::from_secs(120))?;
        if role == "director" {
            self.vm = Some(vm);
        } else {
            self.peer_vm = Some(vm);
        }
        Ok(t)
    }

    fn start_vm(&self, firmware: Firmware, role: &str) -> Result<Vm, LabError> {
        let (dir, disk, macs) = if role == "director" {
            (self.dir.join("vm"), self.vm_disk(), [VM_MGMT_MAC, DIRECTOR_VIP_MAC, DIRECTOR_RS_MAC])
        } else {
            (self.dir.join("vm2"), self.peer_vm_disk(), [PEER_MGMT_MAC, PEER_VIP_MAC, PEER_RS_MAC])
        };
        std::fs::create_dir_all(&dir).map_err(|e| LabError(e.to_string()))?;
        let q = self.vm_queues;
        let nics = [("tap0", macs[0], 1), ("tap1", macs[1], q), ("tap2", macs[2], q)].map(|(t, m, queues)| VmNic {
            tap: t.into(),
            mac: m.into(),
            mtu: None,
            queues,
        });
        Vm::boot_smp(&dir, &disk, firmware, &nics, Some(&self.ns(role)), self.vm_vcpus)
    }

    /// The second VM of an HA pair (panics with a clear message if none was booted).
    pub fn peer_vm(&mut self) -> &mut Vm {
        self.peer_vm.as_mut().expect("no second VM booted in this lab")
    }

    /// The helper guest that is real server `i`.
    pub fn guest(&mut self, i: usize) -> Option<&mut Vm> {
        self.guests.iter_mut().find(|(n, _)| *n == i).map(|(_, v)| v)
    }

    /// The VM (panics with a clear message if none was booted: a test bug).
    pub fn vm(&mut self) -> &mut Vm {
        self.vm.as_mut().expect("no VM booted in this lab")
    }

    /// Bytes the host sent into the VM through a tap (the VM's receive direction).
    pub fn tap_to_vm_bytes(&self, tap: &str) -> Result<u64, LabError> {
        let out = self.exec(&self.ns("director"), &["cat", &format!("/sys/class/net/{tap}/statistics/tx_bytes")])?;
        out.trim().parse().map_err(|_| LabError(format!("bad tx_bytes: {out}")))
    }

    /// Stop netfw (SIGTERM) and wait for it.
    pub fn stop_netfw(&mut self) {
        if let Some(i) = self.netfw.take() {
            if let Some((_, c)) = self.children.get_mut(i) {
                stop_child(c);
            }
        }
    }
}

fn stop_child(c: &mut Child) {
    // `ip netns exec` execs the program, so the pid is the program's own.
    if let Ok(pid) = i32::try_from(c.id()) {
        // SAFETY: sending a signal to a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.vm.take());
        drop(self.peer_vm.take());
        self.guests.clear();
        for (_, c) in &mut self.children {
            stop_child(c);
        }
        for ns in self.namespaces.iter().rev() {
            kill_ns_pids(ns);
            let _ = run(&["ip", "netns", "del", ns]);
        }
        if std::env::var_os("LAB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
