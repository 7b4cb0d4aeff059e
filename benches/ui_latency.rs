//! Input-to-screen delay of the window, end to end: a key press injected into a private
//! Xvfb (XTEST) is timed until the X server's screen shows its effect (a character typed
//! into, or erased from, the connect screen's server field). That covers the X server, the
//! client loop noticing the input, the model, the paint and the present.
//!
//! Not criterion: each sample is a real key press into a real client process.
//! `cargo bench --bench ui_latency -- [PRESSES]` (default 200)

#[path = "../tests/procs/x11.rs"]
#[allow(dead_code)]
mod x11;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerconnection::client::main_wnd::Layout;

const CLIENT: &str = env!("CARGO_BIN_EXE_peerconnection_client");
const XK_A: u32 = 0x61;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let presses: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let xvfb = x11::Xvfb::start(1024, 768);
    let mut client = Command::new(CLIENT)
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            "9",
            "--name",
            "latency",
            "--video-source",
            "test",
        ])
        .env("DISPLAY", &xvfb.display)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("client starts");
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("UI screen=CONNECT_TO_SERVER") => break,
            Some(Ok(_)) => {}
            _ => panic!("the client did not show its connect screen"),
        }
    }
    let x = x11::X11::connect(&xvfb.display);
    let w = x.find_window("PeerConnection client: latency", Duration::from_secs(5));
    x.focus(w);
    let field = Layout::for_window(640, 480).server_field;
    let grab = || {
        x.capture_area(
            w,
            field.x as i16,
            field.y as i16,
            field.w as u16,
            field.h as u16,
        )
        .rgb
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut delays = Vec::with_capacity(presses);
    let mut timeouts = 0;
    for i in 0..presses {
        let before = grab();
        let key = if i % 2 == 0 { XK_A } else { x11::XK_BACKSPACE };
        let t0 = Instant::now();
        x.key(key);
        loop {
            if grab() != before {
                delays.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if t0.elapsed() > Duration::from_secs(1) {
                timeouts += 1;
                break;
            }
        }
        // Spread the presses over the loop's tick phase.
        std::thread::sleep(Duration::from_micros(3_000 + (i as u64 * 7_919) % 17_000));
    }
    let _ = client.kill();
    let _ = client.wait();
    delays.sort_by(|a, b| a.total_cmp(b));
    let mean = delays.iter().sum::<f64>() / delays.len().max(1) as f64;
    println!(
        "input-to-screen over {} presses: median {:.2} ms, p90 {:.2} ms, max {:.2} ms, mean {:.2} ms, no change within 1 s: {timeouts}",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        delays.last().copied().unwrap_or(f64::NAN),
        mean
    );
}
