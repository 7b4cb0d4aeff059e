//! One call's transport (after the original's `Conductor`): a str0m `Rtc` per call,
//! offer/answer and trickle ICE as JSON, `BYE`, the time-outs that give a call up, and the
//! dead-peer rule. The media (codecs, keyframe policy) is the
//! [`MediaSession`](super::media_session::MediaSession)'s; encoded frames go in and out
//! here. Which messages may start or join a call is the
//! [`ClientApp`](super::client_app::ClientApp)'s decision: the conductor is handed only
//! what the app admitted. No sockets and no clock: datagrams come in with their addresses,
//! go out as [`CallOutput::Transmit`], and every instant is an argument.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::media_session::{MediaConfig, MIN_BITRATE_BPS};
use crate::signaling::message::{excerpt, PeerMessage, SdpKind};
use crate::signaling::PeerId;

/// The H.264 format every browser decodes: constrained baseline, level 3.1.
pub const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;
const H264_PT: u8 = 108;
const H264_RTX_PT: u8 = 109;

/// How long a caller waits for the answer (the callee's window may be ringing).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long ICE and DTLS get to connect once both descriptions are set.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Silence from a connected peer after which it is shown as not answering and video
/// sending stops (str0m keeps its consent checks going, so a returning peer is heard).
pub const SILENT_AFTER: Duration = Duration::from_millis(2500);
/// Silence after which the call ends: a peer that was killed or lost its network.
pub const DEAD_AFTER: Duration = Duration::from_secs(8);
/// Remote candidates one call keeps, from the offer and trickled together. A browser
/// offers a few per interface and kind (host, server-reflexive, relay; IPv4 and IPv6):
/// well under this. Every candidate kept is paired with each local one and checked, so
/// the cap bounds the work a hostile peer can make us do.
pub const MAX_REMOTE_CANDIDATES: usize = 40;
/// Lines an offer may have once its candidates are capped (a real one has about 100).
const MAX_SDP_LINES: usize = 2_000;
/// How much of a parser's error or a peer's text a reason quotes.
const REASON_EXCERPT: usize = 160;

/// Why a call could not be made, answered or carried on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    AlreadyInCall(PeerId),
    /// A session description str0m cannot parse.
    BadSdp {
        kind: SdpKind,
        detail: String,
    },
    /// A parsed description str0m would not apply.
    SdpRejected {
        kind: SdpKind,
        detail: String,
    },
    /// An offer with no video we can decode (the codecs it had instead).
    NoUsableCodec {
        offered: Vec<String>,
    },
    /// An offer too large to be a real one.
    OfferTooLarge {
        lines: usize,
    },
    /// str0m failed on input or output.
    Transport(String),
    /// str0m produced no offer.
    NoOffer,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::AlreadyInCall(p) => write!(f, "already in a call with peer {p}"),
            CallError::BadSdp { kind, detail } => {
                write!(f, "bad {}: {detail}", kind.as_str())
            }
            CallError::SdpRejected { kind, detail } => {
                write!(f, "cannot accept the {}: {detail}", kind.as_str())
            }
            CallError::NoUsableCodec { offered } if offered.is_empty() => {
                f.write_str("the offer has no video (we send and receive H.264 video)")
            }
            CallError::NoUsableCodec { offered } => write!(
                f,
                "the offer has no H.264 video (offered: {}; we send and receive H.264)",
                offered.join(", ")
            ),
            CallError::OfferTooLarge { lines } => {
                write!(f, "the offer has {lines} lines (at most {MAX_SDP_LINES})")
            }
            CallError::Transport(e) => write!(f, "str0m failed: {e}"),
            CallError::NoOffer => f.write_str("str0m produced no offer"),
        }
    }
}

impl std::error::Error for CallError {}

