//! One call's transport (after the original's `Conductor`): a str0m `Rtc` per call,
//! offer/answer and trickle ICE as JSON, `BYE`, the time-outs that give a call up, and the
//! dead-peer rule. The media (codecs, keyframe policy) is the
//! [`MediaSession`](super::media_session::MediaSession)'s; encoded frames go in and out
//! here. Which messages may start or join a call is the
//! [`ClientApp`](super::client_app::ClientApp)'s decision: the conductor is handed only
//! what the app admitted. No sockets and no clock: datagrams come in with their addresses,
//! go out as [`CallOutput::Transmit`], and every instant is an argument.
//!
//! The data channel: every call we offer negotiates one reliable, ordered data channel
//! labelled [`CHAT_LABEL`] (`chat`) in its first offer, beside the video, so it needs no
//! renegotiation; the callee gets it from the offer. Its messages:
//! - a *string* message is chat text (UTF-8, at most [`MAX_CHANNEL_MESSAGE`] bytes);
//! - a *binary* message is a control message, a JSON object with a `type`. The only one
//!   today is [`CHANNEL_BYE`], the bytes `{"type":"bye"}`: the peer hung up. It is sent
//!   before the signaled `BYE` whenever we hang up with the channel open (and instead of
//!   it while the signaling server is away), and its datagrams are handed out before the
//!   `Rtc` goes, so a hang-up reaches the peer without the server. A peer receiving it
//!   ends the call as on a signaled `BYE`. Binary messages of other types are ignored.
//!   Because chat text always travels as string messages, no typed line can hang up.
//!
//! File transfers each get a channel labelled [`FILE_LABEL`], opened in-band once `chat`
//! is open (no new offer: see [`file_transfer`](super::file_transfer) for why); their
//! messages go out as [`CallOutput::FileChannelData`] for the files driver. str0m's send
//! buffer is shared by all channels, so it is sized ([`SCTP_SEND_BUFFER`]) to hold the
//! files' windows and still take chat and the bye; a chat line it does not take waits in
//! a small queue ([`MAX_QUEUED_CHAT`]) and goes as the buffer drains.
//!
//! Received messages over [`MAX_CHANNEL_MESSAGE`] are dropped with one warning each (str0m
//! itself takes no message over its 256 KiB maximum), so nothing buffers without bound.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelData, ChannelId};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Pt, Writer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, CandidateKind, Event, IceConnectionState, Input, Output, Rtc};

use super::audio_session::AudioPacket;
use super::file_transfer::{FILE_LABEL, SCTP_SEND_BUFFER};
use super::media_session::{BweBitrates, MediaConfig, MIN_BITRATE_BPS, START_BITRATE_BPS};
use super::nat::pair_label;
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
/// How often str0m reports its stats, which carry its raw bandwidth estimate and the TWCC
/// loss the media session reacts to (and the round trip).
const BWE_REPORT_INTERVAL: Duration = Duration::from_millis(250);
/// Remote candidates one call keeps, from the offer and trickled together. A browser
/// offers a few per interface and kind (host, server-reflexive, relay; IPv4 and IPv6):
/// well under this. Every candidate kept is paired with each local one and checked, so
/// the cap bounds the work a hostile peer can make us do.
pub const MAX_REMOTE_CANDIDATES: usize = 40;
/// Lines an offer may have once its candidates are capped (a real one has about 100).
const MAX_SDP_LINES: usize = 2_000;
/// How much of a parser's error or a peer's text a reason quotes.
const REASON_EXCERPT: usize = 160;
/// The label of the data channel each call negotiates in its first offer.
pub const CHAT_LABEL: &str = "chat";
/// The control message (sent binary) that says "I hung up".
pub const CHANNEL_BYE: &[u8] = br#"{"type":"bye"}"#;
/// The largest message sent or accepted on the data channel.
pub const MAX_CHANNEL_MESSAGE: usize = 64 * 1024;
/// Chat bytes held while the send buffer is full; past this a line is refused.
pub const MAX_QUEUED_CHAT: usize = 64 * 1024;

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
    /// When the video frame handed out next was captured, on the sender's wall clock
    /// (known once a sender report came), for lip-sync.
    VideoSenderClock(SystemTime),
    /// A received Opus packet.
    AudioData(AudioPacket),
    /// The peer asked for a keyframe.
    KeyframeRequested,
    /// str0m's send-side bandwidth estimate, in bit/s, and the TWCC loss of the last
    /// second (a fraction) when known.
    BandwidthEstimate {
        bps: u64,
        loss: Option<f32>,
    },
    /// The connected peer has sent nothing for `silent`; video sending is paused.
    PeerSilent {
        peer: PeerId,
        silent: Duration,
    },
    /// Packets from a silent peer again: sending resumes.
    PeerResumed {
        peer: PeerId,
    },
    /// The `chat` data channel is open: chat can be sent.
    ChannelOpen {
        peer: PeerId,
    },
    /// The peer closed the `chat` data channel (the call goes on).
    ChannelClosed {
        peer: PeerId,
    },
    /// Chat text from the peer (at most [`MAX_CHANNEL_MESSAGE`] bytes; invalid UTF-8
    /// replaced).
    ChatReceived {
        peer: PeerId,
        text: String,
    },
    /// A file channel ([`FILE_LABEL`]) opened: one we opened, or the peer's.
    FileChannelOpen(ChannelId),
    /// A message on a file channel.
    FileChannelData(ChannelData),
    /// A file channel's send buffer drained below its threshold: more can be written.
    FileChannelWritable(ChannelId),
    FileChannelClosed(ChannelId),
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
    /// Data channel messages dropped for their size ([`MAX_CHANNEL_MESSAGE`]).
    pub channel_messages_dropped: u64,
    /// Since the last packet from the peer, when it passed [`SILENT_AFTER`].
    pub silent_for: Option<Duration>,
    /// The pair carrying the call as `LOCAL/REMOTE` candidate types (`host/srflx`).
    pub pair: Option<String>,
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
    /// The audio m-line (Opus), beside the video.
    audio_mid: Option<Mid>,
    /// The `chat` data channel: its id once known (ours from the offer, or the peer's
    /// when it opens), and whether it is open.
    chat: Option<ChannelId>,
    chat_open: bool,
    /// Chat messages the full send buffer did not take yet (bounded by
    /// [`MAX_QUEUED_CHAT`] bytes), sent as it drains.
    chat_queue: VecDeque<String>,
    /// The file channels open now.
    file_channels: Vec<ChannelId>,
    pending_offer: Option<SdpPendingOffer>,
    remote_description_at: Option<Instant>,
    /// Remote candidates that came before the description they belong to.
    early_candidates: Vec<Candidate>,
    remote_candidates: usize,
    /// The peer's candidates (from its description and trickled), to name the pair.
    remote_seen: Vec<Candidate>,
    local_candidates: Vec<Candidate>,
    candidates_sent: bool,
    started: Instant,
    connected: bool,
    last_packet_at: Option<Instant>,
    silent: bool,
    /// We made the first offer: on a dead pair we send the restart offer (the callee
    /// waits for it, so the two never restart at once).
    caller: bool,
    /// An ICE restart is under way since then (one per silence).
    restart_at: Option<Instant>,
    /// The addresses of the pair last logged.
    pair_addrs: Option<(SocketAddr, SocketAddr)>,
    /// Our addresses changed while an offer of ours was pending: restart once it is
    /// answered (two offers at once would void the first).
    restart_again: bool,
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
    /// Offer the host sockets as candidates (not under `--ice-policy relay`).
    offer_host: bool,
    /// Server-reflexive and relayed candidates found so far (see [`Conductor::add_local_candidate`]).
    gathered: Vec<Candidate>,
    call: Option<Call>,
    out: VecDeque<CallOutput>,
}

