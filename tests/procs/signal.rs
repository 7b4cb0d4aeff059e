//! Test signals and how to find them again: a tune no stretch of which looks like another,
//! and the normalized cross-correlation of a recording against it at the best alignment.

use std::f64::consts::PI;

/// A "melody": 120 ms notes of pseudo-random pitch (200-2000 Hz) and loudness, phase
/// continuous, `seconds` long at `rate`. Each seed is a different tune, and no stretch
/// of it looks like another (so alignment is unambiguous).
pub fn melody(seed: u64, seconds: f64, rate: u32) -> Vec<f64> {
    let mut rng = seed;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as f64 / (1u64 << 31) as f64
    };
    let n = (seconds * rate as f64) as usize;
    let note = (0.12 * rate as f64) as usize;
    let (mut freq, mut amp, mut phase) = (440.0, 0.3, 0.0);
    (0..n)
        .map(|i| {
            if i % note == 0 {
                freq = 200.0 + 1800.0 * next();
                amp = 0.15 + 0.35 * next();
            }
            phase += 2.0 * PI * freq / rate as f64;
            amp * phase.sin()
        })
        .collect()
}

pub fn to_i16(v: &[f64]) -> Vec<i16> {
    v.iter().map(|x| (x * 32767.0) as i16).collect()
}

/// The best normalized cross-correlation of `segment` against the looped `reference` over
/// every alignment: coarse on 1 ms envelopes, then sample by sample around the best.
pub fn best_ncc(segment: &[i16], reference: &[i16]) -> (f64, usize) {
    const W: usize = 48;
    let env = |v: &[i16]| -> Vec<f64> {
        v.chunks(W)
            .map(|c| c.iter().map(|&s| (s as f64).abs()).sum::<f64>() / W as f64)
            .collect()
    };
    let (es, er) = (env(segment), env(reference));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ms, mr) = (mean(&es), mean(&er));
    let mut best = (f64::MIN, 0);
    for lag in 0..er.len() {
        let mut dot = 0.0;
        for (i, s) in es.iter().enumerate() {
            dot += (s - ms) * (er[(i + lag) % er.len()] - mr);
        }
        if dot > best.0 {
            best = (dot, lag);
        }
    }
    let coarse = best.1 * W;
    let n = reference.len();
    (0..4 * W)
        .map(|d| (coarse + n - 2 * W + d) % n)
        .map(|lag| (ncc_at(segment, reference, lag), lag))
        .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// The normalised cross-correlation of `segment` against `reference` (looped) at `lag`.
fn ncc_at(segment: &[i16], reference: &[i16], lag: usize) -> f64 {
    let n = reference.len();
    let (mut dot, mut ss, mut rr) = (0.0, 0.0, 0.0);
    for (i, &s) in segment.iter().enumerate() {
        let r = reference[(i + lag) % n] as f64;
        dot += s as f64 * r;
        ss += s as f64 * s as f64;
        rr += r * r;
    }
    dot / (ss.sqrt() * rr.sqrt()).max(1.0)
}

/// The best normalised cross-correlation of `segment` against `reference` (circular) at
/// lags within `radius` samples of `around`, and that lag: for aligning a short window
/// whose rough place is known, where a short window's envelope alone can mislead.
pub fn ncc_near(segment: &[i16], reference: &[i16], around: usize, radius: usize) -> (f64, usize) {
    let n = reference.len();
    let ncc_at = |lag: usize| ncc_at(segment, reference, lag);
    let lag_at = |d: usize| (around + n - radius % n + d) % n;
    // Every 4th lag, then every lag around the best of those.
    let (_, coarse) = (0..=2 * radius)
        .step_by(4)
        .map(|d| (ncc_at(lag_at(d)), d))
        .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a });
    (coarse.saturating_sub(4)..=coarse + 4)
        .map(|d| (ncc_at(lag_at(d)), lag_at(d)))
        .fold((f64::MIN, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// Zero crossings per 10 ms window: a pitch track, which survives what a browser's
/// capture processing (gain control, noise suppression, dropped or repeated 10 ms chunks)
/// does to the waveform itself.
fn pitch_track(v: &[i16]) -> Vec<f64> {
    v.chunks_exact(480)
        .map(|c| c.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64)
        .collect()
}

/// The best normalized correlation of `segment`'s pitch track against the looped
/// `reference`'s, over every 10 ms alignment.
pub fn best_pitch_ncc(segment: &[i16], reference: &[i16]) -> f64 {
    let (s, r) = (pitch_track(segment), pitch_track(reference));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (ms, mr) = (mean(&s), mean(&r));
    (0..r.len())
        .map(|lag| {
            let (mut dot, mut ss, mut rr) = (0.0, 0.0, 0.0);
            for (i, x) in s.iter().enumerate() {
                let (a, b) = (x - ms, r[(i + lag) % r.len()] - mr);
                dot += a * b;
                ss += a * a;
                rr += b * b;
            }
            dot / (ss.sqrt() * rr.sqrt()).max(1e-9)
        })
        .fold(f64::MIN, f64::max)
}