/// Why a call ended, for `CALL_ENDED reason="..."` and the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// We hung up (the window, `--duration`, a signal); the text says which.
    Local(String),
    /// The peer's `BYE` after it answered.
    PeerHungUp,
    /// The peer's `BYE` before any answer: a busy callee and one who declined look the same.
    BusyOrDeclined,
    /// The peer left the signaling server before the media flowed.
    PeerLeft,
    /// No packet from the connected peer for this long.
    NoPackets(Duration),
    NoAnswer,
    ConnectTimeout,
    IceDisconnected,
    /// The signaling server could not deliver our message.
    Unreachable(String),
    Failed(CallError),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Local(why) => f.write_str(why),
            EndReason::PeerHungUp => f.write_str("the peer hung up (BYE)"),
            EndReason::BusyOrDeclined => {
                f.write_str("the peer is busy or declined (BYE before an answer)")
            }
            EndReason::PeerLeft => f.write_str("the peer left the server"),
            EndReason::NoPackets(d) => write!(f, "no packets from the peer for {} s", d.as_secs()),
            EndReason::NoAnswer => write!(f, "no answer within {} s", ANSWER_TIMEOUT.as_secs()),
            EndReason::ConnectTimeout => write!(
                f,
                "ICE/DTLS did not connect within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
            EndReason::IceDisconnected => f.write_str("ICE disconnected"),
            EndReason::Unreachable(e) => write!(f, "cannot reach the peer: {e}"),
            EndReason::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// What the loop must do for the call.
#[derive(Debug)]
pub enum CallOutput {
    /// Send this message body to the peer through the signaling server.
    Signal {
        to: PeerId,
        body: Vec<u8>,
    },
    /// Send a datagram from the local socket `source` to `destination`.
    Transmit {
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    CallStarted {
        peer: PeerId,
    },
    /// ICE and DTLS are up: media can flow.
    Connected {
        peer: PeerId,
    },
    /// A received video frame (Annex-B), for the media session.
    MediaData(std::sync::Arc<[u8]>),
    /// The peer asked for a keyframe.
    KeyframeRequested,
    /// str0m's send-side bandwidth estimate, in bit/s.
    BandwidthEstimate(u64),
    /// The connected peer has sent nothing for `silent`; video sending is paused.
    PeerSilent {
        peer: PeerId,
        silent: Duration,
    },
    /// Packets from a silent peer again: sending resumes.
    PeerResumed {
        peer: PeerId,
    },
    CallEnded {
        peer: PeerId,
        reason: EndReason,
        stats: CallStats,
    },
}

/// The transport's counters for one call.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub rtt: Option<Duration>,
    /// From the call's start to ICE+DTLS connected.
    pub connect_time: Option<Duration>,
    /// Remote candidates dropped by [`MAX_REMOTE_CANDIDATES`].
    pub candidates_dropped: u64,
    /// Since the last packet from the peer, when it passed [`SILENT_AFTER`].
    pub silent_for: Option<Duration>,
}

/// Where the call is in its negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    /// We sent an offer and wait for the answer.
    Offering,
    /// Both descriptions are set; ICE and DTLS are connecting.
    Connecting,
    Connected,
}

struct Call {
    peer: PeerId,
    rtc: Rtc,
    mid: Option<Mid>,
    pending_offer: Option<SdpPendingOffer>,
    remote_description_at: Option<Instant>,
    /// Remote candidates that came before the description they belong to.
    early_candidates: Vec<Candidate>,
    remote_candidates: usize,
    local_candidates: Vec<Candidate>,
    candidates_sent: bool,
    started: Instant,
    connected: bool,
    last_packet_at: Option<Instant>,
    silent: bool,
    next_timeout: Option<Instant>,
    stats: CallStats,
}

impl Call {
    fn phase(&self) -> CallPhase {
        if self.connected {
            CallPhase::Connected
        } else if self.remote_description_at.is_some() {
            CallPhase::Connecting
        } else {
            CallPhase::Offering
        }
    }

    /// The instant the call is given up if nothing changes, and why.
    fn deadline(&self) -> (Instant, EndReason) {
        match (self.remote_description_at, self.last_packet_at) {
            (_, Some(last)) if self.connected => {
                (last + DEAD_AFTER, EndReason::NoPackets(DEAD_AFTER))
            }
            (Some(t), _) => (t + CONNECT_TIMEOUT, EndReason::ConnectTimeout),
            (None, _) => (self.started + ANSWER_TIMEOUT, EndReason::NoAnswer),
        }
    }
}

/// The call manager: idle, or in one call with one peer.
pub struct Conductor {
    media: MediaConfig,
    local_addrs: Vec<SocketAddr>,
    call: Option<Call>,
    out: VecDeque<CallOutput>,
}

