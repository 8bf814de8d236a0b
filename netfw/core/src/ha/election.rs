//! The election of the HA pair's master: RFC 5798's state machine (section 6.4), pure, with
//! the clock passed in. The caller feeds it authenticated adverts and the time; it says when
//! to send an advert and when this box becomes master or backup, with why.
//!
//! - Backup: the master's adverts hold it there. Nothing for Master_Down_Interval (3 × the
//!   master's interval + a skew that favours the higher priority) makes it master; an advert
//!   of priority 0 (the master leaving: a clean shutdown) makes it master after only the skew.
//!   With `preempt`, an advert of lower priority is ignored, so a higher-priority backup takes
//!   over when its timer fires.
//! - Master: adverts every interval. A higher priority (or an equal one from a higher address)
//!   makes it backup. An advert from a lower one means both were master — split brain: it
//!   stays (the RFC's rule), and the time the peers could not hear each other is reported.
//! - Leaving (shutdown): a master sends one advert of priority 0.

use core::fmt;
use core::net::Ipv4Addr;

use crate::time::Millis;

/// This box's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// Holds the VIPs, forwards, advertises.
    Master,
    /// Holds nothing, forwards nothing, listens.
    Backup,
}

impl Role {
    /// "master" / "backup".
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

/// Why the role changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Why {
    /// No advert from a master for Master_Down_Interval (ms).
    MasterSilent(u64),
    /// The master advertised priority 0: it is leaving.
    MasterLeft,
    /// An advert of a higher priority (or of the same from a higher address).
    Outranked {
        /// Its priority.
        priority: u8,
    },
    /// With `preempt`: the master advertises a lower priority than this box's.
    Preempted {
        /// The master's priority.
        priority: u8,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::MasterSilent(ms) => write!(f, "no advert from the master for {ms} ms"),
            Why::MasterLeft => f.write_str("the master is leaving (it advertised priority 0)"),
            Why::Outranked { priority } => write!(f, "the peer advertises priority {priority}, which outranks this box"),
            Why::Preempted { priority } => write!(f, "this box outranks the master (priority {priority}) and preempts it"),
        }
    }
}

/// A change of role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transition {
    /// The new role.
    pub to: Role,
    /// Why.
    pub why: Why,
}

/// What a turn asks of the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Turn {
    /// Send an advert now (with `Election::priority`).
    pub advertise: bool,
    /// The role changed.
    pub transition: Option<Transition>,
    /// Both boxes were master for about this long (ms): split brain, now resolved.
    pub split_brain_ms: Option<u64>,
}

/// The settings of one virtual router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// This box's address (the DIP): breaks ties.
    pub address: Ipv4Addr,
    /// 1–254.
    pub priority: u8,
    /// Advert interval, ms (multiple of 10, 10–40950).
    pub advert_ms: u64,
    /// A higher-priority backup takes over from a lower master.
    pub preempt: bool,
}

/// The state machine.
#[derive(Clone, Debug)]
pub struct Election {
    s: Settings,
    role: Role,
    /// The master's interval as it advertises it (ms).
    master_advert_ms: u64,
    /// Backup: when the master is considered gone.
    down_at: Millis,
    /// Master: when the next advert is due.
    advert_at: Millis,
    /// When an advert from the peer last arrived.
    heard: Option<Millis>,
    /// Backup: the master's last advert had priority 0 (it is leaving).
    master_left: bool,
    /// Backup: the priority of the master's last advert.
    master_priority: Option<u8>,
    /// Backup with `preempt`: a lower-priority master still holds the role (this box waits
    /// for its flow table before taking over).
    hold: bool,
}

impl Election {
    /// Start as backup (the RFC's Initialize for a non-owner), listening for a master.
    pub fn new(s: Settings, now: Millis) -> Election {
        let mut e = Election {
            s,
            role: Role::Backup,
            master_advert_ms: s.advert_ms,
            down_at: now,
            advert_at: now,
            heard: None,
            master_left: false,
            master_priority: None,
            hold: false,
        };
        e.down_at = now.plus(e.master_down_ms());
        e
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The priority adverts carry.
    pub fn priority(&self) -> u8 {
        self.s.priority
    }

    /// When the peer was last heard.
    pub fn heard(&self) -> Option<Millis> {
        self.heard
    }

    /// Skew_Time: ((256 − priority) × Master_Adver_Interval) / 256.
    fn skew_ms(&self) -> u64 {
        (256 - u64::from(self.s.priority)) * self.master_advert_ms / 256
    }

    /// Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_ms(&self) -> u64 {
        3 * self.master_advert_ms + self.skew_ms()
    }

    fn become_master(&mut self, why: Why, now: Millis) -> Turn {
        self.role = Role::Master;
        self.advert_at = now.plus(self.s.advert_ms);
        Turn { advertise: true, transition: Some(Transition { to: Role::Master, why }), split_brain_ms: None }
    }

