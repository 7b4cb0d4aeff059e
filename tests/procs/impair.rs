//! A delay-and-loss relay for the network lab (this kernel has `tbf`/`htb` but no `netem`):
//! a thread that enters a network namespace and forwards every Ethernet frame between two
//! interfaces there, as a two-port bridge. IPv4 UDP frames are dropped at random (seeded, so
//! the same packets of a direction are dropped on every run) and held for a fixed delay per
//! direction; everything else (ARP, IPv6 neighbour discovery, the signaling's TCP) passes at
//! once and untouched.
//!
//! AF_PACKET sockets with `PACKET_VNET_HDR`: the kernel hands each frame over with its
//! offload state (a TCP segment larger than the MTU, a checksum still to be filled in) and
//! takes that state back on the way out, so frames need no rewriting (veths offload both,
//! and there is no `ethtool` here to turn that off).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happens to one direction's IPv4 UDP packets.
#[derive(Clone, Copy, Debug)]
pub struct Leg {
    /// Every packet is held this long.
    pub delay: Duration,
    /// The share of packets dropped, 0.0..=1.0.
    pub loss: f64,
}

/// What the relay did in one direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct LegCounts {
    /// IPv4 UDP frames seen (forwarded or dropped).
    pub udp: u64,
    /// Of those, dropped on purpose.
    pub dropped: u64,
    /// Other frames, forwarded at once.
    pub other: u64,
    /// Frames the kernel refused to send (a full socket buffer): lost too.
    pub send_errors: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub a_to_b: LegCounts,
    pub b_to_a: LegCounts,
    /// Frames the kernel dropped before the relay read them (its receive buffers were full).
    pub kernel_drops: u64,
}

/// The running relay; stopped (and its thread joined) on drop.
pub struct Relay {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// The virtio-net header `PACKET_VNET_HDR` puts before each frame.
const VNET_HDR: usize = 10;
/// Frames queued per direction at most (bounds memory if a test floods the relay).
const QUEUE_MAX: usize = 50_000;

/// A small seeded generator (SplitMix64): the relay's loss decisions, one per UDP frame.
#[derive(Clone)]
pub struct Dice(u64);

impl Dice {
    /// The generator a relay started with `seed` uses for direction `leg` (0: a to b).
    pub fn new(seed: u64, leg: u64) -> Dice {
        Dice(seed ^ leg.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// True with probability `p`.
    pub fn hit(&mut self, p: f64) -> bool {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Moves the calling thread into the network namespace `name` (made by `ip netns add`).
pub fn enter_netns(name: &str) -> io::Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name:?}: {e}")))?;
    // SAFETY: setns on a valid descriptor; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(ret)
}

fn set_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(r, &format!("setsockopt {opt}")).map(drop)
}

/// A raw packet socket on interface `ifname` of the current namespace: every frame, with
/// its virtio-net header, non-blocking.
fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {ifname:?} here"),
        ));
    }
    // Protocol 0: no frames until bound to the interface.
    // SAFETY: plain socket creation.
    let raw = check(
        unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        },
        "AF_PACKET socket",
    )?;
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    // Room for a second of video while the thread waits for a core.
    set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20)?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20)?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = index as i32;
    // SAFETY: binding to a sockaddr_ll of the right size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(r, &format!("bind to {ifname}"))?;
    Ok(fd)
}

/// Frames the kernel dropped on `fd` since the last call.
fn kernel_drops(fd: &OwnedFd) -> u64 {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the option's struct and its size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if r == 0 {
        u64::from(st.tp_drops)
    } else {
        0
    }
}

/// Whether a frame (after its virtio-net header) is IPv4 carrying UDP.
fn is_ipv4_udp(frame: &[u8]) -> bool {
    frame.len() >= 14 + 20 && frame[12..14] == [0x08, 0x00] && frame[14 + 9] == 17
}

/// One direction: its settings, generator, queue and counters.
struct Way {
    leg: Leg,
    dice: Dice,
    queue: VecDeque<(Instant, Vec<u8>)>,
}

