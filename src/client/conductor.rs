//! One call (after the original's `Conductor`): a str0m `Rtc` per call, offer/answer and
//! trickle ICE as JSON through the signaling client, `BYE`, and the media wiring (encode what
//! the loop captures, decode what arrives). No sockets: datagrams come in with their
//! addresses and go out as [`CallOutput::Transmit`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::media::{monotonic_us, read_stamp, EncoderConfig, H264Decoder, H264Encoder, I420Frame};
use crate::signaling::message::{PeerMessage, SdpKind};
use crate::signaling::PeerId;

/// The H.264 format every browser decodes: constrained baseline, level 3.1.
pub const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;
const H264_PT: u8 = 108;
const H264_RTX_PT: u8 = 109;

/// How long ICE and DTLS get to connect a call before it is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The encoder never goes below this, whatever the bandwidth estimate says.
const MIN_BITRATE_KBPS: u64 = 100;
/// Keyframe requests for a broken remote stream are sent at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(500);

/// What the conductor needs to know about the local video.
#[derive(Debug, Clone, Copy)]
pub struct MediaConfig {
    pub width: u32,
    pub height: u32,
    pub fps: f32,
    pub bitrate_bps: u32,
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
    /// A decoded remote frame, for the screen or the recorder.
    RemoteFrame(I420Frame),
    CallStarted {
        peer: PeerId,
    },
    CallEnded {
        peer: PeerId,
        reason: String,
    },
}

/// Counters of the current call, for `--stats` and the window overlay.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    /// Capture-to-decode latency of the last decoded frame, read from its stamp.
    pub last_stamp_latency_us: Option<u64>,
    pub stamp_latency_sum_us: u64,
    pub stamp_latency_count: u64,
    pub rtt: Option<Duration>,
    /// The encoder's target: the configured bitrate capped by str0m's send-side estimate.
    pub target_bitrate_bps: u32,
    pub remote_size: Option<(u32, u32)>,
    /// From the call's start to ICE+DTLS connected, and to the first decoded frame.
    pub connect_time: Option<Duration>,
    pub first_frame_time: Option<Duration>,
}

struct Call {
    peer: PeerId,
    rtc: Rtc,
    mid: Option<Mid>,
    pending_offer: Option<SdpPendingOffer>,
    remote_description_set: bool,
    /// Remote candidates that came before the description they belong to.
    early_candidates: Vec<Candidate>,
    local_candidates: Vec<Candidate>,
    candidates_sent: bool,
    encoder: H264Encoder,
    decoder: H264Decoder,
    /// `--bitrate`: the most the encoder is asked for.
    configured_bitrate_bps: u32,
    started: Instant,
    connected: bool,
    force_idr: bool,
    last_pli: Option<Instant>,
    next_timeout: Option<Instant>,
    stats: CallStats,
}

/// The call manager: idle, or in one call with one peer.
pub struct Conductor {
    media: MediaConfig,
    local_addrs: Vec<SocketAddr>,
    call: Option<Call>,
    out: VecDeque<CallOutput>,
    /// Stats of the last call, kept after it ends.
    last_stats: CallStats,
}