    /// The timers: an advert due, or the master silent too long.
    pub fn tick(&mut self, now: Millis) -> Turn {
        match self.role {
            Role::Backup if now >= self.down_at => {
                let heard_lately = self.heard.is_some_and(|t| now.since(t) < self.master_down_ms());
                let why = if self.master_left {
                    Why::MasterLeft
                } else if let Some(priority) = self.master_priority.filter(|p| heard_lately && self.outranks(*p)) {
                    Why::Preempted { priority }
                } else {
                    Why::MasterSilent(self.heard.map_or(self.master_down_ms(), |t| now.since(t)))
                };
                self.master_left = false;
                self.become_master(why, now)
            }
            Role::Master if now >= self.advert_at => {
                self.advert_at = now.plus(self.s.advert_ms);
                Turn { advertise: true, ..Turn::default() }
            }
            _ => Turn::default(),
        }
    }

    /// An authenticated advert for this virtual router from `from` (`interval_ms` as it says).
    pub fn advert(&mut self, from: Ipv4Addr, priority: u8, interval_ms: u64, now: Millis) -> Turn {
        let last_heard = self.heard.replace(now);
        match self.role {
            Role::Backup => {
                self.master_left = priority == 0;
                self.master_priority = Some(priority);
                if priority == 0 {
                    self.down_at = now.plus(self.skew_ms());
                    if self.skew_ms() == 0 {
                        return self.become_master(Why::MasterLeft, now);
                    }
                } else if !self.s.preempt || priority >= self.s.priority || self.hold {
                    self.master_advert_ms = interval_ms.max(10);
                    self.down_at = now.plus(self.master_down_ms());
                }
                Turn::default()
            }
            Role::Master => {
                if priority == 0 {
                    // The other is leaving: advertise at once so the segment knows the master.
                    self.advert_at = now.plus(self.s.advert_ms);
                    return Turn { advertise: true, ..Turn::default() };
                }
                let outranked = priority > self.s.priority || (priority == self.s.priority && u32::from(from) > u32::from(self.s.address));
                if outranked {
                    self.role = Role::Backup;
                    self.master_advert_ms = interval_ms.max(10);
                    self.down_at = now.plus(self.master_down_ms());
                    return Turn {
                        transition: Some(Transition { to: Role::Backup, why: Why::Outranked { priority } }),
                        split_brain_ms: last_heard.map(|t| now.since(t)).filter(|gap| *gap > self.master_down_ms()),
                        ..Turn::default()
                    };
                }
                // Both were master; this box stays and says so at once, so the other yields. (Two
                // boxes that start together are both master for an instant: not a split brain.)
                self.advert_at = now.plus(self.s.advert_ms);
                let gap = last_heard.map(|t| now.since(t)).filter(|gap| *gap > self.master_down_ms());
                Turn { advertise: true, split_brain_ms: gap, ..Turn::default() }
            }
        }
    }

    /// With `preempt`: while `hold` is set, a lower-priority master keeps the role (its adverts
    /// count as a master's); once cleared, this box takes over after the master-down interval.
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// Would this backup preempt a master advertising `priority`?
    pub fn outranks(&self, priority: u8) -> bool {
        self.s.preempt && priority != 0 && priority < self.s.priority
    }

    /// Keep the master role across new settings (a reload): advertise at once with them.
    pub fn resume_master(&mut self, now: Millis) {
        self.role = Role::Master;
        self.advert_at = now;
    }

