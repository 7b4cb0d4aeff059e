//! Audio costs on one core, per 20 ms frame: Opus encode (speech-like content, 32 kbit/s,
//! in-band FEC on), decode, FEC decode and concealment, the playout buffer's insert and
//! pop, and resampling a second of 44.1 kHz to 48 kHz (what a CD-rate WAV source costs
//! once, at start). A call's audio cost per second is 50 x (encode + decode + playout).
//!
//! `cargo bench --bench audio -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use peerconnection::media::audio::{
    resample, OpusDecoder, OpusEncoder, PcmFrame, PlayoutBuffer, DEFAULT_OPUS_BITRATE,
    FRAME_SAMPLES,
};

/// 50 frames of notes changing every 120 ms: a codec works harder on this than on a tone.
fn clip() -> Vec<PcmFrame> {
    let mut phase = 0.0f64;
    (0..50)
        .map(|f| {
            let mut pcm = [0i16; FRAME_SAMPLES];
            for (i, s) in pcm.iter_mut().enumerate() {
                let n = f * FRAME_SAMPLES + i;
                let freq = 200.0 + ((n / 5760) * 379 % 1800) as f64;
                phase += 2.0 * std::f64::consts::PI * freq / 48_000.0;
                *s = (9000.0 * phase.sin()) as i16;
            }
            pcm
        })
        .collect()
}

fn opus(c: &mut Criterion) {
    let frames = clip();
    let mut enc = OpusEncoder::new(DEFAULT_OPUS_BITRATE).unwrap();
    let packets: Vec<Vec<u8>> = frames.iter().map(|f| enc.encode(f).unwrap()).collect();
    let mut i = 0;
    c.bench_function("opus_encode_20ms", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(enc.encode(&frames[i]).unwrap())
        })
    });
    let mut dec = OpusDecoder::new().unwrap();
    let mut out = [0i16; FRAME_SAMPLES];
    c.bench_function("opus_decode_20ms", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            dec.decode(&packets[i], &mut out).unwrap();
            black_box(out[0])
        })
    });
    c.bench_function("opus_fec_decode_20ms", |b| {
        b.iter(|| {
            i = (i + 1) % packets.len();
            dec.decode_fec(&packets[i], &mut out).unwrap();
            black_box(out[0])
        })
    });
    c.bench_function("opus_conceal_20ms", |b| {
        b.iter(|| {
            dec.conceal(&mut out).unwrap();
            black_box(out[0])
        })
    });
}

fn playout(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut buf = PlayoutBuffer::new();
    let mut n = 0u64;
    c.bench_function("playout_insert_pop_20ms", |b| {
        b.iter(|| {
            let at = t0 + Duration::from_millis(n * 20);
            buf.insert((n * 960) as u32, vec![0; 80], at);
            while let Some(f) = buf.pop(at) {
                black_box(f);
            }
            n += 1;
        })
    });
}

fn resampling(c: &mut Criterion) {
    let second: Vec<i16> = (0..44_100).map(|i| ((i * 37) % 20_000) as i16).collect();
    c.bench_function("resample_1s_44k1_to_48k", |b| {
        b.iter(|| black_box(resample(&second, 44_100, 48_000)))
    });
}

criterion_group!(benches, opus, playout, resampling);
criterion_main!(benches);