impl Conductor {
    /// `local_addrs` are the bound UDP sockets, each offered as a host candidate.
    pub fn new(media: MediaConfig, local_addrs: Vec<SocketAddr>) -> Conductor {
        Conductor {
            media,
            local_addrs,
            offer_host: true,
            gathered: Vec::new(),
            call: None,
            out: VecDeque::new(),
        }
    }

    /// Under `--ice-policy relay`: the host sockets are not offered, only relayed
    /// candidates.
    pub fn set_relay_only(&mut self) {
        self.offer_host = false;
    }

    /// A candidate found after start (server-reflexive or relayed): offered in every call
    /// from now on, and added to the current call and trickled to its peer at once.
    pub fn add_local_candidate(&mut self, candidate: Candidate, now: Instant) {
        self.gathered.push(candidate.clone());
        self.offer_candidate(candidate, now);
    }

    /// A new host socket (the machine has a new address): offered like the first ones.
    pub fn add_host(&mut self, addr: SocketAddr, now: Instant) {
        if self.local_addrs.contains(&addr) {
            return;
        }
        self.local_addrs.push(addr);
        if !self.offer_host {
            return;
        }
        match Candidate::host(addr, "udp") {
            Ok(c) => self.offer_candidate(c, now),
            Err(e) => log::warn!("no host candidate for {addr}: {e}"),
        }
    }

    /// A host socket closed (its address is gone): no longer offered, and its candidate
    /// is dropped from the current call (with the pairs using it).
    pub fn remove_host(&mut self, addr: SocketAddr) {
        self.local_addrs.retain(|a| *a != addr);
        if let Ok(c) = Candidate::host(addr, "udp") {
            self.invalidate(&c);
        }
    }

    /// A candidate the gatherer withdrew (its socket closed or its allocation failed).
    pub fn remove_local_candidate(&mut self, candidate: &Candidate) {
        self.gathered.retain(|c| !same_candidate(c, candidate));
        self.invalidate(candidate);
    }