impl Conductor {
    /// `local_addrs` are the bound UDP sockets, each offered as a host candidate.
    pub fn new(media: MediaConfig, local_addrs: Vec<SocketAddr>) -> Conductor {
        Conductor {
            media,
            local_addrs,
            call: None,
            out: VecDeque::new(),
            last_stats: CallStats::default(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.call.is_none()
    }

    pub fn peer(&self) -> Option<PeerId> {
        self.call.as_ref().map(|c| c.peer)
    }

    /// True once ICE and DTLS are up and media can be sent.
    pub fn is_connected(&self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.connected && c.mid.is_some())
    }

    /// The current call's counters, or the last call's.
    pub fn stats(&self) -> &CallStats {
        self.call.as_ref().map_or(&self.last_stats, |c| &c.stats)
    }

    fn new_call(&mut self, peer: PeerId, now: Instant) -> Result<Call, String> {
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
            .set_bitrate(Bitrate::kbps(MIN_BITRATE_KBPS), configured);
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
        let encoder = H264Encoder::new(EncoderConfig {
            width: self.media.width,
            height: self.media.height,
            fps: self.media.fps,
            bitrate_bps: self.media.bitrate_bps,
        })
        .map_err(|e| format!("cannot start the H.264 encoder: {e}"))?;
        let decoder =
            H264Decoder::new().map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
        log::info!("call with peer {peer}: created the peer connection");
        self.out.push_back(CallOutput::CallStarted { peer });
        Ok(Call {
            peer,
            rtc,
            mid: None,
            pending_offer: None,
            remote_description_set: false,
            early_candidates: Vec::new(),
            local_candidates,
            candidates_sent: false,
            encoder,
            decoder,
            configured_bitrate_bps: self.media.bitrate_bps,
            started: now,
            connected: false,
            force_idr: true,
            last_pli: None,
            next_timeout: Some(now),
            stats: CallStats {
                target_bitrate_bps: self.media.bitrate_bps,
                ..CallStats::default()
            },
        })
    }

    /// Calls `peer`: adds a send-receive video track and sends the offer.
    pub fn call(&mut self, peer: PeerId, now: Instant) -> Result<(), String> {
        if let Some(c) = &self.call {
            return Err(format!("already in a call with peer {}", c.peer));
        }
        let mut call = self.new_call(peer, now)?;
        let mut api = call.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let Some((offer, pending)) = api.apply() else {
            return Err("str0m produced no offer".into());
        };
        call.mid = Some(mid);
        call.pending_offer = Some(pending);
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

    fn signal(&mut self, to: PeerId, msg: PeerMessage) {
        self.out.push_back(CallOutput::Signal {
            to,
            body: msg.to_body(),
        });
    }

    /// A message from `from` through the signaling server.
    pub fn handle_message(&mut self, from: PeerId, body: &[u8], now: Instant) {
        let msg = match PeerMessage::parse(body) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("ignoring a message from peer {from}: {e}");
                return;
            }
        };
        if let Some(c) = &self.call {
            if c.peer != from {
                log::info!(
                    "in a call with peer {}: ignoring a message from peer {from}",
                    c.peer
                );
                return;
            }
        }
        match msg {
            PeerMessage::Bye => {
                if self.call.is_some() {
                    self.end_call("the peer hung up (BYE)", now);
                }
                return;
            }
            _ if self.call.is_none() => {
                // The first message from an idle state creates the callee's connection.
                match self.new_call(from, now) {
                    Ok(call) => self.call = Some(call),
                    Err(e) => {
                        log::error!("cannot answer peer {from}: {e}");
                        self.signal(from, PeerMessage::Bye);
                        return;
                    }
                }
            }
            _ => {}
        }
        let result = match msg {
            PeerMessage::Sdp { kind, sdp } => self.remote_description(kind, &sdp),
            PeerMessage::Candidate {
                mid,
                mline_index,
                candidate,
            } => {
                self.remote_candidate(mid.as_deref(), mline_index, &candidate);
                Ok(())
            }
            PeerMessage::Bye => Ok(()),
        };
        if let Err(e) = result {
            log::error!("call with peer {from}: {e}");
            self.hang_up(&e, now);
            return;
        }
        self.drain(now);
    }