impl Conductor {
    /// `local_addrs` are the bound UDP sockets, each offered as a host candidate.
    pub fn new(media: MediaConfig, local_addrs: Vec<SocketAddr>) -> Conductor {
        Conductor {
            media,
            local_addrs,
            call: None,
            out: VecDeque::new(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.call.is_none()
    }

    pub fn peer(&self) -> Option<PeerId> {
        self.call.as_ref().map(|c| c.peer)
    }

    pub fn phase(&self) -> Option<CallPhase> {
        self.call.as_ref().map(Call::phase)
    }

    /// True while media can be sent: connected, and the peer is not silent.
    pub fn is_sending(&self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.connected && c.mid.is_some() && !c.silent)
    }

    /// The current call's counters.
    pub fn stats(&self) -> Option<&CallStats> {
        self.call.as_ref().map(|c| &c.stats)
    }

    /// The peer has a new id (both sides rejoined a restarted signaling server): messages
    /// for the call go to it from now on.
    pub fn set_peer(&mut self, peer: PeerId) {
        if let Some(c) = self.call.as_mut() {
            log::info!("call: peer {} is now peer {peer}", c.peer);
            c.peer = peer;
        }
    }

    fn new_call(&self, peer: PeerId, now: Instant) -> Call {
        let configured = Bitrate::bps(self.media.bitrate_bps.into());
        let mut config = Rtc::builder()
            .clear_codecs()
            .enable_bwe(Some(configured))
            .set_stats_interval(Some(Duration::from_secs(1)));
        config.codec_config().add_h264(
            H264_PT.into(),
            Some(H264_RTX_PT.into()),
            true,
            H264_PROFILE_LEVEL_ID,
        );
        let mut rtc = config.build(now);
        rtc.bwe()
            .set_bitrate(Bitrate::bps(MIN_BITRATE_BPS.into()), configured);
        let mut local_candidates = Vec::new();
        for addr in &self.local_addrs {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    if let Some(c) = rtc.add_local_candidate(c) {
                        local_candidates.push(c.clone());
                    }
                }
                Err(e) => log::warn!("no host candidate for {addr}: {e}"),
            }
        }
        Call {
            peer,
            rtc,
            mid: None,
            pending_offer: None,
            remote_description_at: None,
            early_candidates: Vec::new(),
            remote_candidates: 0,
            local_candidates,
            candidates_sent: false,
            started: now,
            connected: false,
            last_packet_at: None,
            silent: false,
            next_timeout: Some(now),
            stats: CallStats::default(),
        }
    }

    /// Calls `peer`: adds a send-receive video track and sends the offer.
    pub fn call(&mut self, peer: PeerId, now: Instant) -> Result<(), CallError> {
        if let Some(c) = &self.call {
            return Err(CallError::AlreadyInCall(c.peer));
        }
        let mut call = self.new_call(peer, now);
        let mut api = call.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, pending) = api.apply().ok_or(CallError::NoOffer)?;
        call.mid = Some(mid);
        call.pending_offer = Some(pending);
        log::info!("calling peer {peer}");
        self.out.push_back(CallOutput::CallStarted { peer });
        self.signal(
            peer,
            PeerMessage::Sdp {
                kind: SdpKind::Offer,
                sdp: offer.to_sdp_string(),
            },
        );
        send_candidates(&mut call, &mut self.out);
        self.call = Some(call);
        self.drain(now);
        Ok(())
    }

    /// Answers `peer`'s offer. A call we are still offering to the same peer is replaced
    /// (glare, as the polite side of "perfect negotiation": the app decides who yields).
    pub fn accept_offer(&mut self, peer: PeerId, sdp: &str, now: Instant) -> Result<(), CallError> {
        let replacing = match &self.call {
            Some(c) if c.peer == peer && c.phase() == CallPhase::Offering => true,
            Some(c) => return Err(CallError::AlreadyInCall(c.peer)),
            None => false,
        };
        let sdp = prepare_offer(sdp)?;
        let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| CallError::BadSdp {
            kind: SdpKind::Offer,
            detail: excerpt(&e.to_string(), REASON_EXCERPT),
        })?;
        let mut call = self.new_call(peer, now);
        let answer =
            call.rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| CallError::SdpRejected {
                    kind: SdpKind::Offer,
                    detail: excerpt(&e.to_string(), REASON_EXCERPT),
                })?;
        call.remote_description_at = Some(now);
        call.remote_candidates = count_candidates(&sdp);
        if let Some(old) = self.call.take().filter(|_| replacing) {
            // The call goes on from the user's point of view: same peer, same start.
            call.started = old.started;
            log::info!("glare with peer {peer}: answering its offer instead of ours");
        } else {
            log::info!("answering peer {peer}");
            self.out.push_back(CallOutput::CallStarted { peer });
        }
        self.signal(
            peer,
            PeerMessage::Sdp {
                kind: SdpKind::Answer,
                sdp: answer.to_sdp_string(),
            },
        );
        self.call = Some(call);
        self.drain(now);
        Ok(())
    }

    fn signal(&mut self, to: PeerId, msg: PeerMessage) {
        self.out.push_back(CallOutput::Signal {
            to,
            body: msg.to_body(),
        });
    }

    /// A message from the call's peer (the app admitted it): the answer, a candidate, or
    /// `BYE`. A new offer in a call that has its descriptions is not renegotiated.
    pub fn handle_message(&mut self, msg: PeerMessage, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let result = match msg {
            PeerMessage::Bye => {
                let reason = if call.remote_description_at.is_none() {
                    EndReason::BusyOrDeclined
                } else {
                    EndReason::PeerHungUp
                };
                return self.end_call(reason, now);
            }
            PeerMessage::Sdp {
                kind: SdpKind::Answer,
                sdp,
            } => accept_answer(call, &sdp, now),
            PeerMessage::Sdp {
                kind: SdpKind::Offer,
                ..
            } => {
                log::info!(
                    "peer {} sent a new offer during the call: renegotiation is not supported, ignored",
                    call.peer
                );
                Ok(())
            }
            PeerMessage::Candidate {
                mid,
                mline_index,
                candidate,
            } => {
                remote_candidate(
                    call,
                    &self.local_addrs,
                    mid.as_deref(),
                    mline_index,
                    &candidate,
                );
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                let call = self.call.as_mut().expect("checked above");
                if call.remote_description_at.is_some() {
                    for c in std::mem::take(&mut call.early_candidates) {
                        call.rtc.add_remote_candidate(c);
                    }
                }
                self.drain(now);
            }
            Err(e) => {
                log::warn!("call with peer {}: {e}", call.peer);
                self.hang_up(EndReason::Failed(e), now);
            }
        }
    }

    /// Hangs up: tells the peer (`BYE`) and ends the call.
    pub fn hang_up(&mut self, reason: EndReason, now: Instant) {
        if let Some(peer) = self.peer() {
            self.signal(peer, PeerMessage::Bye);
            self.end_call(reason, now);
        }
    }

    /// Ends the call without telling the peer (it told us, or it is gone).
    pub fn end_call(&mut self, reason: EndReason, _now: Instant) {
        if let Some(mut call) = self.call.take() {
            call.rtc.disconnect();
            log::info!("call with peer {} ended: {reason}", call.peer);
            self.out.push_back(CallOutput::CallEnded {
                peer: call.peer,
                reason,
                stats: call.stats,
            });
        }
    }

    /// A datagram that arrived on the local socket `destination`.
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Ok(contents) = bytes.try_into() else {
            log::trace!("ignoring a datagram str0m does not recognise from {source}");
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if !call.rtc.accepts(&input) {
            log::trace!("datagram from {source} is not for this call");
            return;
        }
        if call.connected {
            call.last_packet_at = Some(now);
            call.stats.silent_for = None;
            if std::mem::take(&mut call.silent) {
                log::info!("call with peer {}: packets again", call.peer);
                self.out
                    .push_back(CallOutput::PeerResumed { peer: call.peer });
            }
        }
        call.stats.bytes_received += bytes.len() as u64;
        if let Err(e) = call.rtc.handle_input(input) {
            let e = CallError::Transport(excerpt(&e.to_string(), REASON_EXCERPT));
            return self.hang_up(EndReason::Failed(e), now);
        }
        self.drain(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let call = self.call.as_ref()?;
        let silent_at = call
            .last_packet_at
            .filter(|_| call.connected && !call.silent)
            .map(|t| t + SILENT_AFTER);
        crate::reactor::earliest([call.next_timeout, Some(call.deadline().0), silent_at])
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let (deadline, reason) = call.deadline();
        if now >= deadline {
            return self.hang_up(reason, now);
        }
        if let Some(last) = call.last_packet_at.filter(|_| call.connected) {
            let silent = now.saturating_duration_since(last);
            if silent >= SILENT_AFTER {
                call.stats.silent_for = Some(silent);
                if !call.silent {
                    call.silent = true;
                    log::warn!(
                        "call with peer {}: no packets for {} ms",
                        call.peer,
                        silent.as_millis()
                    );
                    self.out.push_back(CallOutput::PeerSilent {
                        peer: call.peer,
                        silent,
                    });
                }
            }
        }
        let call = self.call.as_mut().expect("checked above");
        if call.next_timeout.is_some_and(|t| t <= now) {
            if let Err(e) = call.rtc.handle_input(Input::Timeout(now)) {
                let e = CallError::Transport(excerpt(&e.to_string(), REASON_EXCERPT));
                return self.hang_up(EndReason::Failed(e), now);
            }
            self.drain(now);
        }
    }

    /// Sends an encoded frame (Annex-B) captured at `capture_us` on the stamp clock.
    /// Returns false when it was not sent (not connected, or the peer is silent).
    pub fn send_video(&mut self, data: Vec<u8>, capture_us: u64, now: Instant) -> bool {
        let Some(call) = self.call.as_mut() else {
            return false;
        };
        let Some(mid) = call.mid.filter(|_| call.connected && !call.silent) else {
            return false;
        };
        let Some(writer) = call.rtc.writer(mid) else {
            return false;
        };
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::H264)
            .map(|p| p.pt());
        let Some(pt) = pt else {
            log::warn!("the peer accepted no H.264: nothing to send");
            return false;
        };
        let rtp_time = MediaTime::from_90khz(capture_us.wrapping_mul(9) / 100);
        let len = data.len();
        if let Err(e) = writer.write(pt, now, rtp_time, data) {
            log::warn!("cannot send a frame: {e}");
            return false;
        }
        call.stats.frames_sent += 1;
        call.stats.bytes_sent += len as u64;
        self.drain(now);
        true
    }

    /// Asks the peer for a keyframe (our decoder lost the stream).
    pub fn request_keyframe(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if let Some(mut w) = call.mid.and_then(|m| call.rtc.writer(m)) {
            let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
        }
        self.drain(now);
    }

    /// Polls str0m until it only has a timeout left, acting on its events.
    fn drain(&mut self, now: Instant) {
        loop {
            let Some(call) = self.call.as_mut() else {
                return;
            };
            let output = match call.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    let e = CallError::Transport(excerpt(&e.to_string(), REASON_EXCERPT));
                    return self.hang_up(EndReason::Failed(e), now);
                }
            };
            match output {
                Output::Timeout(t) => {
                    call.next_timeout = Some(t);
                    return;
                }
                Output::Transmit(t) => self.out.push_back(CallOutput::Transmit {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Output::Event(e) => {
                    if let Some(reason) = handle_event(call, e, now, &mut self.out) {
                        return self.hang_up(reason, now);
                    }
                }
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }
}

fn accept_answer(call: &mut Call, sdp: &str, now: Instant) -> Result<(), CallError> {
    let Some(pending) = call.pending_offer.take() else {
        log::info!("peer {}: ignoring an answer to no offer", call.peer);
        return Ok(());
    };
    let sdp = cap_candidates(sdp);
    let answer = SdpAnswer::from_sdp_string(&sdp).map_err(|e| CallError::BadSdp {
        kind: SdpKind::Answer,
        detail: excerpt(&e.to_string(), REASON_EXCERPT),
    })?;
    call.rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| CallError::SdpRejected {
            kind: SdpKind::Answer,
            detail: excerpt(&e.to_string(), REASON_EXCERPT),
        })?;
    call.remote_description_at = Some(now);
    call.remote_candidates += count_candidates(&sdp);
    Ok(())
}