    fn invalidate(&mut self, candidate: &Candidate) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.local_candidates
            .retain(|c| !same_candidate(c, candidate));
        if call.rtc.direct_api().invalidate_candidate(candidate) {
            log::info!(
                "call with peer {}: local candidate {} dropped",
                call.peer,
                candidate.addr()
            );
        }
    }

    /// Our addresses changed (sockets opened or closed, candidates added and withdrawn):
    /// in a call, the caller restarts ICE at once, so the peer gets new credentials and
    /// every current candidate and both sides check afresh. The callee never offers (no
    /// glare): its new host candidate, trickled, is the caller's cue to restart (see
    /// [`Conductor::handle_message`]); without one (relay only) the caller restarts when
    /// the dead pair falls silent ([`SILENT_AFTER`]). The callee's answer carries its
    /// current candidates.
    pub fn network_changed(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if !call.caller {
            log::info!(
                "call with peer {}: local addresses changed; new candidates trickled, the caller restarts ICE",
                call.peer
            );
            return;
        }
        if call.pending_offer.is_some() {
            log::info!(
                "call with peer {}: local addresses changed; ICE restarts once our offer is answered",
                call.peer
            );
            call.restart_again = true;
            return;
        }
        call.restart_at = None;
        self.restart_ice("local addresses changed", now);
    }

    /// The peer trickled a new host address into the connected call: as the caller, we
    /// restart ICE now rather than wait for the dead pair's silence (or, with our offer
    /// pending, once it is answered).
    fn peer_moved(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.pending_offer.is_some() {
            call.restart_again = true;
            return;
        }
        call.restart_at = None;
        self.restart_ice("the peer has a new address", now);
    }

    /// Adds a local candidate to the current call and trickles it.
    fn offer_candidate(&mut self, candidate: Candidate, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(c) = call.rtc.add_local_candidate(candidate) else {
            return;
        };
        let c = c.clone();
        call.local_candidates.push(c.clone());
        // The answering side may not know its mid yet (str0m names the media later):
        // m-line 0 is enough, every section shares the one bundled transport.
        let trickle = call.candidates_sent || call.remote_description_at.is_some();
        log::debug!("local candidate {} (trickled: {trickle})", c.addr());
        if trickle {
            self.out.push_back(CallOutput::Signal {
                to: call.peer,
                body: PeerMessage::Candidate {
                    mid: call.mid.map(|m| m.to_string()),
                    mline_index: Some(0),
                    candidate: c.to_sdp_string(),
                }
                .to_body(),
            });
        }
        self.drain(now);
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
            .enable_bwe(Some(configured.min(Bitrate::bps(START_BITRATE_BPS))))
            .set_stats_interval(Some(BWE_REPORT_INTERVAL))
            .set_sctp_max_buffered_amount(SCTP_SEND_BUFFER)
            // The default 5 s makes lip-sync wait 10-15 s for its first sender reports.
            .set_rtcp_report_interval_audio(Duration::from_secs(1));
        config.codec_config().add_h264(
            H264_PT.into(),
            Some(H264_RTX_PT.into()),
            true,
            H264_PROFILE_LEVEL_ID,
        );
        config.codec_config().enable_opus(true, false);
        let mut rtc = config.build(now);
        rtc.bwe()
            .set_bitrate(Bitrate::bps(MIN_BITRATE_BPS.into()), configured);
        let mut local_candidates = Vec::new();
        let hosts = self.local_addrs.iter().filter(|_| self.offer_host);
        for addr in hosts {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    if let Some(c) = rtc.add_local_candidate(c) {
                        local_candidates.push(c.clone());
                    }
                }
                Err(e) => log::warn!("no host candidate for {addr}: {e}"),
            }
        }
        for c in &self.gathered {
            if let Some(c) = rtc.add_local_candidate(c.clone()) {
                local_candidates.push(c.clone());
            }
        }
        Call {
            peer,
            rtc,
            mid: None,
            audio_mid: None,
            chat: None,
            chat_open: false,
            chat_queue: VecDeque::new(),
            file_channels: Vec::new(),
            pending_offer: None,
            remote_description_at: None,
            early_candidates: Vec::new(),
            remote_candidates: 0,
            remote_seen: Vec::new(),
            local_candidates,
            candidates_sent: false,
            started: now,
            connected: false,
            last_packet_at: None,
            silent: false,
            caller: false,
            restart_at: None,
            restart_again: false,
            pair_addrs: None,
            next_timeout: Some(now),
            stats: CallStats::default(),
        }
    }

    /// True while the `chat` data channel is open.
    pub fn is_chat_open(&self) -> bool {
        self.call.as_ref().is_some_and(|c| c.chat_open)
    }

    /// Calls `peer`: adds a send-receive video track and the `chat` data channel, and
    /// sends the offer.
    pub fn call(&mut self, peer: PeerId, now: Instant) -> Result<(), CallError> {
        if let Some(c) = &self.call {
            return Err(CallError::AlreadyInCall(c.peer));
        }
        let mut call = self.new_call(peer, now);
        let mut api = call.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let audio_mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let chat = api.add_channel(CHAT_LABEL.into());
        let (offer, pending) = api.apply().ok_or(CallError::NoOffer)?;
        call.mid = Some(mid);
        call.audio_mid = Some(audio_mid);
        call.chat = Some(chat);
        call.pending_offer = Some(pending);
        call.caller = true;
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
        call.remote_seen = crate::client::nat::pair::candidates_in_sdp(&sdp);
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
        log::debug!("call with peer {}: message {msg:?}", call.peer);
        let mut peer_moved = false;
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
                sdp,
            } if call.remote_description_at.is_some() && call.pending_offer.is_none() => {
                // The caller's ICE restart (new credentials); other changes str0m applies
                // as it can.
                accept_reoffer(call, &sdp, now).map(|answer| {
                    self.out.push_back(CallOutput::Signal {
                        to: call.peer,
                        body: answer.to_body(),
                    })
                })
            }
            PeerMessage::Sdp {
                kind: SdpKind::Offer,
                ..
            } => {
                log::info!(
                    "peer {} sent a new offer while ours is pending: ignored",
                    call.peer
                );
                Ok(())
            }
            PeerMessage::Candidate {
                mid,
                mline_index,
                candidate,
            } => {
                let new_host = remote_candidate(
                    call,
                    &self.local_addrs,
                    mid.as_deref(),
                    mline_index,
                    &candidate,
                );
                // A host IP the peer had not shown, trickled into the connected call and
                // not the one media comes from: its addresses changed. It cannot
                // restart ICE itself (only the caller does), so this is the caller's cue.
                // Not during a restart: a browser gathers anew (new ports) for each.
                let pair_ip = call.pair_addrs.map(|(_, remote)| remote.ip());
                peer_moved = new_host.is_some_and(|ip| Some(ip) != pair_ip)
                    && call.caller
                    && call.connected
                    && call.restart_at.is_none();
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
                let again = call.pending_offer.is_none() && std::mem::take(&mut call.restart_again);
                self.drain(now);
                if again {
                    if let Some(call) = self.call.as_mut() {
                        call.restart_at = None;
                    }
                    self.restart_ice("local addresses changed", now);
                } else if peer_moved {
                    self.peer_moved(now);
                }
            }
            Err(e) => {
                log::warn!("call with peer {}: {e}", call.peer);
                self.hang_up(EndReason::Failed(e), now);
            }
        }
    }

    /// Hangs up: tells the peer (the channel's bye, then `BYE` through the server) and
    /// ends the call.
    pub fn hang_up(&mut self, reason: EndReason, now: Instant) {
        if let Some(peer) = self.peer() {
            self.send_channel_bye();
            self.signal(peer, PeerMessage::Bye);
            self.end_call(reason, now);
        }
    }

    /// Hangs up telling the peer over the data channel only: the signaling server is away
    /// (the app owes the signaled `BYE` until the peer is back).
    pub fn hang_up_peer_to_peer(&mut self, reason: EndReason, now: Instant) {
        if self.call.is_some() {
            self.send_channel_bye();
            self.end_call(reason, now);
        }
    }

    /// Writes [`CHANNEL_BYE`] on an open `chat` channel and hands out every datagram str0m
    /// makes of it, before the `Rtc` is dropped. Events meanwhile are ignored: the call is
    /// ending.
    fn send_channel_bye(&mut self) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(id) = call.chat.filter(|_| call.chat_open) else {
            return;
        };
        let written = match call
            .rtc
            .channel(id)
            .map(|mut ch| ch.write(true, CHANNEL_BYE))
        {
            Some(Ok(true)) => true,
            Some(Ok(false)) => {
                log::warn!(
                    "call with peer {}: the data channel is full: no bye on it",
                    call.peer
                );
                false
            }
            Some(Err(e)) => {
                log::warn!(
                    "call with peer {}: cannot send the bye on the data channel: {e}",
                    call.peer
                );
                false
            }
            None => false,
        };
        if !written {
            return;
        }
        loop {
            match call.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.out.push_back(CallOutput::Transmit {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
        log::info!(
            "call with peer {}: sent the bye on the data channel",
            call.peer
        );
    }

    /// Sends chat text on the `chat` channel (queued while the send buffer is full).
    /// False when it was not sent (no open channel, too long, or the queue is full too),
    /// with one log line.
    pub fn send_chat(&mut self, text: &str, now: Instant) -> bool {
        let Some(call) = self.call.as_mut() else {
            return false;
        };
        let Some(id) = call.chat.filter(|_| call.chat_open) else {
            log::warn!(
                "chat: no open data channel with peer {}: not sent",
                call.peer
            );
            return false;
        };
        if text.len() > MAX_CHANNEL_MESSAGE {
            log::warn!(
                "chat: {} bytes is over the {MAX_CHANNEL_MESSAGE}-byte limit: not sent",
                text.len()
            );
            return false;
        }
        if !call.chat_queue.is_empty() {
            return queue_chat(call, text);
        }
        let sent = match call
            .rtc
            .channel(id)
            .map(|mut ch| ch.write(false, text.as_bytes()))
        {
            Some(Ok(true)) => true,
            Some(Ok(false)) => queue_chat(call, text),
            Some(Err(e)) => {
                log::warn!("chat: cannot send: {e}");
                false
            }
            None => {
                log::warn!("chat: the data channel is not open: not sent");
                false
            }
        };
        self.drain(now);
        sent
    }

    /// Opens a file channel ([`FILE_LABEL`]) in-band (DCEP), with no new offer: the
    /// call's SCTP association exists since the first offer's `chat` channel.
    /// [`CallOutput::FileChannelOpen`] follows once the peer has it.
    pub fn open_file_channel(&mut self, now: Instant) -> Option<ChannelId> {
        let call = self.call.as_mut().filter(|c| c.chat_open)?;
        let id = call.rtc.direct_api().create_data_channel(ChannelConfig {
            label: FILE_LABEL.into(),
            ..Default::default()
        });
        self.drain(now);
        Some(id)
    }

    /// Writes a message on an open file channel: Ok(false) when its send buffer is full.
    pub fn write_file_channel(
        &mut self,
        id: ChannelId,
        binary: bool,
        data: &[u8],
        now: Instant,
    ) -> Result<bool, String> {
        let Some(call) = self.call.as_mut().filter(|c| c.file_channels.contains(&id)) else {
            return Err("the file channel is not open".into());
        };
        let written = match call.rtc.channel(id).map(|mut ch| ch.write(binary, data)) {
            Some(Ok(w)) => w,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the file channel is gone".into()),
        };
        if written {
            self.drain(now);
        }
        Ok(written)
    }

    /// Bytes an open file channel holds unsent or unacknowledged (0 when not open).
    pub fn file_channel_buffered(&mut self, id: ChannelId) -> usize {
        self.call
            .as_mut()
            .filter(|c| c.file_channels.contains(&id))
            .and_then(|c| c.rtc.channel(id))
            .map_or(0, |mut ch| ch.buffered_amount())
    }

    /// Asks for [`CallOutput::FileChannelWritable`] when the channel's buffer drains
    /// below `bytes`.
    pub fn set_file_channel_low(&mut self, id: ChannelId, bytes: usize) {
        if let Some(mut ch) = self
            .call
            .as_mut()
            .filter(|c| c.file_channels.contains(&id))
            .and_then(|c| c.rtc.channel(id))
        {
            ch.set_buffered_amount_low_threshold(bytes);
        }
    }

    /// Closes a file channel (the transfer is over).
    pub fn close_file_channel(&mut self, id: ChannelId, now: Instant) {
        let Some(call) = self.call.as_mut().filter(|c| c.file_channels.contains(&id)) else {
            return;
        };
        call.file_channels.retain(|c| *c != id);
        call.rtc.direct_api().close_data_channel(id);
        self.drain(now);
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
                if let Some(t) = call.restart_at.take() {
                    log::info!(
                        "call with peer {}: ICE restart done after {} ms",
                        call.peer,
                        (now - t).as_millis()
                    );
                }
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
                    // The pair may be dead while signaling still works (an address or
                    // a NAT mapping changed): new checks may find another.
                    self.restart_ice("ICE disconnected", now);
                }
            }
        }
        let call = self.call.as_mut().expect("checked above");
        if !call.chat_queue.is_empty() {
            flush_chat(call);
            self.drain(now);
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
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
        let Some((writer, pt)) = media_writer(call, call.mid, Codec::H264) else {
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

    /// Sends an Opus frame: `rtp_ticks` on the 48 kHz clock (960 more each 20 ms frame),
    /// `captured` its capture instant (what the sender reports map the RTP clock to).
    /// False when not sent (not connected, the peer silent, or no Opus agreed).
    pub fn send_audio(
        &mut self,
        data: Vec<u8>,
        rtp_ticks: u64,
        captured: Instant,
        now: Instant,
    ) -> bool {
        let Some(call) = self.call.as_mut() else {
            return false;
        };
        let Some((writer, pt)) = media_writer(call, call.audio_mid, Codec::Opus) else {
            return false;
        };
        let rtp_time = MediaTime::new(rtp_ticks, Frequency::FORTY_EIGHT_KHZ);
        if let Err(e) = writer.write(pt, captured, rtp_time, data) {
            log::debug!("cannot send an audio frame: {e}");
            return false;
        }
        self.drain(now);
        true
    }

    /// What str0m's estimator pads to and tries to discover: raising the desired bitrate
    /// above the estimate asks for a probe.
    pub fn set_bwe_bitrates(&mut self, rates: BweBitrates, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if let Some(bps) = rates.reset_bps {
            call.rtc.bwe().reset(Bitrate::bps(bps));
        }
        call.rtc.bwe().set_bitrate(
            Bitrate::bps(rates.minimum_bps),
            Bitrate::bps(rates.desired_bps),
        );
        self.drain(now);
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
                Output::Event(e) => match handle_event(call, e, now, &mut self.out) {
                    None => {}
                    Some(Verdict::HangUp(reason)) => return self.hang_up(reason, now),
                    Some(Verdict::PeerHungUp) => return self.end_call(EndReason::PeerHungUp, now),
                    Some(Verdict::RestartIce) => self.restart_ice("ICE disconnected", now),
                },
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    /// The connected pair died (the peer fell silent, or str0m's ICE disconnected) while
    /// signaling may still work: the caller offers new ICE credentials (keeping its
    /// candidates), the callee waits for that offer. Media resumes on the pair the new
    /// checks find; the dead-peer rule ([`DEAD_AFTER`]) still ends a call that does not.
    fn restart_ice(&mut self, why: &str, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.restart_at.is_some() {
            return;
        }
        call.restart_at = Some(now);
        if !call.caller || call.pending_offer.is_some() {
            log::info!(
                "call with peer {}: {why}, waiting for the caller's restart",
                call.peer
            );
            return;
        }
        let mut api = call.rtc.sdp_api();
        api.ice_restart(true);
        let Some((offer, pending)) = api.apply() else {
            return self.hang_up(EndReason::IceDisconnected, now);
        };
        call.pending_offer = Some(pending);
        call.remote_candidates = 0;
        log::info!("call with peer {}: {why}, restarting ICE", call.peer);
        let peer = call.peer;
        self.signal(
            peer,
            PeerMessage::Sdp {
                kind: SdpKind::Offer,
                sdp: offer.to_sdp_string(),
            },
        );
    }
}

/// A new offer from the peer inside a call (its ICE restart): applied, and our answer.
fn accept_reoffer(call: &mut Call, sdp: &str, now: Instant) -> Result<PeerMessage, CallError> {
    let sdp = prepare_offer(sdp)?;
    let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| CallError::BadSdp {
        kind: SdpKind::Offer,
        detail: excerpt(&e.to_string(), REASON_EXCERPT),
    })?;
    let answer = call
        .rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| CallError::SdpRejected {
            kind: SdpKind::Offer,
            detail: excerpt(&e.to_string(), REASON_EXCERPT),
        })?;
    log::info!(
        "call with peer {}: answering its new offer (ICE restart)",
        call.peer
    );
    call.restart_at.get_or_insert(now);
    call.remote_candidates = count_candidates(&sdp);
    call.remote_seen = crate::client::nat::pair::candidates_in_sdp(&sdp);
    Ok(PeerMessage::Sdp {
        kind: SdpKind::Answer,
        sdp: answer.to_sdp_string(),
    })
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
    call.remote_seen
        .extend(crate::client::nat::pair::candidates_in_sdp(&sdp));
    Ok(())
}

