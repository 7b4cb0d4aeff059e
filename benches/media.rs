//! Media path costs on one core: H.264 encode and decode of the test pattern (reported as
//! frames per second via element throughput), drawing a pattern frame, reading a stamp, and
//! turning what a camera delivers (YUYV, NV12, Motion-JPEG) into I420.
//!
//! Run briefly on a shared machine:
//! `cargo bench --bench media -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peerconnection::media::convert::to_i420;
use peerconnection::media::{
    fit_i420, read_stamp, scale_i420, EncoderConfig, H264Decoder, H264Encoder, I420Frame,
    PixelFormat, TestPattern,
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

/// The pattern as a camera would deliver it in each layout.
struct CameraFrames {
    yuyv: Vec<u8>,
    nv12: Vec<u8>,
    mjpeg: Vec<u8>,
}

fn camera_frames(frame: &I420Frame) -> CameraFrames {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let cw = w / 2;
    let (y, u, v) = (frame.y(), frame.u(), frame.v());
    let mut yuyv = Vec::with_capacity(w * h * 2);
    for row in 0..h {
        for x in 0..cw {
            let c = (row / 2) * cw + x;
            yuyv.extend_from_slice(&[y[row * w + 2 * x], u[c], y[row * w + 2 * x + 1], v[c]]);
        }
    }
    let mut nv12 = y.to_vec();
    for (a, b) in u.iter().zip(v) {
        nv12.extend_from_slice(&[*a, *b]);
    }
    // BT.601 full-range RGB for the JPEG encoder (JPEG is full range).
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        for x in 0..w {
            let c = (row / 2) * cw + x / 2;
            let yy = (y[row * w + x] as f32 - 16.0) * 255.0 / 219.0;
            let (cb, cr) = (u[c] as f32 - 128.0, v[c] as f32 - 128.0);
            let k = 255.0 / 224.0;
            for val in [
                yy + 1.402 * k * cr,
                yy - 0.344_136 * k * cb - 0.714_136 * k * cr,
                yy + 1.772 * k * cb,
            ] {
                rgb.push(val.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    let mut mjpeg = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut mjpeg, 85);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2);
    enc.encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("jpeg");
    CameraFrames { yuyv, nv12, mjpeg }
}

fn camera_conversion(c: &mut Criterion) {
    let mut group = c.benchmark_group("camera_to_i420");
    group.throughput(Throughput::Elements(1));
    for (w, h, _) in SIZES {
        let frames = camera_frames(&TestPattern::new(w, h).frame(3, 3));
        for (format, data, stride) in [
            (PixelFormat::Yuyv, &frames.yuyv, w as usize * 2),
            (PixelFormat::Nv12, &frames.nv12, w as usize),
            (PixelFormat::Mjpeg, &frames.mjpeg, 0),
        ] {
            group.bench_function(format!("{format}_{w}x{h}"), |b| {
                b.iter(|| {
                    black_box(to_i420(format, black_box(data), w, h, stride).expect("convert"))
                })
            });
        }
    }
    // A 16:9 camera feeding a 4:3 call: crop and scale.
    let hd = TestPattern::new(1280, 720).frame(1, 1);
    group.bench_function("fit_1280x720_to_640x480", |b| {
        b.iter(|| black_box(fit_i420(black_box(&hd), 640, 480)))
    });
    group.finish();
}

criterion_group!(
    benches,
    encode,
    decode,
    pattern_and_stamp,
    camera_conversion
);
criterion_main!(benches);