fn remote_candidate(
    call: &mut Call,
    local_addrs: &[SocketAddr],
    mid: Option<&str>,
    mline_index: Option<u32>,
    text: &str,
) {
    let text = text.trim();
    if text.is_empty() {
        return; // end of candidates
    }
    if call.remote_candidates >= MAX_REMOTE_CANDIDATES {
        call.stats.candidates_dropped += 1;
        if call.stats.candidates_dropped == 1 {
            log::warn!(
                "peer {} sent more than {MAX_REMOTE_CANDIDATES} candidates: dropping the rest",
                call.peer
            );
        }
        return;
    }
    let ours = call.mid.map(|m| m.to_string());
    let known_mid = match (mid, &ours) {
        (Some(m), Some(o)) => m == o,
        _ => true,
    };
    if !known_mid && mline_index != Some(0) {
        log::info!(
            "ignoring a candidate for unknown mid {:?}",
            mid.map(|m| excerpt(m, 20))
        );
        return;
    }
    let candidate = match Candidate::from_sdp_string(text.strip_prefix("a=").unwrap_or(text)) {
        Ok(c) => c,
        Err(e) => {
            log::info!(
                "ignoring a candidate str0m cannot use ({})",
                excerpt(&e.to_string(), 80)
            );
            return;
        }
    };
    if candidate.proto() != Protocol::Udp {
        log::debug!("ignoring a non-UDP candidate: {}", excerpt(text, 80));
        return;
    }
    let loopback_only = local_addrs.iter().all(|a| a.ip().is_loopback());
    if loopback_only && !candidate.addr().ip().is_loopback() {
        // Unreachable from loopback sockets; checking it would only send datagrams
        // toward another interface.
        log::debug!(
            "ignoring non-loopback candidate {} (loopback-only host candidates)",
            candidate.addr()
        );
        return;
    }
    log::debug!("remote candidate {}", candidate.addr());
    call.remote_candidates += 1;
    if call.remote_description_at.is_some() {
        call.rtc.add_remote_candidate(candidate);
    } else {
        call.early_candidates.push(candidate);
    }
}