/// Adds a trickled candidate; returns its IP if it is a host candidate on an IP the peer
/// had not shown before (it may have a new address).
fn remote_candidate(
    call: &mut Call,
    local_addrs: &[SocketAddr],
    mid: Option<&str>,
    mline_index: Option<u32>,
    text: &str,
) -> Option<IpAddr> {
    let text = text.trim();
    if text.is_empty() {
        return None; // end of candidates
    }
    if call.remote_candidates >= MAX_REMOTE_CANDIDATES {
        call.stats.candidates_dropped += 1;
        if call.stats.candidates_dropped == 1 {
            log::warn!(
                "peer {} sent more than {MAX_REMOTE_CANDIDATES} candidates: dropping the rest",
                call.peer
            );
        }
        return None;
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
        return None;
    }
    let candidate = match Candidate::from_sdp_string(text.strip_prefix("a=").unwrap_or(text)) {
        Ok(c) => c,
        Err(e) => {
            log::info!(
                "ignoring a candidate str0m cannot use ({})",
                excerpt(&e.to_string(), 80)
            );
            return None;
        }
    };
    if candidate.proto() != Protocol::Udp {
        log::debug!("ignoring a non-UDP candidate: {}", excerpt(text, 80));
        return None;
    }
    let loopback_only = local_addrs.iter().all(|a| a.ip().is_loopback());
    if loopback_only && !candidate.addr().ip().is_loopback() {
        // Unreachable from loopback sockets; checking it would only send datagrams
        // toward another interface.
        log::debug!(
            "ignoring non-loopback candidate {} (loopback-only host candidates)",
            candidate.addr()
        );
        return None;
    }
    log::debug!("remote candidate {}", candidate.addr());
    let ip = candidate.addr().ip();
    let new_host = (candidate.kind() == CandidateKind::Host
        && !call.remote_seen.iter().any(|c| c.addr().ip() == ip))
    .then_some(ip);
    call.remote_candidates += 1;
    call.remote_seen.push(candidate.clone());
    if call.remote_description_at.is_some() {
        call.rtc.add_remote_candidate(candidate);
    } else {
        call.early_candidates.push(candidate);
    }
    new_host
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

/// The same candidate as str0m tells them apart (its ufrag aside).
fn same_candidate(a: &Candidate, b: &Candidate) -> bool {
    a.kind() == b.kind() && a.addr() == b.addr() && a.local() == b.local()
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

/// How a str0m event ends the call.
enum Verdict {
    /// We give up, and tell the peer.
    HangUp(EndReason),
    /// The peer hung up over the data channel.
    PeerHungUp,
    /// The connected pair died: restart ICE.
    RestartIce,
}

/// Acts on one str0m event; returns a verdict when the call must end.
fn handle_event(
    call: &mut Call,
    event: Event,
    now: Instant,
    out: &mut VecDeque<CallOutput>,
) -> Option<Verdict> {
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
                // Before media flowed there is nothing to restore: give up as before.
                if !call.connected {
                    return Some(Verdict::HangUp(EndReason::IceDisconnected));
                }
                return Some(Verdict::RestartIce);
            }
            let up = matches!(
                state,
                IceConnectionState::Connected | IceConnectionState::Completed
            );
            if let Some(t) = call.restart_at.filter(|_| up) {
                log::info!(
                    "call with peer {}: ICE connected again {} ms after the restart began",
                    call.peer,
                    (now - t).as_millis()
                );
                call.restart_at = None;
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
        Event::MediaAdded(m) if m.kind == MediaKind::Audio && call.audio_mid.is_none() => {
            log::info!(
                "call with peer {}: audio {:?} {:?}",
                call.peer,
                m.mid,
                m.direction
            );
            call.audio_mid = Some(m.mid);
        }
        Event::MediaData(data) if Some(data.mid) == call.audio_mid => {
            out.push_back(CallOutput::AudioData(AudioPacket {
                rtp_time: data.time.numer() as u32,
                sender_clock: sender_clock(&data),
                payload: data.data.to_vec(),
            }))
        }
        Event::MediaData(data) => {
            if let Some(t) = sender_clock(&data) {
                out.push_back(CallOutput::VideoSenderClock(t));
            }
            out.push_back(CallOutput::MediaData(data.data))
        }
        Event::ChannelOpen(id, label) if label == FILE_LABEL && call.chat != Some(id) => {
            call.file_channels.push(id);
            out.push_back(CallOutput::FileChannelOpen(id));
        }
        Event::ChannelOpen(id, label) => {
            if label == CHAT_LABEL && !call.chat_open && call.chat.is_none_or(|c| c == id) {
                log::info!(
                    "call with peer {}: the chat data channel is open",
                    call.peer
                );
                call.chat = Some(id);
                call.chat_open = true;
                out.push_back(CallOutput::ChannelOpen { peer: call.peer });
            } else {
                log::info!(
                    "call with peer {}: ignoring the data channel {:?}",
                    call.peer,
                    excerpt(&label, 40)
                );
            }
        }
        Event::ChannelData(data) if call.chat_open && call.chat == Some(data.id) => {
            return channel_message(call, data, out);
        }
        Event::ChannelData(data) if call.file_channels.contains(&data.id) => {
            out.push_back(CallOutput::FileChannelData(data));
        }
        Event::ChannelData(data) => {
            log::debug!(
                "call with peer {}: ignoring {} bytes on another data channel",
                call.peer,
                data.data.len()
            );
        }
        Event::ChannelClose(id) if call.chat == Some(id) && call.chat_open => {
            log::info!("call with peer {}: the chat data channel closed", call.peer);
            call.chat_open = false;
            out.push_back(CallOutput::ChannelClosed { peer: call.peer });
        }
        Event::ChannelClose(id) if call.file_channels.contains(&id) => {
            call.file_channels.retain(|c| *c != id);
            out.push_back(CallOutput::FileChannelClosed(id));
        }
        Event::ChannelBufferedAmountLow(id) => {
            flush_chat(call);
            if call.file_channels.contains(&id) {
                out.push_back(CallOutput::FileChannelWritable(id));
            }
        }
        Event::KeyframeRequest(req) => {
            log::debug!(
                "call with peer {}: keyframe requested ({:?})",
                call.peer,
                req.kind
            );
            out.push_back(CallOutput::KeyframeRequested);
        }
        // str0m's TWCC estimate event is a 3 s average: the raw estimate comes with the
        // stats below instead.
        Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
            out.push_back(CallOutput::BandwidthEstimate {
                bps: estimate.as_u64(),
                loss: None,
            })
        }
        Event::PeerStats(s) => {
            if let Some(estimate) = s.bwe_tx {
                out.push_back(CallOutput::BandwidthEstimate {
                    bps: estimate.as_u64(),
                    loss: s.egress_loss_fraction,
                });
            }
            if let Some(p) = &s.selected_candidate_pair {
                let (local, remote) = (p.local.addr, p.remote.addr);
                let label = pair_label(&call.local_candidates, &call.remote_seen, local, remote);
                // Logged when the types or the addresses change (a host that moved keeps
                // its types).
                if call.stats.pair.as_ref() != Some(&label)
                    || call.pair_addrs != Some((local, remote))
                {
                    log::info!(
                        "call with peer {}: pair {label} ({local} -> {remote})",
                        call.peer
                    );
                }
                call.stats.pair = Some(label);
                call.pair_addrs = Some((local, remote));
            }
            if s.rtt.is_some() {
                call.stats.rtt = s.rtt;
            }
        }
        Event::MediaEgressStats(s) if s.rtt.is_some() => call.stats.rtt = s.rtt,
        _ => {}
    }
    None
}