    fn remote_description(&mut self, kind: SdpKind, sdp: &str) -> Result<(), String> {
        let Some(call) = self.call.as_mut() else {
            return Ok(());
        };
        match kind {
            SdpKind::Offer => {
                let offer =
                    SdpOffer::from_sdp_string(sdp).map_err(|e| format!("bad offer: {e}"))?;
                let answer = call
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| format!("cannot accept the offer: {e}"))?;
                let peer = call.peer;
                call.remote_description_set = true;
                self.signal(
                    peer,
                    PeerMessage::Sdp {
                        kind: SdpKind::Answer,
                        sdp: answer.to_sdp_string(),
                    },
                );
            }
            SdpKind::Answer => {
                let Some(pending) = call.pending_offer.take() else {
                    log::warn!("ignoring an answer to no offer");
                    return Ok(());
                };
                let answer =
                    SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("bad answer: {e}"))?;
                call.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| format!("cannot accept the answer: {e}"))?;
                call.remote_description_set = true;
            }
        }
        let call = self.call.as_mut().expect("checked above");
        for c in std::mem::take(&mut call.early_candidates) {
            call.rtc.add_remote_candidate(c);
        }
        if !call.candidates_sent {
            send_candidates(call, &mut self.out);
        }
        Ok(())
    }

    fn remote_candidate(&mut self, mid: Option<&str>, mline_index: Option<u32>, text: &str) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return; // end of candidates
        }
        let ours = call.mid.map(|m| m.to_string());
        let known_mid = match (mid, &ours) {
            (Some(m), Some(o)) => m == o,
            _ => true,
        };
        if !known_mid && mline_index != Some(0) {
            log::info!("ignoring a candidate for unknown mid {mid:?}: {text}");
            return;
        }
        let candidate = match Candidate::from_sdp_string(text.strip_prefix("a=").unwrap_or(text)) {
            Ok(c) => c,
            Err(e) => {
                log::info!("ignoring a candidate str0m cannot use ({e})");
                return;
            }
        };
        if candidate.proto() != Protocol::Udp {
            log::debug!("ignoring a non-UDP candidate: {text}");
            return;
        }
        let loopback_only = self.local_addrs.iter().all(|a| a.ip().is_loopback());
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
        if call.remote_description_set {
            call.rtc.add_remote_candidate(candidate);
        } else {
            call.early_candidates.push(candidate);
        }
    }

    /// Hangs up: tells the peer (`BYE`) and ends the call.
    pub fn hang_up(&mut self, reason: &str, now: Instant) {
        if let Some(peer) = self.peer() {
            self.signal(peer, PeerMessage::Bye);
            self.end_call(reason, now);
        }
    }

    /// Ends the call without telling the peer (it told us, or it is gone).
    pub fn end_call(&mut self, reason: &str, _now: Instant) {
        if let Some(mut call) = self.call.take() {
            call.rtc.disconnect();
            log::info!("call with peer {} ended: {reason}", call.peer);
            self.last_stats = call.stats;
            self.out.push_back(CallOutput::CallEnded {
                peer: call.peer,
                reason: reason.to_string(),
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
        if let Err(e) = call.rtc.handle_input(input) {
            let reason = format!("str0m failed on input: {e}");
            self.hang_up(&reason, now);
            return;
        }
        self.drain(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let call = self.call.as_ref()?;
        let connect_deadline = (!call.connected).then_some(call.started + CONNECT_TIMEOUT);
        crate::reactor::earliest([call.next_timeout, connect_deadline])
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if !call.connected && now >= call.started + CONNECT_TIMEOUT {
            self.hang_up("ICE/DTLS did not connect in time", now);
            return;
        }
        if call.next_timeout.is_some_and(|t| t <= now) {
            if let Err(e) = call.rtc.handle_input(Input::Timeout(now)) {
                let reason = format!("str0m failed on a timeout: {e}");
                self.hang_up(&reason, now);
                return;
            }
            self.drain(now);
        }
    }

    /// Encodes a captured frame and sends it (once connected). `capture_us` is the
    /// [`monotonic_us`] capture time.
    pub fn send_frame(&mut self, frame: &I420Frame, capture_us: u64, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(mid) = call.mid.filter(|_| call.connected) else {
            return;
        };
        let force_idr = std::mem::take(&mut call.force_idr);
        let data = match call.encoder.encode(frame, force_idr) {
            Ok(d) if d.is_empty() => return,
            Ok(d) => d,
            Err(e) => {
                log::warn!("encode failed: {e}");
                call.force_idr = true;
                return;
            }
        };
        let Some(writer) = call.rtc.writer(mid) else {
            return;
        };
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::H264)
            .map(|p| p.pt());
        let Some(pt) = pt else {
            log::warn!("the peer accepted no H.264: nothing to send");
            return;
        };
        let rtp_time = MediaTime::from_90khz(capture_us.wrapping_mul(9) / 100);
        let len = data.len();
        if let Err(e) = writer.write(pt, now, rtp_time, data) {
            log::warn!("cannot send a frame: {e}");
            return;
        }
        call.stats.frames_sent += 1;
        call.stats.bytes_sent += len as u64;
        if force_idr {
            call.stats.keyframes_sent += 1;
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
                    let reason = format!("str0m failed: {e}");
                    self.hang_up(&reason, now);
                    return;
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
                        self.hang_up(&reason, now);
                        return;
                    }
                }
            }
        }
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }
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
) -> Option<String> {
    match event {
        Event::Connected => {
            call.connected = true;
            call.force_idr = true;
            let t = now - call.started;
            call.stats.connect_time = Some(t);
            log::info!(
                "call with peer {}: connected after {} ms",
                call.peer,
                t.as_millis()
            );
        }
        Event::IceConnectionStateChange(state) => {
            log::info!("call with peer {}: ICE {state:?}", call.peer);
            if state == IceConnectionState::Disconnected {
                return Some("ICE disconnected".into());
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
            if !call.candidates_sent && call.remote_description_set {
                send_candidates(call, out);
            }
        }
        Event::MediaData(data) => {
            call.stats.frames_received += 1;
            call.stats.bytes_received += data.data.len() as u64;
            match call.decoder.decode(&data.data) {
                Ok(Some(frame)) => {
                    call.stats.frames_decoded += 1;
                    if call.stats.first_frame_time.is_none() {
                        let t = now - call.started;
                        call.stats.first_frame_time = Some(t);
                        log::info!(
                            "call with peer {}: first remote frame {}x{} decoded {} ms after the call started",
                            call.peer,
                            frame.width,
                            frame.height,
                            t.as_millis()
                        );
                    }
                    call.stats.remote_size = Some((frame.width, frame.height));
                    if let Some(stamp) = read_stamp(&frame) {
                        let latency =
                            (monotonic_us() as u32).wrapping_sub(stamp.capture_time_us) as u64;
                        if latency < 10_000_000 {
                            call.stats.last_stamp_latency_us = Some(latency);
                            call.stats.stamp_latency_sum_us += latency;
                            call.stats.stamp_latency_count += 1;
                        }
                    }
                    out.push_back(CallOutput::RemoteFrame(frame));
                }
                Ok(None) => {}
                Err(e) => {
                    call.stats.decode_errors += 1;
                    log::debug!("decode failed: {e}");
                    if call.last_pli.is_none_or(|t| now - t >= PLI_INTERVAL) {
                        call.last_pli = Some(now);
                        if let Some(mut w) = call.rtc.writer(data.mid) {
                            let _ = w.request_keyframe(data.rid, KeyframeRequestKind::Pli);
                        }
                    }
                }
            }
        }
        Event::KeyframeRequest(req) => {
            log::debug!(
                "call with peer {}: keyframe requested ({:?})",
                call.peer,
                req.kind
            );
            call.stats.keyframe_requests += 1;
            call.force_idr = true;
        }
        Event::EgressBitrateEstimate(
            BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
        ) => {
            let configured = call.configured_bitrate_bps;
            let floor = (MIN_BITRATE_KBPS * 1000) as u32;
            let target =
                (estimate.as_u64().min(u32::MAX.into()) as u32).clamp(floor, configured.max(floor));
            // Follow real changes only; every retune costs the encoder a little.
            if target.abs_diff(call.stats.target_bitrate_bps) > call.stats.target_bitrate_bps / 10 {
                log::debug!(
                    "call with peer {}: bandwidth estimate {estimate}, encoder target {target} bps",
                    call.peer
                );
                match call.encoder.set_bitrate(target) {
                    Ok(()) => call.stats.target_bitrate_bps = target,
                    Err(e) => log::warn!("cannot retune the encoder: {e}"),
                }
            }
        }
        Event::PeerStats(s) if s.rtt.is_some() => call.stats.rtt = s.rtt,
        Event::MediaEgressStats(s) if s.rtt.is_some() => call.stats.rtt = s.rtt,
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// Moves every output of `from` (peer id `from_id`) to `to`; returns decoded frames.
    fn pump(from: &mut Conductor, from_id: PeerId, to: &mut Conductor, now: Instant) -> usize {
        let mut decoded = 0;
        while let Some(out) = from.poll_output() {
            match out {
                CallOutput::Signal { body, .. } => to.handle_message(from_id, &body, now),
                CallOutput::Transmit {
                    source,
                    destination,
                    contents,
                } => to.handle_datagram(source, destination, &contents, now),
                CallOutput::RemoteFrame(_) => decoded += 1,
                CallOutput::CallStarted { .. } | CallOutput::CallEnded { .. } => {}
            }
        }
        decoded
    }

    /// Two conductors in one process on a virtual clock, str0m-style: offer, answer,
    /// candidates, ICE, DTLS and H.264 both ways, with no sockets and no sleeps.
    #[test]
    fn two_conductors_call_each_other_on_a_virtual_clock() {
        let t0 = Instant::now();
        let mut now = t0;
        let (mut a, mut b) = (conductor(1000), conductor(2000));
        let (mut pa, mut pb) = (TestPattern::new(320, 240), TestPattern::new(320, 240));
        a.call(2, now).unwrap();
        let (mut decoded_a, mut decoded_b) = (0, 0);
        let mut next_frame = now;
        let mut frame = 0;
        while now < t0 + Duration::from_secs(10) && (decoded_a < 30 || decoded_b < 30) {
            decoded_b += pump(&mut a, 1, &mut b, now);
            decoded_a += pump(&mut b, 2, &mut a, now);
            if now >= next_frame {
                let us = (now - t0).as_micros() as u64;
                a.send_frame(&pa.frame(frame, us), us, now);
                b.send_frame(&pb.frame(frame, us), us, now);
                frame += 1;
                next_frame = now + Duration::from_millis(33);
            }
            let next = [a.poll_timeout(), b.poll_timeout(), Some(next_frame)]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            now = next.max(now + Duration::from_millis(1));
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
        assert!(a.is_connected() && b.is_connected());
        assert!(
            decoded_a >= 30 && decoded_b >= 30,
            "decoded {decoded_a}/{decoded_b}"
        );
        assert_eq!(a.stats().decode_errors, 0);
        // Hanging up sends BYE; the other side ends its call too.
        a.hang_up("test", now);
        assert!(a.is_idle());
        pump(&mut a, 1, &mut b, now);
        assert!(b.is_idle());
    }

    #[test]
    fn bad_messages_are_ignored_without_a_call() {
        let now = Instant::now();
        let mut c = conductor(1000);
        for body in [
            &b"{not json"[..],
            br#"{"type":"rollback","sdp":""}"#,
            br#"{"type":"offer"}"#,
            br#"{"sdpMid":"0"}"#,
            b"BYE",
        ] {
            c.handle_message(7, body, now);
            assert!(c.is_idle(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_bad_offer_ends_the_call_with_bye() {
        let now = Instant::now();
        let mut c = conductor(1000);
        c.handle_message(7, br#"{"type":"offer","sdp":"v=0\r\ngarbage"}"#, now);
        assert!(c.is_idle());
        let byes = std::iter::from_fn(|| c.poll_output())
            .filter(|o| matches!(o, CallOutput::Signal { to: 7, body } if body == b"BYE"))
            .count();
        assert_eq!(byes, 1);
    }

    #[test]
    fn odd_candidates_are_ignored_and_others_peers_too() {
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
            c.handle_message(2, cand.as_bytes(), now);
        }
        // A message from another peer during a call does not touch it.
        c.handle_message(9, b"BYE", now);
        assert_eq!(c.peer(), Some(2));
        let early = c.call.as_ref().unwrap().early_candidates.len();
        assert_eq!(early, 1, "only the usable candidate was kept");
    }
}
