//! What painting the call costs the loop: one streaming repaint of the window (upload the
//! remote and the local picture as IYUV textures, draw the video, the preview and the stats
//! overlay, present) at 640x480 and 1280x720, with the software renderer (the default: one
//! thread) and SDL's accelerated one (Mesa's llvmpipe here, as no GPU exists).
//!
//! Needs an X server: uses `DISPLAY` if set, else starts a private Xvfb.
//! `cargo bench --bench render -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/procs/x11.rs"]
#[allow(dead_code)]
mod x11;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use peerconnection::client::main_wnd::{MainWnd, RendererChoice};
use peerconnection::media::TestPattern;

fn repaint(c: &mut Criterion) {
    let _xvfb = match std::env::var("DISPLAY") {
        Ok(d) if !d.is_empty() => None,
        _ => {
            let x = x11::Xvfb::start(1920, 1080);
            std::env::set_var("DISPLAY", &x.display);
            Some(x)
        }
    };
    let mut group = c.benchmark_group("window_repaint");
    group.throughput(Throughput::Elements(1));
    for (renderer, name) in [
        (RendererChoice::Software, "software"),
        (RendererChoice::Accelerated, "accelerated"),
    ] {
        for (w, h) in [(640u32, 480u32), (1280, 720)] {
            let mut wnd = MainWnd::create("bench", "localhost", 8888, (w, h), None, renderer)
                .expect("a window on the X server");
            let used = wnd.renderer_name().to_string();
            wnd.model().switch_to_streaming(1, "bob");
            wnd.model().set_overlay(vec![
                "in  30.0 fps  1200 kbit/s  1280x720".into(),
                "out 30.0 fps  1180 kbit/s  RTT 1.0 ms".into(),
            ]);
            let mut pattern = TestPattern::new(w, h);
            let frames: Vec<_> = (0..30).map(|i| pattern.frame(i, i as u64)).collect();
            let mut i = 0usize;
            group.bench_function(format!("{name}({used})_{w}x{h}"), |b| {
                b.iter(|| {
                    let f = &frames[i % frames.len()];
                    i += 1;
                    wnd.remote_frame(f);
                    wnd.local_frame(f);
                    black_box(wnd.render()).expect("render");
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, repaint);
criterion_main!(benches);