/// When `data` was captured on the sender's wall clock: its RTP time placed against the
/// latest sender report's RTP/NTP pair (none before the first report).
fn sender_clock(data: &MediaData) -> Option<SystemTime> {
    let sr = data.last_sender_info.as_ref()?;
    let hz = data.time.denom() as i64;
    let ticks = (data.time.numer() as u32).wrapping_sub(sr.rtp_time.numer() as u32) as i32 as i64;
    let us = ticks * 1_000_000 / hz.max(1);
    if us >= 0 {
        sr.ntp_time.checked_add(Duration::from_micros(us as u64))
    } else {
        sr.ntp_time
            .checked_sub(Duration::from_micros(us.unsigned_abs()))
    }
}

/// The writer for `mid` and the payload type agreed for `codec`, while frames may go out
/// (connected, the peer not silent); None otherwise. Video and audio send through it.
fn media_writer(call: &mut Call, mid: Option<Mid>, codec: Codec) -> Option<(Writer<'_>, Pt)> {
    let mid = mid.filter(|_| call.connected && !call.silent)?;
    let writer = call.rtc.writer(mid)?;
    let pt = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt());
    if pt.is_none() {
        log::debug!("the peer accepted no {codec}: nothing to send");
    }
    Some((writer, pt?))
}

/// Holds a chat line the full send buffer did not take; false (with a warning) when the
/// queue is full too.
fn queue_chat(call: &mut Call, text: &str) -> bool {
    let queued: usize = call.chat_queue.iter().map(String::len).sum();
    if queued + text.len() > MAX_QUEUED_CHAT {
        log::warn!(
            "chat: the send buffer is full and {queued} bytes wait already: not sent ({} bytes)",
            text.len()
        );
        return false;
    }
    log::debug!("chat: the send buffer is full: the line waits");
    call.chat_queue.push_back(text.to_string());
    true
}

