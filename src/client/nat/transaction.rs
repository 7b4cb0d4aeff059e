//! One STUN request's retransmissions over UDP (RFC 8489 6.2.1), or its single send over
//! TCP (6.2.2: the stream is reliable, so no retransmission, one 39.5 s time-out), on the
//! loop's clock.

use std::time::{Duration, Instant};

use super::stun::TransactionId;

/// First retransmission time-out; doubled at each retransmission.
pub const INITIAL_RTO: Duration = Duration::from_millis(250);
/// The longest wait between two sends.
const MAX_RTO: Duration = Duration::from_millis(1600);
/// Sends before a request is given up (the last one waits [`MAX_RTO`]).
pub const MAX_SENDS: u32 = 6;
/// How long a request sent over a reliable transport waits for its answer (Ti).
pub const RELIABLE_TIMEOUT: Duration = Duration::from_millis(39_500);

/// A request in flight: its bytes and when to send them again.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub txid: TransactionId,
    pub bytes: Vec<u8>,
    sends: u32,
    rto: Duration,
    next_at: Instant,
    /// Sent over TCP: never resent.
    reliable: bool,
}

/// What time did to a transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    Wait,
    /// Send `bytes` again.
    Resend,
    /// No answer after [`MAX_SENDS`] sends.
    TimedOut,
}

impl Transaction {
    /// A request sent now for the first time.
    pub fn start(txid: TransactionId, bytes: Vec<u8>, now: Instant) -> Transaction {
        Transaction {
            txid,
            bytes,
            sends: 1,
            rto: INITIAL_RTO,
            next_at: now + INITIAL_RTO,
            reliable: false,
        }
    }

    /// A request sent now over a reliable transport: one send, then
    /// [`RELIABLE_TIMEOUT`].
    pub fn start_reliable(txid: TransactionId, bytes: Vec<u8>, now: Instant) -> Transaction {
        Transaction {
            next_at: now + RELIABLE_TIMEOUT,
            reliable: true,
            ..Transaction::start(txid, bytes, now)
        }
    }

    pub fn deadline(&self) -> Instant {
        self.next_at
    }

    pub fn tick(&mut self, now: Instant) -> Tick {
        if now < self.next_at {
            return Tick::Wait;
        }
        if self.reliable || self.sends >= MAX_SENDS {
            return Tick::TimedOut;
        }
        self.sends += 1;
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.next_at = now
            + if self.sends == MAX_SENDS {
                MAX_RTO
            } else {
                self.rto
            };
        Tick::Resend
    }
}

/// A fresh random transaction id.
pub fn new_txid() -> TransactionId {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_with_doubling_waits_then_times_out() {
        let t0 = Instant::now();
        let mut t = Transaction::start([0; 12], vec![1], t0);
        let mut now;
        let mut resends = Vec::new();
        loop {
            assert_eq!(t.tick(t.deadline() - Duration::from_millis(1)), Tick::Wait);
            now = t.deadline();
            match t.tick(now) {
                Tick::Resend => resends.push((now - t0).as_millis()),
                Tick::TimedOut => break,
                Tick::Wait => unreachable!(),
            }
        }
        assert_eq!(resends, [250, 750, 1750, 3350, 4950]);
        assert_eq!((now - t0).as_millis(), 6550);
    }

    #[test]
    fn a_reliable_request_is_never_resent_and_times_out_after_39_5_s() {
        let t0 = Instant::now();
        let mut t = Transaction::start_reliable([0; 12], vec![1], t0);
        assert_eq!(t.deadline() - t0, Duration::from_millis(39_500));
        assert_eq!(t.tick(t0 + Duration::from_secs(39)), Tick::Wait);
        assert_eq!(t.tick(t.deadline()), Tick::TimedOut);
    }
}
