//! Media path costs on one core: H.264 encode and decode of the test pattern (reported as
//! frames per second via element throughput), drawing a pattern frame, and reading a stamp.
//!
//! Run briefly on a shared machine:
//! `cargo bench --bench media -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peerconnection::media::{
    read_stamp, scale_i420, EncoderConfig, H264Decoder, H264Encoder, I420Frame, TestPattern,
};

/// Sizes and the bitrates a call would use for them.
const SIZES: [(u32, u32, u32); 2] = [(640, 480, 1_000_000), (1280, 720, 2_500_000)];
/// Frames cycled through, so the encoder sees motion rather than one repeated picture.
const CLIP: u32 = 60;

fn clip(width: u32, height: u32) -> Vec<I420Frame> {
    let mut pattern = TestPattern::new(width, height);
    (0..CLIP)
        .map(|i| pattern.frame(i, i as u64 * 33_333))
        .collect()
}

fn encoder(width: u32, height: u32, bitrate_bps: u32) -> H264Encoder {
    H264Encoder::new(EncoderConfig {
        width,
        height,
        fps: 30.0,
        bitrate_bps,
    })
    .expect("encoder")
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("h264_encode");
    group.throughput(Throughput::Elements(1));
    for (w, h, bps) in SIZES {
        let frames = clip(w, h);
        let mut enc = encoder(w, h, bps);
        let mut i = 0usize;
        group.bench_function(format!("{w}x{h}"), |b| {
            b.iter(|| {
                let out = enc
                    .encode(&frames[i % frames.len()], false)
                    .expect("encode");
                i += 1;
                black_box(out)
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("h264_decode");
    group.throughput(Throughput::Elements(1));
    for (w, h, bps) in SIZES {
        // One IDR followed by P frames; cycling restarts at the IDR, so every frame decodes.
        let mut enc = encoder(w, h, bps);
        let units: Vec<Vec<u8>> = clip(w, h)
            .iter()
            .enumerate()
            .map(|(n, f)| enc.encode(f, n == 0).expect("encode"))
            .collect();
        let mut dec = H264Decoder::new().expect("decoder");
        let mut i = 0usize;
        group.bench_function(format!("{w}x{h}"), |b| {
            b.iter(|| {
                let out = dec.decode(&units[i % units.len()]).expect("decode");
                i += 1;
                black_box(out)
            })
        });
    }
    group.finish();
}

fn pattern_and_stamp(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern");
    for (w, h, _) in SIZES {
        let mut pattern = TestPattern::new(w, h);
        let mut n = 0u32;
        group.bench_function(format!("draw_{w}x{h}"), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                black_box(pattern.frame(n, n as u64))
            })
        });
        let frame = pattern.frame(7, 7);
        group.bench_function(format!("read_stamp_{w}x{h}"), |b| {
            b.iter(|| black_box(read_stamp(black_box(&frame))))
        });
    }
    let hd = TestPattern::new(1280, 720).frame(1, 1);
    group.bench_function("scale_1280x720_to_640x480", |b| {
        b.iter(|| black_box(scale_i420(black_box(&hd), 640, 480)))
    });
    group.finish();
}

criterion_group!(benches, encode, decode, pattern_and_stamp);
criterion_main!(benches);