/// The offer as str0m will see it: checked for a video codec we can use, and cut to
/// [`MAX_REMOTE_CANDIDATES`] candidates, so a hostile offer costs little to parse.
pub fn prepare_offer(sdp: &str) -> Result<String, CallError> {
    check_codecs(sdp)?;
    let capped = cap_candidates(sdp);
    let lines = capped.lines().count();
    if lines > MAX_SDP_LINES {
        return Err(CallError::OfferTooLarge { lines });
    }
    Ok(capped)
}

/// An offer must have a video section offering H.264; else the error names what it had.
pub fn check_codecs(sdp: &str) -> Result<(), CallError> {
    let mut offered: Vec<String> = Vec::new();
    let mut in_video = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ");
            if !in_video {
                let kind = m.split(' ').next().unwrap_or("");
                let name = format!("{} (not video)", excerpt(kind, 16));
                if !offered.contains(&name) {
                    offered.push(name);
                }
            }
        } else if let Some(map) = line.strip_prefix("a=rtpmap:").filter(|_| in_video) {
            let codec = map
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.split('/').next())
                .unwrap_or("");
            if codec.eq_ignore_ascii_case("H264") {
                return Ok(());
            }
            let codec = excerpt(&codec.to_ascii_uppercase(), 16);
            if !["RTX", "RED", "ULPFEC", "FLEXFEC-03"].contains(&codec.as_str())
                && !offered.contains(&codec)
                && offered.len() < 8
            {
                offered.push(codec);
            }
        }
    }
    Err(CallError::NoUsableCodec { offered })
}

/// Keeps at most [`MAX_REMOTE_CANDIDATES`] `a=candidate` lines.
fn cap_candidates(sdp: &str) -> String {
    let mut kept = 0;
    let mut dropped = 0usize;
    let mut out = String::with_capacity(sdp.len().min(64 * 1024));
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("a=candidate") {
            if kept >= MAX_REMOTE_CANDIDATES {
                dropped += 1;
                continue;
            }
            kept += 1;
        }
        out.push_str(line);
    }
    if dropped > 0 {
        log::warn!(
            "a session description had {} candidates: kept {MAX_REMOTE_CANDIDATES}",
            kept + dropped
        );
    }
    out
}

fn count_candidates(sdp: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with("a=candidate")).count()
}

fn send_candidates(call: &mut Call, out: &mut VecDeque<CallOutput>) {
    let Some(mid) = call.mid else {
        return;
    };
    call.candidates_sent = true;
    for c in &call.local_candidates {
        out.push_back(CallOutput::Signal {
            to: call.peer,
            body: PeerMessage::Candidate {
                mid: Some(mid.to_string()),
                mline_index: Some(0),
                candidate: c.to_sdp_string(),
            }
            .to_body(),
        });
    }
}

