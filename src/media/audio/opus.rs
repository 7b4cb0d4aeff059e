//! Opus on the system libopus (through `audiopus`): 48 kHz mono, 20 ms frames, in-band FEC
//! on, so one lost packet can be rebuilt from the next one.

use audiopus::coder::{Decoder, Encoder};
use audiopus::packet::Packet;
use audiopus::{Application, Bitrate, Channels, MutSignals, SampleRate};

use super::{AudioError, PcmFrame, FRAME_SAMPLES};

/// Speech and music both sound fine at this rate in mono; Chromium sends about the same.
pub const DEFAULT_OPUS_BITRATE: i32 = 32_000;
/// The loss the encoder spends in-band FEC bits for (it adds FEC only when this is > 0).
const EXPECTED_LOSS_PERCENT: u8 = 5;
/// Opus's largest packet for one frame is well under this.
const MAX_PACKET: usize = 1500;

fn opus_error(what: &str) -> impl Fn(audiopus::Error) -> AudioError + '_ {
    move |e| AudioError::Opus(format!("{what}: {e}"))
}

pub struct OpusEncoder {
    inner: Encoder,
    out: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(bitrate_bps: i32) -> Result<OpusEncoder, AudioError> {
        let mut inner = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)
            .map_err(opus_error("cannot create the encoder"))?;
        inner
            .set_bitrate(Bitrate::BitsPerSecond(bitrate_bps))
            .map_err(opus_error("bitrate"))?;
        inner
            .set_inband_fec(true)
            .map_err(opus_error("in-band FEC"))?;
        inner
            .set_packet_loss_perc(EXPECTED_LOSS_PERCENT)
            .map_err(opus_error("expected loss"))?;
        Ok(OpusEncoder {
            inner,
            out: vec![0; MAX_PACKET],
        })
    }

    /// One 20 ms frame in, one Opus packet out.
    pub fn encode(&mut self, pcm: &PcmFrame) -> Result<Vec<u8>, AudioError> {
        let n = self
            .inner
            .encode(pcm, &mut self.out)
            .map_err(opus_error("encode"))?;
        Ok(self.out[..n].to_vec())
    }
}

pub struct OpusDecoder {
    inner: Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, AudioError> {
        Ok(OpusDecoder {
            inner: Decoder::new(SampleRate::Hz48000, Channels::Mono)
                .map_err(opus_error("cannot create the decoder"))?,
        })
    }

    /// Decodes a received packet into one frame. A packet of another length (a peer
    /// sending 10 or 40 ms frames) is cut or padded with silence to 20 ms.
    pub fn decode(&mut self, packet: &[u8], out: &mut PcmFrame) -> Result<(), AudioError> {
        self.run(Some(packet), out, false)
    }

    /// Rebuilds the frame *before* `next_packet` from that packet's in-band FEC (Opus
    /// conceals instead when the packet carries none).
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut PcmFrame) -> Result<(), AudioError> {
        self.run(Some(next_packet), out, true)
    }

    /// Packet loss concealment: a frame extrapolated from what was decoded before.
    pub fn conceal(&mut self, out: &mut PcmFrame) -> Result<(), AudioError> {
        self.run(None, out, false)
    }

    fn run(
        &mut self,
        packet: Option<&[u8]>,
        out: &mut PcmFrame,
        fec: bool,
    ) -> Result<(), AudioError> {
        // Room for Opus's longest frame (120 ms), so a long packet does not fail.
        let mut buf = [0i16; FRAME_SAMPLES * 6];
        let frame_len = if fec || packet.is_none() {
            FRAME_SAMPLES
        } else {
            buf.len()
        };
        let packet = match packet {
            Some(p) => Some(Packet::try_from(p).map_err(opus_error("bad packet"))?),
            None => None,
        };
        let signals =
            MutSignals::try_from(&mut buf[..frame_len]).map_err(opus_error("output buffer"))?;
        let n = self
            .inner
            .decode(packet, signals, fec)
            .map_err(opus_error("decode"))?;
        let n = n.min(FRAME_SAMPLES);
        out[..n].copy_from_slice(&buf[..n]);
        out[n..].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, frame: usize) -> PcmFrame {
        let mut pcm = [0i16; FRAME_SAMPLES];
        for (i, s) in pcm.iter_mut().enumerate() {
            let t = (frame * FRAME_SAMPLES + i) as f64 / 48_000.0;
            *s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
        }
        pcm
    }

    #[test]
    fn a_sine_survives_encode_and_decode_and_loss_is_concealed_or_rebuilt() {
        let mut enc = OpusEncoder::new(DEFAULT_OPUS_BITRATE).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let packets: Vec<Vec<u8>> = (0..50)
            .map(|f| enc.encode(&sine(440.0, f)).unwrap())
            .collect();
        assert!(packets.iter().all(|p| !p.is_empty() && p.len() < 400));
        let mut out = [0i16; FRAME_SAMPLES];
        let mut energy = 0.0;
        for (f, p) in packets.iter().enumerate() {
            match f {
                20 => dec.conceal(&mut out).unwrap(),
                30 => dec.decode_fec(&packets[31], &mut out).unwrap(),
                _ => dec.decode(p, &mut out).unwrap(),
            }
            if f > 5 {
                energy += crate::media::audio::frame_level(&out);
            }
        }
        // 8000/32768 full-scale sine: RMS about 0.17 per frame, concealed frames included.
        let mean = energy / 44.0;
        assert!((0.12..0.22).contains(&mean), "mean level {mean}");
        assert!(
            dec.decode(&[], &mut out).is_err(),
            "an empty packet is an error, not a panic"
        );
    }
}