    /// Leaving (clean shutdown or reboot): a master sends one advert of priority 0, so its
    /// backup takes over after only its skew. True if that advert is to be sent.
    pub fn leave(&mut self) -> bool {
        let was_master = self.role == Role::Master;
        self.role = Role::Backup;
        was_master
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

    fn settings(address: Ipv4Addr, priority: u8, preempt: bool) -> Settings {
        Settings { address, priority, advert_ms: 200, preempt }
    }

    /// Run `e` from `from` to `to` ms in 10 ms steps, feeding it `peer`'s adverts every 200 ms
    /// (`None`: silence); the first transition and when.
    fn run(e: &mut Election, from: u64, to: u64, peer: Option<(Ipv4Addr, u8)>) -> Option<(u64, Transition)> {
        let mut t = from;
        while t <= to {
            if let Some((addr, prio)) = peer.filter(|_| t.is_multiple_of(200)) {
                if let Some(tr) = e.advert(addr, prio, 200, Millis(t)).transition {
                    return Some((t, tr));
                }
            }
            if let Some(tr) = e.tick(Millis(t)).transition {
                return Some((t, tr));
            }
            t += 10;
        }
        None
    }

    #[test]
    fn a_backup_takes_over_after_the_master_down_interval_and_not_before() {
        let mut e = Election::new(settings(B, 100, true), Millis(0));
        // 3 × 200 + (256 − 100) × 200 / 256 = 600 + 121 = 721 ms.
        assert_eq!(e.master_down_ms(), 721);
        assert_eq!(run(&mut e, 0, 2000, Some((A, 200))), None, "the master's adverts hold it");
        let (at, tr) = run(&mut e, 2010, 4000, None).unwrap();
        assert_eq!(tr.to, Role::Master);
        assert!(matches!(tr.why, Why::MasterSilent(ms) if (721..=731).contains(&ms)), "the silence as it was: {tr:?}");
        assert!((2000 + 721..=2000 + 731).contains(&at), "took over at {at} ms");
        assert_eq!(e.role(), Role::Master);
        assert!(e.tick(Millis(at + 200)).advertise, "a master advertises every interval");
    }

    #[test]
    fn a_leaving_master_hands_over_after_the_skew_only() {
        let mut e = Election::new(settings(B, 100, true), Millis(0));
        e.advert(A, 200, 200, Millis(0));
        e.advert(A, 0, 200, Millis(100));
        let (at, tr) = run(&mut e, 100, 1000, None).unwrap();
        assert!(at <= 100 + 130, "priority 0: over after the skew (121 ms), at {at} ms");
        assert_eq!(tr.why, Why::MasterLeft);
        let mut m = Election::new(settings(A, 200, true), Millis(0));
        m.tick(Millis(1000));
        assert!(m.leave(), "a master says it leaves");
        assert!(!m.leave(), "a backup has nothing to say");
    }

    #[test]
    fn priority_and_preemption_decide_and_a_tie_goes_to_the_higher_address() {
        // A master of lower priority yields to a higher advert.
        let mut low = Election::new(settings(A, 100, true), Millis(0));
        run(&mut low, 0, 1000, None).unwrap();
        let t = low.advert(B, 200, 200, Millis(1100));
        assert_eq!(t.transition, Some(Transition { to: Role::Backup, why: Why::Outranked { priority: 200 } }));
        // With preemption a higher-priority backup ignores a lower master, and takes over.
        let mut high = Election::new(settings(B, 200, true), Millis(0));
        let (_, t) = run(&mut high, 0, 3000, Some((A, 100))).unwrap();
        assert_eq!(t.why, Why::Preempted { priority: 100 }, "it says it preempts, not that the master was silent");
        // Without it, the lower master's adverts hold it.
        let mut patient = Election::new(settings(B, 200, false), Millis(0));
        assert_eq!(run(&mut patient, 0, 3000, Some((A, 100))), None);
        // Held (waiting for the master's flow table), it waits; released, it takes over.
        let mut held = Election::new(settings(B, 200, true), Millis(0));
        assert!(held.outranks(100) && !held.outranks(200) && !held.outranks(0));
        held.set_hold(true);
        assert_eq!(run(&mut held, 0, 3000, Some((A, 100))), None);
        held.set_hold(false);
        assert!(run(&mut held, 3000, 6000, Some((A, 100))).is_some());
        // Equal priorities: the higher address wins.
        let mut a = Election::new(settings(A, 150, true), Millis(0));
        run(&mut a, 0, 1000, None).unwrap();
        assert!(a.advert(B, 150, 200, Millis(1100)).transition.is_some(), "B's address is higher");
        let mut b = Election::new(settings(B, 150, true), Millis(0));
        run(&mut b, 0, 1000, None).unwrap();
        assert!(b.advert(A, 150, 200, Millis(1100)).transition.is_none());
    }

    #[test]
    fn both_masters_after_a_cut_are_reported_and_one_remains() {
        let mut a = Election::new(settings(A, 200, true), Millis(0));
        let mut b = Election::new(settings(B, 100, true), Millis(0));
        run(&mut a, 0, 1000, None).unwrap();
        // b hears a until the link is cut at 2000 ms.
        assert_eq!(run(&mut b, 0, 2000, Some((A, 200))), None);
        let (_, tr) = run(&mut b, 2010, 4000, None).unwrap();
        assert_eq!(tr.to, Role::Master, "cut off, b takes the VIP too");
        // The link is back at 12 s: a hears b's advert (lower priority), stays, reports.
        a.heard = Some(Millis(2000));
        let t = a.advert(B, 100, 200, Millis(12_000));
        assert_eq!((t.transition, t.advertise), (None, true));
        assert_eq!(t.split_brain_ms, Some(10_000));
        // b hears a's advert: b yields and reports the same gap.
        let t = b.advert(A, 200, 200, Millis(12_010));
        assert_eq!(t.transition.map(|x| x.to), Some(Role::Backup));
        assert_eq!(t.split_brain_ms, Some(10_010));
        assert_eq!((a.role(), b.role()), (Role::Master, Role::Backup));
        // Two boxes that start together are both master for an instant: no split brain.
        let mut c = Election::new(settings(A, 200, true), Millis(0));
        run(&mut c, 0, 1000, None).unwrap();
        assert_eq!(c.advert(B, 100, 200, Millis(1001)).split_brain_ms, None);
    }
}