/// Acts on one str0m event; returns a reason when the call must end.
fn handle_event(
    call: &mut Call,
    event: Event,
    now: Instant,
    out: &mut VecDeque<CallOutput>,
) -> Option<EndReason> {
    match event {
        Event::Connected => {
            call.connected = true;
            call.last_packet_at = Some(now);
            let t = now - call.started;
            call.stats.connect_time = Some(t);
            log::info!(
                "call with peer {}: connected after {} ms",
                call.peer,
                t.as_millis()
            );
            out.push_back(CallOutput::Connected { peer: call.peer });
        }
        Event::IceConnectionStateChange(state) => {
            log::info!("call with peer {}: ICE {state:?}", call.peer);
            if state == IceConnectionState::Disconnected {
                return Some(EndReason::IceDisconnected);
            }
        }
        Event::MediaAdded(m) if m.kind == MediaKind::Video && call.mid.is_none() => {
            log::info!(
                "call with peer {}: video {:?} {:?}",
                call.peer,
                m.mid,
                m.direction
            );
            call.mid = Some(m.mid);
            if !call.candidates_sent && call.remote_description_at.is_some() {
                send_candidates(call, out);
            }
        }
        Event::MediaData(data) => out.push_back(CallOutput::MediaData(data.data)),
        Event::KeyframeRequest(req) => {
            log::debug!(
                "call with peer {}: keyframe requested ({:?})",
                call.peer,
                req.kind
            );
            out.push_back(CallOutput::KeyframeRequested);
        }
        Event::EgressBitrateEstimate(
            BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
        ) => out.push_back(CallOutput::BandwidthEstimate(estimate.as_u64())),
        Event::PeerStats(s) if s.rtt.is_some() => call.stats.rtt = s.rtt,
        Event::MediaEgressStats(s) if s.rtt.is_some() => call.stats.rtt = s.rtt,
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::media_session::MediaSession;
    use crate::media::TestPattern;

    const MEDIA: MediaConfig = MediaConfig {
        width: 320,
        height: 240,
        fps: 30.0,
        bitrate_bps: 300_000,
    };

    fn conductor(port: u16) -> Conductor {
        Conductor::new(MEDIA, vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    /// One side of a call in the test: its conductor and media, as the loop ties them.
    struct Side {
        c: Conductor,
        media: Option<MediaSession>,
        ended: Vec<EndReason>,
        started: usize,
    }

    impl Side {
        fn new(port: u16) -> Side {
            Side {
                c: conductor(port),
                media: None,
                ended: Vec::new(),
                started: 0,
            }
        }
    }

    /// Moves every output of `from` (peer id `from_id`) to `to`, as the loop and the app
    /// would (admitting offers and messages); returns frames decoded by `from`.
    fn pump(from: &mut Side, from_id: PeerId, to: &mut Side, now: Instant) -> usize {
        let mut decoded = 0;
        while let Some(out) = from.c.poll_output() {
            match out {
                CallOutput::Signal { body, .. } => match PeerMessage::parse(&body).unwrap() {
                    PeerMessage::Sdp {
                        kind: SdpKind::Offer,
                        sdp,
                    } if to.c.is_idle() => to.c.accept_offer(from_id, &sdp, now).unwrap(),
                    msg => to.c.handle_message(msg, now),
                },
                CallOutput::Transmit {
                    source,
                    destination,
                    contents,
                } => to.c.handle_datagram(source, destination, &contents, now),
                CallOutput::MediaData(data) => {
                    let m = from.media.as_mut().unwrap();
                    decoded += m.decode(&data, now, 0).frame.is_some() as usize;
                }
                CallOutput::CallStarted { .. } => {
                    from.started += 1;
                    from.media = Some(MediaSession::new(MEDIA, now).unwrap());
                }
                CallOutput::Connected { .. } => from.media.as_mut().unwrap().connected(),
                CallOutput::KeyframeRequested => from.media.as_mut().unwrap().keyframe_requested(),
                CallOutput::CallEnded { reason, .. } => from.ended.push(reason),
                _ => {}
            }
        }
        decoded
    }

    fn send(side: &mut Side, p: &mut TestPattern, frame: u32, us: u64, now: Instant) {
        let Some(m) = side.media.as_mut() else {
            return;
        };
        if side.c.is_sending() {
            if let Ok(Some(enc)) = m.encode(&p.frame(frame, us)) {
                side.c.send_video(enc.data, us, now);
            }
        }
    }

    /// Runs both sides on a virtual clock until `until` or `done`; frames decoded each way.
    fn run(
        a: &mut Side,
        b: &mut Side,
        t0: Instant,
        now: &mut Instant,
        until: Duration,
        mut done: impl FnMut(usize, usize) -> bool,
    ) -> (usize, usize) {
        let (mut pa, mut pb) = (TestPattern::new(320, 240), TestPattern::new(320, 240));
        let (mut da, mut db) = (0, 0);
        let mut next_frame = *now;
        let mut frame = 0;
        while *now < t0 + until && !done(da, db) {
            da += pump(a, 1, b, *now);
            db += pump(b, 2, a, *now);
            if *now >= next_frame {
                let us = (*now - t0).as_micros() as u64;
                send(a, &mut pa, frame, us, *now);
                send(b, &mut pb, frame, us, *now);
                frame += 1;
                next_frame = *now + Duration::from_millis(33);
            }
            let next = [a.c.poll_timeout(), b.c.poll_timeout(), Some(next_frame)]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            *now = next.max(*now + Duration::from_millis(1));
            a.c.handle_timeout(*now);
            b.c.handle_timeout(*now);
        }
        (da, db)
    }

    /// Two conductors in one process on a virtual clock, str0m-style: offer, answer,
    /// candidates, ICE, DTLS and H.264 both ways, with no sockets and no sleeps.
    #[test]
    fn two_conductors_call_each_other_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, now).unwrap();
        let (da, db) = run(
            &mut a,
            &mut b,
            t0,
            &mut now,
            Duration::from_secs(10),
            |a, b| a >= 30 && b >= 30,
        );
        assert!(a.c.is_sending() && b.c.is_sending());
        assert!(da >= 30 && db >= 30, "decoded {da}/{db}");
        assert_eq!(a.media.as_ref().unwrap().stats().decode_errors, 0);
        assert_eq!((a.started, b.started), (1, 1));
        // Hanging up sends BYE; the other side ends its call too.
        a.c.hang_up(EndReason::Local("test".into()), now);
        assert!(a.c.is_idle());
        pump(&mut a, 1, &mut b, now);
        pump(&mut b, 2, &mut a, now);
        assert!(b.c.is_idle());
        assert_eq!(b.ended, vec![EndReason::PeerHungUp]);
    }

    /// A peer that goes quiet is shown silent after SILENT_AFTER (sending pauses), comes
    /// back if packets resume, and the call ends DEAD_AFTER the last packet otherwise.
    #[test]
    fn a_silent_peer_pauses_sending_and_a_dead_one_ends_the_call() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, now).unwrap();
        run(
            &mut a,
            &mut b,
            t0,
            &mut now,
            Duration::from_secs(10),
            |a, b| a >= 10 && b >= 10,
        );
        // B vanishes: A hears nothing from now on.
        let last = a.c.call.as_ref().unwrap().last_packet_at.unwrap();
        let mut silent_at = None;
        while a.c.peer().is_some() && now < last + Duration::from_secs(20) {
            now =
                a.c.poll_timeout()
                    .unwrap()
                    .max(now + Duration::from_millis(1));
            a.c.handle_timeout(now);
            while let Some(out) = a.c.poll_output() {
                match out {
                    CallOutput::PeerSilent { .. } => silent_at = Some(now),
                    CallOutput::CallEnded { reason, .. } => a.ended.push(reason),
                    _ => {}
                }
            }
            if silent_at.is_some() && a.c.peer().is_some() {
                assert!(!a.c.is_sending(), "no video to a silent peer");
            }
        }
        let silent_at = silent_at.expect("the peer was reported silent");
        assert!(
            silent_at - last >= SILENT_AFTER
                && silent_at - last < SILENT_AFTER + Duration::from_millis(200)
        );
        assert_eq!(a.ended, vec![EndReason::NoPackets(DEAD_AFTER)]);
        assert!(now - last >= DEAD_AFTER && now - last < DEAD_AFTER + Duration::from_millis(200));

        // Again, but B comes back before the end: the call carries on.
        let t1 = now;
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, now).unwrap();
        run(
            &mut a,
            &mut b,
            t1,
            &mut now,
            Duration::from_secs(10),
            |a, b| a >= 10 && b >= 10,
        );
        let last = now;
        let mut resumed = false;
        while now < last + SILENT_AFTER + Duration::from_secs(1) {
            now =
                a.c.poll_timeout()
                    .unwrap()
                    .max(now + Duration::from_millis(1));
            a.c.handle_timeout(now);
            while a.c.poll_output().is_some() {}
        }
        assert!(!a.c.is_sending());
        b.c.handle_timeout(now);
        let t2 = now;
        run(
            &mut a,
            &mut b,
            t2,
            &mut now,
            Duration::from_secs(3),
            |_, _| false,
        );
        while let Some(out) = a.c.poll_output() {
            resumed |= matches!(out, CallOutput::PeerResumed { .. });
        }
        assert!(a.c.is_sending(), "sending resumes with the peer's packets");
        assert!(a.ended.is_empty() && a.c.peer() == Some(2));
        let _ = resumed;
    }

    /// Glare: both offer; the polite side (told by the app) answers the other's offer,
    /// replacing its own call silently, and one call carries video both ways.
    #[test]
    fn glare_the_polite_side_answers_and_one_call_survives() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, now).unwrap();
        b.c.call(1, now).unwrap();
        // B (id 2, the higher) yields: it answers A's offer; A ignores B's offer.
        let mut to_b = Vec::new();
        while let Some(out) = a.c.poll_output() {
            if let CallOutput::Signal { body, .. } = out {
                to_b.push(PeerMessage::parse(&body).unwrap());
            }
        }
        while let Some(out) = b.c.poll_output() {
            if let CallOutput::Signal { body, .. } = out {
                if let PeerMessage::Candidate { .. } = PeerMessage::parse(&body).unwrap() {
                    a.c.handle_message(PeerMessage::parse(&body).unwrap(), now);
                }
            }
        }
        b.started = 1;
        a.started = 1;
        for msg in to_b {
            match msg {
                PeerMessage::Sdp { sdp, .. } => b.c.accept_offer(1, &sdp, now).unwrap(),
                m => b.c.handle_message(m, now),
            }
        }
        b.media = Some(MediaSession::new(MEDIA, now).unwrap());
        a.media = Some(MediaSession::new(MEDIA, now).unwrap());
        let (da, db) = run(
            &mut a,
            &mut b,
            t0,
            &mut now,
            Duration::from_secs(10),
            |a, b| a >= 30 && b >= 30,
        );
        assert!(da >= 30 && db >= 30, "decoded {da}/{db}");
        assert_eq!((a.started, b.started), (1, 1), "no second CALL_STARTED");
        assert!(a.ended.is_empty() && b.ended.is_empty());
    }

    #[test]
    fn bye_before_the_answer_is_busy_or_declined() {
        let now = Instant::now();
        let mut c = conductor(1000);
        c.call(7, now).unwrap();
        c.handle_message(PeerMessage::Bye, now);
        let ended: Vec<_> = std::iter::from_fn(|| c.poll_output())
            .filter_map(|o| match o {
                CallOutput::CallEnded { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(ended, vec![EndReason::BusyOrDeclined]);
        assert!(ended[0].to_string().contains("busy or declined"));
    }

    #[test]
    fn a_bad_offer_is_a_typed_one_line_error() {
        let now = Instant::now();
        let mut c = conductor(1000);
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\ngarbage\r\n";
        match c.accept_offer(7, sdp, now) {
            Err(CallError::BadSdp { kind, detail }) => {
                assert_eq!(kind, SdpKind::Offer);
                assert!(
                    !detail.contains('\n') && detail.len() <= REASON_EXCERPT + 3,
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(c.is_idle());
    }

    #[test]
    fn offers_without_h264_video_name_their_codecs() {
        let vp8 = "v=0\r\nm=audio 9 RTP 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 RTP 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n";
        let e = check_codecs(vp8).unwrap_err();
        assert_eq!(
            e,
            CallError::NoUsableCodec {
                offered: vec!["audio (not video)".into(), "VP8".into()]
            }
        );
        assert!(e.to_string().contains("VP8"), "{e}");
        let audio = "v=0\r\nm=audio 9 RTP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(check_codecs(audio)
            .unwrap_err()
            .to_string()
            .contains("audio"));
        let h264 = "m=video 9 RTP 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n";
        assert!(check_codecs(h264).is_ok());
    }

    /// A 10,000-candidate offer is cut to the cap before str0m sees it, and trickled
    /// candidates past the cap are dropped: the work per message stays bounded.
    #[test]
    fn remote_candidates_are_capped() {
        let now = Instant::now();
        let mut offerer = conductor(3000);
        offerer.call(1, now).unwrap();
        let offer = std::iter::from_fn(|| offerer.poll_output())
            .find_map(|o| match o {
                CallOutput::Signal { body, .. } => match PeerMessage::parse(&body) {
                    Ok(PeerMessage::Sdp { sdp, .. }) => Some(sdp),
                    _ => None,
                },
                _ => None,
            })
            .unwrap();
        let mut huge = offer.trim_end().to_string();
        for i in 0..10_000u32 {
            huge.push_str(&format!(
                "\r\na=candidate:{i} 1 udp 2130706431 127.0.0.1 {} typ host",
                10_000 + i % 50_000
            ));
        }
        huge.push_str("\r\n");
        let prepared = prepare_offer(&huge).unwrap();
        assert_eq!(count_candidates(&prepared), MAX_REMOTE_CANDIDATES);
        let mut c = conductor(1000);
        c.accept_offer(2, &huge, now).unwrap();
        for i in 0..100u16 {
            let cand = format!(
                "candidate:9 1 udp 2130706431 127.0.0.1 {} typ host",
                20_000 + i
            );
            c.handle_message(
                PeerMessage::Candidate {
                    mid: None,
                    mline_index: Some(0),
                    candidate: cand,
                },
                now,
            );
        }
        let call = c.call.as_ref().unwrap();
        assert!(call.remote_candidates <= MAX_REMOTE_CANDIDATES);
        assert_eq!(call.stats.candidates_dropped, 100);
    }

    #[test]
    fn odd_candidates_are_ignored() {
        let now = Instant::now();
        let mut c = conductor(1000);
        c.call(2, now).unwrap();
        for cand in [
            r#"{"sdpMid":"7","sdpMLineIndex":3,"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}"#,
            r#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active"}"#,
            r#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 1 abc.local 9 typ host"}"#,
            r#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":""}"#,
            r#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":"garbage"}"#,
            r#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 1 10.1.2.3 9 typ host"}"#,
            // The one usable candidate: kept until the answer arrives.
            r#"{"sdpMid":"0","sdpMLineIndex":0,"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"}"#,
        ] {
            c.handle_message(PeerMessage::parse(cand.as_bytes()).unwrap(), now);
        }
        assert_eq!(c.peer(), Some(2));
        let early = c.call.as_ref().unwrap().early_candidates.len();
        assert_eq!(early, 1, "only the usable candidate was kept");
    }

    #[test]
    fn a_call_not_answered_is_given_up() {
        let t0 = Instant::now();
        let mut c = conductor(1000);
        c.call(2, t0).unwrap();
        let mut now = t0;
        while !c.is_idle() {
            now = c
                .poll_timeout()
                .unwrap()
                .max(now + Duration::from_millis(1));
            c.handle_timeout(now);
        }
        assert_eq!(now - t0, ANSWER_TIMEOUT);
        let reasons: Vec<_> = std::iter::from_fn(|| c.poll_output())
            .filter_map(|o| match o {
                CallOutput::CallEnded { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, vec![EndReason::NoAnswer]);
    }
}