impl Relay {
    /// Starts relaying between interfaces `a` and `b` of namespace `netns` (both up, with
    /// no address); `a_to_b` and `b_to_a` say what each direction does.
    pub fn start(
        netns: &str,
        a: &str,
        b: &str,
        a_to_b: Leg,
        b_to_a: Leg,
        seed: u64,
    ) -> io::Result<Relay> {
        for leg in [a_to_b, b_to_a] {
            if !(0.0..=1.0).contains(&leg.loss) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("loss {} is not within 0..=1", leg.loss),
                ));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (netns, a, b) = (netns.to_string(), a.to_string(), b.to_string());
        let (stop2, counts2) = (stop.clone(), counts.clone());
        let thread = std::thread::Builder::new()
            .name(format!("impair-{netns}"))
            .spawn(move || {
                let opened =
                    enter_netns(&netns).and_then(|()| Ok((packet_socket(&a)?, packet_socket(&b)?)));
                let (fa, fb) = match opened {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                };
                let ways = [
                    Way {
                        leg: a_to_b,
                        dice: Dice::new(seed, 0),
                        queue: VecDeque::new(),
                    },
                    Way {
                        leg: b_to_a,
                        dice: Dice::new(seed, 1),
                        queue: VecDeque::new(),
                    },
                ];
                run(&fa, &fb, ways, &stop2, &counts2)
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Relay {
                stop,
                counts,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("the relay thread died")),
        }
    }

    /// What it did so far.
    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops it; what it did, or why its thread ended early.
    pub fn stop(mut self) -> io::Result<Counts> {
        self.halt()?;
        Ok(self.counts())
    }

    fn halt(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the relay thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// The relay's loop: read what is ready, forward or queue it, send what is due.
fn run(
    fa: &OwnedFd,
    fb: &OwnedFd,
    mut ways: [Way; 2],
    stop: &AtomicBool,
    counts: &Mutex<Counts>,
) -> io::Result<()> {
    let fds = [fa, fb];
    let mut buf = vec![0u8; 1 << 17];
    let mut local = Counts::default();
    let mut last_publish = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (i, way) in ways.iter_mut().enumerate() {
            while way.queue.front().is_some_and(|(due, _)| *due <= now) {
                let (_, frame) = way.queue.pop_front().expect("front exists");
                if send(fds[1 - i], &frame).is_err() {
                    leg_mut(&mut local, i).send_errors += 1;
                }
            }
        }
        let next = ways
            .iter()
            .filter_map(|w| w.queue.front().map(|(due, _)| *due))
            .min();
        // At most 20 ms, to notice `stop`; rounded up, so nothing leaves early.
        let wait_ms = next.map_or(20, |due| {
            let left = due.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000).min(20) as libc::c_int
        });
        let mut pfd = [
            libc::pollfd {
                fd: fa.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fb.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries.
        let r = unsafe { libc::poll(pfd.as_mut_ptr(), 2, wait_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (i, p) in pfd.iter().enumerate() {
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                return Err(io::Error::other(format!(
                    "interface {i} of the relay went away"
                )));
            }
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            // Everything queued on this side now.
            while let Some(n) = recv(fds[i], &mut buf)? {
                let frame = &buf[..n];
                let way = &mut ways[i];
                let c = leg_mut(&mut local, i);
                if n < VNET_HDR || !is_ipv4_udp(&frame[VNET_HDR..]) {
                    c.other += 1;
                    if send(fds[1 - i], frame).is_err() {
                        c.send_errors += 1;
                    }
                    continue;
                }
                c.udp += 1;
                if way.dice.hit(way.leg.loss) || way.queue.len() >= QUEUE_MAX {
                    c.dropped += 1;
                } else if way.leg.delay.is_zero() {
                    if send(fds[1 - i], frame).is_err() {
                        c.send_errors += 1;
                    }
                } else {
                    way.queue
                        .push_back((Instant::now() + way.leg.delay, frame.to_vec()));
                }
            }
        }
        if last_publish.elapsed() >= Duration::from_millis(100) {
            local.kernel_drops += kernel_drops(fa) + kernel_drops(fb);
            *counts.lock().unwrap_or_else(|e| e.into_inner()) = local;
            last_publish = Instant::now();
        }
    }
    local.kernel_drops += kernel_drops(fa) + kernel_drops(fb);
    *counts.lock().unwrap_or_else(|e| e.into_inner()) = local;
    Ok(())
}

fn leg_mut(c: &mut Counts, i: usize) -> &mut LegCounts {
    if i == 0 {
        &mut c.a_to_b
    } else {
        &mut c.b_to_a
    }
}

/// The next frame arriving on `fd` (our own sends, seen as outgoing, skipped); None when
/// nothing is waiting.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: sockaddr_ll is plain data.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: a buffer of buf.len() bytes and an address of `len` bytes.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        return Ok(Some(n as usize));
    }
}

fn send(fd: &OwnedFd, frame: &[u8]) -> io::Result<()> {
    // SAFETY: a buffer of frame.len() bytes.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