/// Writes queued chat lines while the send buffer takes them.
fn flush_chat(call: &mut Call) {
    let Some(id) = call.chat.filter(|_| call.chat_open) else {
        call.chat_queue.clear();
        return;
    };
    while let Some(text) = call.chat_queue.front() {
        match call
            .rtc
            .channel(id)
            .map(|mut ch| ch.write(false, text.as_bytes()))
        {
            Some(Ok(true)) => {
                call.chat_queue.pop_front();
            }
            Some(Ok(false)) => return,
            Some(Err(e)) => {
                log::warn!("chat: cannot send a queued line: {e}");
                call.chat_queue.pop_front();
            }
            None => return,
        }
    }
}

/// A message on the `chat` channel: chat text, or a control message.
fn channel_message(
    call: &mut Call,
    data: ChannelData,
    out: &mut VecDeque<CallOutput>,
) -> Option<Verdict> {
    let len = data.data.len();
    if len > MAX_CHANNEL_MESSAGE {
        call.stats.channel_messages_dropped += 1;
        log::warn!(
            "call with peer {}: dropped a {len}-byte data channel message (at most {MAX_CHANNEL_MESSAGE})",
            call.peer
        );
        return None;
    }
    if !data.binary {
        let text = String::from_utf8_lossy(&data.data).into_owned();
        out.push_back(CallOutput::ChatReceived {
            peer: call.peer,
            text,
        });
        return None;
    }
    let kind = serde_json::from_slice::<serde_json::Value>(&data.data)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned));
    match kind.as_deref() {
        Some("bye") => {
            log::info!("call with peer {}: bye on the data channel", call.peer);
            Some(Verdict::PeerHungUp)
        }
        other => {
            log::debug!(
                "call with peer {}: ignoring a control message of type {:?}",
                call.peer,
                other.map(|t| excerpt(t, 40))
            );
            None
        }
    }
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
        /// `ChannelOpen` outputs seen.
        channel_opened: usize,
        chat: Vec<String>,
        /// Drop this side's signaling messages (the server is down).
        mute_signals: bool,
        /// Drop this side's datagrams (the pair died).
        mute_datagrams: bool,
        /// Offers this side sent, and the last one.
        offers: usize,
        last_offer: String,
        /// Local addresses that are gone: nothing is sent from or received on them.
        gone: Vec<SocketAddr>,
        /// The source of this side's latest datagram that went through.
        last_source: Option<SocketAddr>,
    }

    impl Side {
        fn new(port: u16) -> Side {
            Side {
                c: conductor(port),
                media: None,
                ended: Vec::new(),
                started: 0,
                channel_opened: 0,
                chat: Vec::new(),
                mute_signals: false,
                mute_datagrams: false,
                offers: 0,
                last_offer: String::new(),
                gone: Vec::new(),
                last_source: None,
            }
        }
    }

    /// Moves every output of `from` (peer id `from_id`) to `to`, as the loop and the app
    /// would (admitting offers and messages); returns frames decoded by `from`.
    fn pump(from: &mut Side, from_id: PeerId, to: &mut Side, now: Instant) -> usize {
        let mut decoded = 0;
        while let Some(out) = from.c.poll_output() {
            match out {
                CallOutput::Signal { .. } if from.mute_signals => {}
                CallOutput::Signal { body, .. } => match PeerMessage::parse(&body).unwrap() {
                    PeerMessage::Sdp {
                        kind: SdpKind::Offer,
                        sdp,
                    } if to.c.is_idle() => {
                        from.offers += 1;
                        to.c.accept_offer(from_id, &sdp, now).unwrap()
                    }
                    msg => {
                        if let PeerMessage::Sdp {
                            kind: SdpKind::Offer,
                            sdp,
                        } = &msg
                        {
                            from.offers += 1;
                            from.last_offer = sdp.clone();
                        }
                        to.c.handle_message(msg, now)
                    }
                },
                CallOutput::Transmit { .. } if from.mute_datagrams => {}
                CallOutput::Transmit {
                    source,
                    destination,
                    ..
                } if from.gone.contains(&source) || to.gone.contains(&destination) => {}
                CallOutput::Transmit {
                    source,
                    destination,
                    contents,
                } => {
                    from.last_source = Some(source);
                    to.c.handle_datagram(source, destination, &contents, now)
                }
                CallOutput::MediaData(data) => {
                    let m = from.media.as_mut().unwrap();
                    let d = m.decode(&data, now, 0);
                    if d.request_keyframe {
                        from.c.request_keyframe(now);
                    }
                    decoded += d.frame.is_some() as usize;
                }
                CallOutput::CallStarted { .. } => {
                    from.started += 1;
                    from.media = Some(MediaSession::new(MEDIA, now).unwrap());
                }
                CallOutput::Connected { .. } => from.media.as_mut().unwrap().connected(),
                CallOutput::KeyframeRequested => from.media.as_mut().unwrap().keyframe_requested(),
                CallOutput::CallEnded { reason, .. } => from.ended.push(reason),
                CallOutput::ChannelOpen { .. } => from.channel_opened += 1,
                CallOutput::ChatReceived { text, .. } => from.chat.push(text),
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
            if let Ok(Some(enc)) = m.encode(&p.frame(frame, us), now) {
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

    /// A (port 1000, id 1) calls B (port 2000, id 2); both run until each decoded 10 frames.
    fn call_until_decoding(t0: Instant, now: &mut Instant) -> (Side, Side) {
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, *now).unwrap();
        run(&mut a, &mut b, t0, now, Duration::from_secs(10), |a, b| {
            a >= 10 && b >= 10
        });
        (a, b)
    }

    /// The pair dies (every datagram lost) while signaling works: the caller, hearing
    /// nothing, restarts ICE with a new offer; the callee answers it; video flows again
    /// in the same call.
    #[test]
    fn a_dead_pair_is_restarted_and_the_call_goes_on() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = call_until_decoding(t0, &mut now);
        assert_eq!(a.offers, 1);
        a.mute_datagrams = true;
        b.mute_datagrams = true;
        let t1 = now;
        run(
            &mut a,
            &mut b,
            t1,
            &mut now,
            SILENT_AFTER + Duration::from_millis(500),
            |_, _| false,
        );
        assert_eq!(a.offers, 2, "the caller sent a restart offer");
        assert_eq!(b.offers, 0, "the callee only answers");
        a.mute_datagrams = false;
        b.mute_datagrams = false;
        let t2 = now;
        let (da, db) = run(
            &mut a,
            &mut b,
            t2,
            &mut now,
            Duration::from_secs(4),
            |a, b| a >= 10 && b >= 10,
        );
        let st = |s: &Side| {
            s.c.call.as_ref().map(|c| {
                (
                    c.connected,
                    c.silent,
                    c.restart_at.is_some(),
                    c.pending_offer.is_some(),
                )
            })
        };
        assert!(
            da >= 10 && db >= 10,
            "video again both ways: {da} {db}; {:?} {:?}",
            st(&a),
            st(&b)
        );
        assert!(
            a.ended.is_empty() && b.ended.is_empty(),
            "{:?} {:?}",
            a.ended,
            b.ended
        );
        assert_eq!((a.started, b.started), (1, 1), "the same call");
        assert!(a.c.call.as_ref().unwrap().restart_at.is_none());
    }

    /// `side`'s host address `old` goes and `new` comes, as the loop does it.
    fn move_host(side: &mut Side, old: SocketAddr, new: SocketAddr, now: Instant) {
        side.gone.push(old);
        side.c.remove_host(old);
        side.c.add_host(new, now);
        side.c.network_changed(now);
    }

    /// The caller's address changes mid-call: it restarts ICE at once (before any
    /// silence), its offer lists the new address and not the old one, and video flows
    /// again from the new address in the same call.
    #[test]
    fn a_caller_that_moves_restarts_ice_at_once() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = call_until_decoding(t0, &mut now);
        let (old, new) = (
            SocketAddr::from(([127, 0, 0, 1], 1000)),
            SocketAddr::from(([127, 0, 0, 2], 1001)),
        );
        move_host(&mut a, old, new, now);
        pump(&mut a, 1, &mut b, now);
        assert_eq!(a.offers, 2, "the restart offer went out at once");
        assert!(a.last_offer.contains("127.0.0.2 1001"), "{}", a.last_offer);
        assert!(!a.last_offer.contains("127.0.0.1 1000"), "{}", a.last_offer);
        let t1 = now;
        let (da, db) = run(
            &mut a,
            &mut b,
            t1,
            &mut now,
            Duration::from_secs(6),
            |a, b| a >= 10 && b >= 10,
        );
        assert!(da >= 10 && db >= 10, "video again both ways: {da} {db}");
        assert!(
            now - t1 < SILENT_AFTER,
            "back before the silence rule would act: {:?}",
            now - t1
        );
        assert_eq!(a.last_source, Some(new));
        assert_eq!(b.offers, 0, "the callee never offers");
        assert!(a.ended.is_empty() && b.ended.is_empty());
        assert_eq!((a.started, b.started), (1, 1), "the same call");
    }

    /// The callee's address changes mid-call: it does not offer (no glare); its new host
    /// candidate, trickled, makes the caller restart ICE at once, and video flows again
    /// from the callee's new address.
    #[test]
    fn a_callee_that_moves_is_found_again_by_the_callers_restart() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = call_until_decoding(t0, &mut now);
        let (old, new) = (
            SocketAddr::from(([127, 0, 0, 1], 2000)),
            SocketAddr::from(([127, 0, 0, 3], 2001)),
        );
        move_host(&mut b, old, new, now);
        let t1 = now;
        let (da, db) = run(
            &mut a,
            &mut b,
            t1,
            &mut now,
            Duration::from_secs(7),
            |a, b| a >= 10 && b >= 10,
        );
        assert!(
            da >= 10 && db >= 10,
            "video again both ways: {da} {db}; offers {} {}; ended {:?} {:?}; {:?}",
            a.offers,
            b.offers,
            a.ended,
            b.ended,
            now - t1
        );
        assert!(
            now - t1 < SILENT_AFTER,
            "the trickled address, not the silence, made the caller restart: {:?}",
            now - t1
        );
        assert_eq!(b.offers, 0, "the callee never offers");
        assert_eq!(a.offers, 2, "the caller restarted");
        assert_eq!(b.last_source, Some(new));
        assert!(a.ended.is_empty() && b.ended.is_empty());
        assert_eq!((a.started, b.started), (1, 1), "the same call");
    }

    /// Host candidates on an IP the caller already knows (a browser gathers anew, with new
    /// ports, for each restart) are no cue; a new IP is, once: candidates trickled during
    /// that restart are not (no restart loop).
    #[test]
    fn only_a_new_peer_ip_makes_the_caller_restart_and_only_once() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = call_until_decoding(t0, &mut now);
        let cand = |ip: &str, port: u16| PeerMessage::Candidate {
            mid: None,
            mline_index: Some(0),
            candidate: format!("candidate:7 1 udp 2130706431 {ip} {port} typ host"),
        };
        a.c.handle_message(cand("127.0.0.1", 2999), now);
        pump(&mut a, 1, &mut b, now);
        assert_eq!(a.offers, 1, "a known IP with a new port: no restart");
        a.c.handle_message(cand("127.0.0.4", 3000), now);
        a.c.handle_message(cand("127.0.0.5", 3001), now);
        pump(&mut a, 1, &mut b, now);
        assert_eq!(a.offers, 2, "one restart for the new IP, none during it");
        b.c.handle_message(cand("127.0.0.6", 1999), now);
        pump(&mut b, 2, &mut a, now);
        assert_eq!(b.offers, 0, "the callee never restarts on a cue");
    }

    /// A change while our first offer is unanswered waits for the answer, then restarts
    /// (a second offer at once would void the first).
    #[test]
    fn a_change_during_our_offer_restarts_after_the_answer() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, now).unwrap();
        move_host(
            &mut a,
            SocketAddr::from(([127, 0, 0, 1], 1000)),
            SocketAddr::from(([127, 0, 0, 2], 1001)),
            now,
        );
        let (da, db) = run(
            &mut a,
            &mut b,
            t0,
            &mut now,
            Duration::from_secs(6),
            |a, b| a >= 10 && b >= 10,
        );
        assert!(da >= 10 && db >= 10, "{da} {db}");
        assert_eq!(
            a.offers, 2,
            "the first offer, then the restart after its answer"
        );
        assert!(a.ended.is_empty() && b.ended.is_empty());
    }

    /// A candidate found after the call started (a STUN or TURN answer that came late)
    /// is trickled to the peer, on the calling and on the answering side alike.
    #[test]
    fn late_local_candidates_are_trickled_by_both_sides() {
        let now = Instant::now();
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, now).unwrap();
        pump(&mut a, 1, &mut b, now);
        let late = |port| {
            let base = SocketAddr::from(([127, 0, 0, 1], port));
            let addr = SocketAddr::from(([203, 0, 113, 1], port + 1));
            Candidate::server_reflexive(addr, base, "udp").unwrap()
        };
        for (side, port) in [(&mut a, 1000), (&mut b, 2000)] {
            while side.c.poll_output().is_some() {}
            side.c.add_local_candidate(late(port), now);
            let mut trickled = false;
            while let Some(out) = side.c.poll_output() {
                if let CallOutput::Signal { body, .. } = out {
                    let msg = PeerMessage::parse(&body).unwrap();
                    trickled |= matches!(msg, PeerMessage::Candidate { candidate, .. }
                        if candidate.contains(&format!("{}", port + 1)));
                }
            }
            assert!(trickled, "side on port {port} trickles its late candidate");
        }
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

    /// The `chat` channel comes with the first offer: it opens on both sides, carries a
    /// line each way, drops an oversized message, and a hang-up over it ends the other
    /// side as a peer's BYE would, with the signaled BYE lost (the server is down).
    #[test]
    fn chat_channel_carries_text_and_the_hang_up() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = call_until_decoding(t0, &mut now);
        assert_eq!((a.channel_opened, b.channel_opened), (1, 1));
        assert!(a.c.is_chat_open() && b.c.is_chat_open());

        assert!(a.c.send_chat("hello \"bob\"", now));
        assert!(b.c.send_chat("hi alice\n\u{e9}", now));
        let t1 = now;
        run(
            &mut a,
            &mut b,
            t1,
            &mut now,
            Duration::from_millis(500),
            |_, _| false,
        );
        assert_eq!(b.chat, vec!["hello \"bob\"".to_string()]);
        assert_eq!(a.chat, vec!["hi alice\n\u{e9}".to_string()]);

        // Too long to send; and sent anyway (bypassing the check), dropped on receipt.
        let big = "x".repeat(MAX_CHANNEL_MESSAGE + 1);
        assert!(!a.c.send_chat(&big, now));
        let call = a.c.call.as_mut().unwrap();
        let id = call.chat.unwrap();
        assert!(call
            .rtc
            .channel(id)
            .unwrap()
            .write(false, big.as_bytes())
            .unwrap());
        a.c.drain(now);
        // A binary message that is not a control message we know is ignored.
        let call = a.c.call.as_mut().unwrap();
        assert!(call
            .rtc
            .channel(id)
            .unwrap()
            .write(true, br#"{"type":"file"}"#)
            .unwrap());
        a.c.drain(now);
        assert!(a.c.send_chat("after", now));
        let t2 = now;
        run(
            &mut a,
            &mut b,
            t2,
            &mut now,
            Duration::from_secs(1),
            |_, _| false,
        );
        assert_eq!(b.chat.last().map(String::as_str), Some("after"));
        assert_eq!(b.chat.len(), 2, "{:?}", b.chat.len());
        assert_eq!(b.c.stats().unwrap().channel_messages_dropped, 1);
        assert!(b.ended.is_empty());

        // A hangs up; its signaled BYE is lost, the channel's bye is not.
        a.mute_signals = true;
        a.c.hang_up(EndReason::Local("test".into()), now);
        assert!(a.c.is_idle());
        pump(&mut a, 1, &mut b, now);
        pump(&mut b, 2, &mut a, now);
        assert!(b.c.is_idle(), "ended at once, not by the dead-peer rule");
        assert_eq!(b.ended, vec![EndReason::PeerHungUp]);
        assert_eq!(b.ended[0].to_string(), "the peer hung up (BYE)");
        assert!(a.ended.len() == 1 && matches!(a.ended[0], EndReason::Local(_)));

        // The same with the peer-to-peer hang-up (the app knows the server is away).
        let t3 = now;
        let (mut a, mut b) = (Side::new(1000), Side::new(2000));
        a.c.call(2, now).unwrap();
        run(
            &mut a,
            &mut b,
            t3,
            &mut now,
            Duration::from_secs(10),
            |a, b| a >= 10 && b >= 10,
        );
        assert!(b.c.is_chat_open());
        b.c.hang_up_peer_to_peer(EndReason::Local("test".into()), now);
        let mut signals = 0;
        while let Some(out) = b.c.poll_output() {
            match out {
                CallOutput::Signal { .. } => signals += 1,
                CallOutput::Transmit {
                    source,
                    destination,
                    contents,
                } => a.c.handle_datagram(source, destination, &contents, now),
                _ => {}
            }
        }
        assert_eq!(signals, 0, "nothing through the server");
        pump(&mut a, 1, &mut b, now);
        assert_eq!(a.ended, vec![EndReason::PeerHungUp]);
    }

    /// A peer that goes quiet is shown silent after SILENT_AFTER (sending pauses), comes
    /// back if packets resume, and the call ends DEAD_AFTER the last packet otherwise.
    #[test]
    fn a_silent_peer_pauses_sending_and_a_dead_one_ends_the_call() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, _b) = call_until_decoding(t0, &mut now);
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
        let (mut a, mut b) = call_until_decoding(t1, &mut now);
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

    /// A file channel opens in-band mid-call (no new offer), and a transfer that fills
    /// str0m's send buffer does not make chat fail: the line waits and arrives.
    #[test]
    fn file_channels_open_mid_call_and_chat_waits_behind_a_full_buffer() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = call_until_decoding(t0, &mut now);
        let id = a.c.open_file_channel(now).expect("chat is open");
        run(
            &mut a,
            &mut b,
            t0,
            &mut now,
            Duration::from_secs(12),
            |_, _| false,
        );
        let chunk = vec![7u8; 32 * 1024];
        let mut written = 0;
        while a.c.write_file_channel(id, true, &chunk, now) == Ok(true) {
            written += chunk.len();
            assert!(
                written <= SCTP_SEND_BUFFER,
                "the buffer took {written} bytes"
            );
        }
        assert!(
            written > SCTP_SEND_BUFFER / 2,
            "the channel opened and took {written}"
        );
        // Top it up to the last byte, so not even a short line fits.
        for size in [4096, 512, 64, 8, 1] {
            while a.c.write_file_channel(id, true, &chunk[..size], now) == Ok(true) {}
        }
        assert!(a.c.file_channel_buffered(id) > 0);
        assert!(a.c.send_chat("behind the file", now), "queued, not refused");
        assert_eq!(a.c.call.as_ref().unwrap().chat_queue.len(), 1, "it waits");
        assert!(b.chat.is_empty());
        let done = Instant::now() + Duration::from_secs(30);
        while !b.chat.iter().any(|t| t == "behind the file") {
            assert!(Instant::now() < done, "the queued line never arrived");
            let until = now - t0 + Duration::from_millis(200);
            run(&mut a, &mut b, t0, &mut now, until, |_, _| false);
        }
        assert_eq!(a.c.stats().unwrap().channel_messages_dropped, 0);
        a.c.close_file_channel(id, now);
        assert!(a.c.write_file_channel(id, true, b"x", now).is_err());
    }
}
