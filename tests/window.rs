//! The windowed client, black-box: a real `peerconnection_client` with its SDL2 window on a
//! private Xvfb, driven with real key presses and clicks (XTEST), and checked on what the X
//! server shows. Screenshots are saved as PNGs under `artifacts/screenshots/` and the pixel
//! checks run on the saved files.

mod procs;

use std::path::PathBuf;
use std::time::Duration;

use peerconnection::client::main_wnd::text::{text_mask, GLYPH};
use peerconnection::client::main_wnd::{
    streaming_areas, Colour, Draw, Layout, UiModel, ACCENT, ANSWER_FILL, BACKGROUND, DECLINE_FILL,
    ERROR, PANEL, SELECTED, TEXT,
};
use peerconnection::media::render::Area;
use peerconnection::media::BAR_COLOURS;
use procs::x11::{near, Image, Xvfb, X11, XK_DOWN, XK_ESCAPE, XK_RETURN, XK_UP};
use procs::{field, num, Proc, ServerProc};

/// What every client here sends: the test pattern, at a bitrate that keeps the bars clean.
const PATTERN: &[&str] = &["--video-source", "test", "--bitrate", "1000"];

/// A client with its window on `display`.
fn windowed(name: &str, port: u16, display: &str, extra: &[&str]) -> Proc {
    procs::client(
        name,
        port,
        &[PATTERN, extra].concat(),
        &[("DISPLAY", display)],
    )
}

fn headless(name: &str, port: u16, extra: &[&str]) -> Proc {
    procs::client(name, port, &[PATTERN, extra].concat(), &[])
}
const WINDOW: (u32, u32) = (640, 480);
/// Rows (fractions of the picture's height) where the pattern's bars are checked: below the
/// stamp band and the overlay, above the stripes and the preview.
const REMOTE_ROWS: &[f64] = &[0.30, 0.40, 0.50, 0.60, 0.70];

fn rgb(c: Colour) -> [u8; 3] {
    [c.0, c.1, c.2]
}

/// Waits (30 s at most) until the client's STATS lines report `frames` decoded frames.
fn wait_decoded(p: &mut Proc, frames: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = p.wait_line("STATS", Duration::from_secs(15));
        if num(&line, "decoded") >= frames as f64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: fewer than {frames} frames decoded in 30 s: {line}",
            p.name
        );
    }
}

/// Saves a screenshot of `w` and reads it back from the file.
fn screenshot(x: &X11, w: u32, name: &str) -> (Image, PathBuf) {
    // One frame tick for the last change to reach the screen.
    std::thread::sleep(Duration::from_millis(100));
    let path = x.capture(w).save(name);
    (Image::load(&path), path)
}

/// Whether `text` is drawn at `(x, y)` at `scale` in `colour` over `background`: every lit
/// pixel of the glyphs has the text colour and every unlit one the background.
fn text_at(
    img: &Image,
    x: i32,
    y: i32,
    scale: u32,
    text: &str,
    colour: [u8; 3],
    background: [u8; 3],
) -> Result<(), String> {
    let (w, h, mask) = text_mask(text, scale);
    let mut wrong = 0;
    for dy in 0..h {
        for dx in 0..w {
            let (px, py) = (x as u32 + dx, y as u32 + dy);
            let want = if mask[(dy * w + dx) as usize] {
                colour
            } else {
                background
            };
            if !near(img.pixel(px, py), want, 12) {
                wrong += 1;
            }
        }
    }
    if wrong == 0 {
        Ok(())
    } else {
        Err(format!(
            "{text:?} at {x},{y}: {wrong} of {} pixels differ",
            w * h
        ))
    }
}

/// Like [`text_at`] for text over a picture: only the lit pixels are checked.
fn lit_text_at(
    img: &Image,
    x: i32,
    y: i32,
    scale: u32,
    text: &str,
    colour: [u8; 3],
) -> Result<(), String> {
    let (w, h, mask) = text_mask(text, scale);
    let wrong = (0..h)
        .flat_map(|dy| (0..w).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| mask[(dy * w + dx) as usize])
        .filter(|&(dx, dy)| !near(img.pixel(x as u32 + dx, y as u32 + dy), colour, 12))
        .count();
    if wrong == 0 {
        Ok(())
    } else {
        Err(format!("{text:?} at {x},{y}: {wrong} lit pixels differ"))
    }
}

/// Text at its padded position inside a field or row, as the model draws it.
fn text_in(
    img: &Image,
    area: Area,
    scale: u32,
    text: &str,
    colour: [u8; 3],
    background: [u8; 3],
) -> Result<(), String> {
    let pad_x = (scale * 4) as i32;
    let pad_y = (area.h as i32 - (GLYPH * scale) as i32) / 2;
    text_at(
        img,
        area.x + pad_x,
        area.y + pad_y,
        scale,
        text,
        colour,
        background,
    )
}

/// How many of the eight colour bars of the test pattern drawn in `area` show their colour
/// at most of the sample `rows` (the bars span the picture's full width).
fn bars_matching(img: &Image, area: Area, rows: &[f64], tolerance: u8) -> (usize, Vec<String>) {
    let mut seen = Vec::new();
    let mut matched = 0;
    for (i, bar) in BAR_COLOURS.iter().enumerate() {
        let x = area.x as f64 + area.w as f64 * (2 * i + 1) as f64 / 16.0;
        // A bar counts when most sample rows show its colour (the moving box covers some).
        let hits = rows
            .iter()
            .filter(|&&fy| {
                let y = area.y as f64 + area.h as f64 * fy;
                near(img.pixel(x as u32, y as u32), bar.rgb, tolerance)
            })
            .count();
        let y = area.y as f64 + area.h as f64 * rows[rows.len() / 2];
        seen.push(format!("{} {:?}", bar.name, img.pixel(x as u32, y as u32)));
        if hits * 2 > rows.len() {
            matched += 1;
        }
    }
    (matched, seen)
}

#[test]
fn window_connects_lists_peers_calls_and_hangs_up() {
    // Room for the window to grow (screenshots must stay on the screen).
    let xvfb = Xvfb::start(1920, 1080);
    let x = X11::connect(&xvfb.display);
    let server = ServerProc::start(&[]);
    let mut bob = headless("bob", server.port, &["--duration", "60"]);
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));

    // The connect screen, pre-filled from the flags.
    let mut alice = windowed("alice", server.port, &xvfb.display, &[]);
    alice.wait_line("UI screen=CONNECT_TO_SERVER", Duration::from_secs(10));
    let w = x.find_window("PeerConnection client: alice", Duration::from_secs(5));
    let (_, _, ww, wh) = x.geometry(w);
    assert_eq!((ww as u32, wh as u32), WINDOW, "the original's window size");
    let layout = Layout::for_window(WINDOW.0, WINDOW.1);
    let (img, path) = screenshot(&x, w, "connect");
    assert!(
        near(img.pixel(2, 2), rgb(BACKGROUND), 2),
        "{}: background",
        path.display()
    );
    let s = layout.scale;
    // Server and port fields, the focused one (server) with its cursor.
    text_in(
        &img,
        layout.server_field,
        s,
        "127.0.0.1_",
        rgb(TEXT),
        rgb(PANEL),
    )
    .unwrap_or_else(|e| panic!("{}: server field: {e}", path.display()));
    text_in(
        &img,
        layout.port_field,
        s,
        &server.port.to_string(),
        rgb(TEXT),
        rgb(PANEL),
    )
    .unwrap_or_else(|e| panic!("{}: port field: {e}", path.display()));
    let b = layout.connect_button;
    assert!(
        near(img.pixel(b.x as u32 + 2, b.y as u32 + 2), rgb(ACCENT), 2),
        "{}: Connect button",
        path.display()
    );

    // Enter connects; the peer list shows Bob.
    x.focus(w);
    x.key(XK_RETURN);
    alice.wait_line("SIGNED_IN", Duration::from_secs(10));
    alice.wait_line("UI screen=LIST_PEERS", Duration::from_secs(10));
    let (img, path) = screenshot(&x, w, "peer_list");
    text_in(&img, layout.row(0), s, "bob", rgb(TEXT), rgb(SELECTED))
        .unwrap_or_else(|e| panic!("{}: bob on the list: {e}", path.display()));

    // Arrow keys move the selection (one peer: it stays), Enter calls.
    x.key(XK_DOWN);
    x.key(XK_UP);
    x.key(XK_RETURN);
    alice.wait_line("CALL_STARTED", Duration::from_secs(10));
    alice.wait_line("UI screen=STREAMING", Duration::from_secs(10));
    bob.wait_line("CALL_STARTED", Duration::from_secs(10));
    wait_decoded(&mut alice, 60);
    let (img, path) = screenshot(&x, w, "streaming");
    let (remote, local) = streaming_areas(WINDOW.0, WINDOW.1, Some((640, 480)), Some((640, 480)));
    let (remote, local) = (remote.unwrap(), local.unwrap());
    // Bob's test pattern fills the window: its bars, in rows below the overlay and above the
    // preview (H.264 leaves the flat bars close to their colours).
    let (matched, seen) = bars_matching(&img, remote, REMOTE_ROWS, 40);
    assert!(
        matched >= 7,
        "{}: remote bars {matched}/8: {seen:?}",
        path.display()
    );
    // Alice's own pattern in the bottom-right corner.
    let (matched, seen) = bars_matching(&img, local, &[0.35, 0.5, 0.65], 40);
    assert!(
        matched >= 7,
        "{}: preview bars {matched}/8 at {local:?}: {seen:?}",
        path.display()
    );
    assert!(
        local.x > WINDOW.0 as i32 / 2 && local.y > WINDOW.1 as i32 / 2,
        "preview in the bottom-right corner"
    );
    // The overlay names the peer (its box is translucent, so only the glyphs are exact).
    lit_text_at(&img, layout.margin, layout.margin, s, "bob", rgb(ACCENT))
        .unwrap_or_else(|e| panic!("{}: overlay: {e}", path.display()));

    // A wider window: the picture keeps its 4:3 shape, centred between black bars.
    let wide = (960, 540);
    x.resize(w, wide.0, wide.1);
    std::thread::sleep(Duration::from_millis(300));
    let (img, path) = screenshot(&x, w, "streaming_resized");
    assert_eq!((img.width, img.height), wide, "{}", path.display());
    let (remote, _) = streaming_areas(wide.0, wide.1, Some((640, 480)), Some((640, 480)));
    let remote = remote.unwrap();
    assert_eq!((remote.x, remote.w, remote.h), (120, 720, 540));
    let (matched, seen) = bars_matching(&img, remote, REMOTE_ROWS, 40);
    assert!(
        matched >= 7,
        "{}: resized remote bars {matched}/8: {seen:?}",
        path.display()
    );
    for y in [150, 270, 400] {
        assert!(
            near(img.pixel(60, y), [0, 0, 0], 4),
            "{}: pillarbox at y={y}",
            path.display()
        );
    }

    // Esc hangs up: both sides end the call and Alice is back on the list.
    x.key(XK_ESCAPE);
    let end = alice.wait_line("CALL_ENDED", Duration::from_secs(10));
    assert!(num(&end, "frames_decoded") >= 60.0, "{end}");
    let bob_end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    assert!(bob_end.contains("BYE"), "{bob_end}");
    alice.wait_line("UI screen=LIST_PEERS", Duration::from_secs(10));

    // A double click on Bob's row calls again; Bob hanging up brings Alice back to the list.
    let row = layout.row(0);
    x.click(w, (row.x + 20) as i16, (row.y + 5) as i16, 2);
    alice.wait_line("CALL_STARTED", Duration::from_secs(10));
    alice.wait_line("UI screen=STREAMING", Duration::from_secs(10));
    wait_decoded(&mut alice, 10);
    bob.interrupt();
    let end = alice.wait_line("CALL_ENDED", Duration::from_secs(10));
    assert!(end.contains("BYE") || end.contains("left"), "{end}");
    alice.wait_line("UI screen=LIST_PEERS", Duration::from_secs(10));
    assert_eq!(bob.wait_exit(Duration::from_secs(10)), Some(0));

    // Closing the window signs out and exits 0.
    x.close(w);
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn window_shows_sign_in_failures_and_signs_out_with_esc_or_the_button() {
    let xvfb = Xvfb::start(1024, 768);
    let x = X11::connect(&xvfb.display);
    // Nothing listens on this port yet: the connect screen says so, and keeps trying.
    let port = procs::free_port();
    let mut alice = windowed("alice", port, &xvfb.display, &["--autoconnect"]);
    alice.wait_line("UI screen=CONNECT_TO_SERVER", Duration::from_secs(10));
    let w = x.find_window("PeerConnection client: alice", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let (img, path) = screenshot(&x, w, "connect_failed");
    let layout = Layout::for_window(WINDOW.0, WINDOW.1);
    let status_rows = layout.status_top as u32..layout.footer_y as u32;
    let error_pixels = status_rows
        .flat_map(|y| (0..WINDOW.0).map(move |x| (x, y)))
        .filter(|&(px, py)| near(img.pixel(px, py), rgb(ERROR), 2))
        .count();
    assert!(
        error_pixels > 200,
        "{}: an error message in the status area ({error_pixels} pixels)",
        path.display()
    );
    // The server comes up: the retry signs in and the list shows.
    let _server = ServerProc::start_on(port, &[]);
    alice.wait_line("SIGNED_IN", Duration::from_secs(10));
    alice.wait_line("UI screen=LIST_PEERS", Duration::from_secs(10));
    let (img, path) = screenshot(&x, w, "peer_list_empty");
    assert!(
        near(img.pixel(2, 2), rgb(BACKGROUND), 2),
        "{}",
        path.display()
    );
    // Esc on the list signs out and returns to the connect screen; Enter signs in again.
    x.focus(w);
    x.key(XK_ESCAPE);
    alice.wait_line("UI screen=CONNECT_TO_SERVER", Duration::from_secs(10));
    x.key(XK_RETURN);
    alice.wait_line("SIGNED_IN", Duration::from_secs(10));
    alice.wait_line("UI screen=LIST_PEERS", Duration::from_secs(10));
    // The Disconnect button does what Esc does.
    let b = layout.disconnect_button;
    x.click(w, (b.x + 4) as i16, (b.y + 4) as i16, 1);
    alice.wait_line("UI screen=CONNECT_TO_SERVER", Duration::from_secs(10));
    alice.interrupt();
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn autoconnect_and_autocall_skip_the_clicks() {
    let xvfb = Xvfb::start(1024, 768);
    let x = X11::connect(&xvfb.display);
    let server = ServerProc::start(&[]);
    let mut bob = headless("bob", server.port, &["--duration", "30"]);
    bob.wait_line("SIGNED_IN", Duration::from_secs(10));
    let mut alice = windowed(
        "alice",
        server.port,
        &xvfb.display,
        &["--autoconnect", "--autocall", "--duration", "6"],
    );
    alice.wait_line("CALL_STARTED", Duration::from_secs(10));
    alice.wait_line("UI screen=STREAMING", Duration::from_secs(10));
    let w = x.find_window("PeerConnection client: alice", Duration::from_secs(5));
    wait_decoded(&mut alice, 30);
    let (img, path) = screenshot(&x, w, "autocall_streaming");
    let (remote, local) = streaming_areas(WINDOW.0, WINDOW.1, Some((640, 480)), Some((640, 480)));
    let (remote, local) = (remote.unwrap(), local.unwrap());
    assert!(
        local.y as f64 > remote.h as f64 * 0.7,
        "sample rows clear of the preview"
    );
    let (matched, seen) = bars_matching(&img, remote, REMOTE_ROWS, 40);
    assert!(
        matched >= 7,
        "{}: remote bars {matched}/8: {seen:?}",
        path.display()
    );
    let end = alice.wait_line("CALL_ENDED", Duration::from_secs(15));
    assert!(num(&end, "frames_decoded") >= 90.0, "{end}");
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
    bob.interrupt();
    assert_eq!(bob.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Where the window draws the ringing screen's first line for `caller`, as the model says:
/// the text, its position, scale and colour.
fn ringing_text(caller: &str) -> (String, i32, i32, u32, Colour) {
    let mut model = UiModel::new("alice", "127.0.0.1", 1, WINDOW.0, WINDOW.1);
    model.show_incoming_call(1, caller);
    model
        .draw_list(None, None)
        .into_iter()
        .find_map(|d| match d {
            Draw::Text {
                x,
                y,
                scale,
                colour,
                text,
            } if text.starts_with(caller) => Some((text, x, y, scale, colour)),
            _ => None,
        })
        .expect("the ringing screen names the caller")
}

/// Screenshots `w` until the ringing screen shows `caller` with both buttons (a few
/// seconds at most: the ringing line is printed before the window paints).
fn wait_ringing(x: &X11, w: u32, caller: &str, layout: &Layout) {
    let (text, tx, ty, scale, colour) = ringing_text(caller);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (img, path) = screenshot(x, w, &format!("ringing_{caller}"));
        let (a, d) = (layout.answer_button, layout.decline_button);
        let shown = text_at(&img, tx, ty, scale, &text, rgb(colour), rgb(BACKGROUND))
            .and_then(|()| {
                near(
                    img.pixel(a.x as u32 + 2, a.y as u32 + 2),
                    rgb(ANSWER_FILL),
                    2,
                )
                .then_some(())
                .ok_or_else(|| "no Answer button".to_string())
            })
            .and_then(|()| {
                near(
                    img.pixel(d.x as u32 + 2, d.y as u32 + 2),
                    rgb(DECLINE_FILL),
                    2,
                )
                .then_some(())
                .ok_or_else(|| "no Decline button".to_string())
            });
        match shown {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("{}: ringing screen for {caller}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// An incoming call rings in the window (the user did not choose --auto-answer): Esc
/// declines it (the caller hears "busy or declined"), Enter answers the next one.
#[test]
fn incoming_calls_ring_and_are_declined_with_esc_or_answered_with_enter() {
    let xvfb = Xvfb::start(1024, 768);
    let x = X11::connect(&xvfb.display);
    let server = ServerProc::start(&[]);
    let mut alice = windowed("alice", server.port, &xvfb.display, &["--autoconnect"]);
    alice.wait_line("SIGNED_IN", Duration::from_secs(10));
    alice.wait_line("UI screen=LIST_PEERS", Duration::from_secs(10));
    let w = x.find_window("PeerConnection client: alice", Duration::from_secs(5));
    let layout = Layout::for_window(WINDOW.0, WINDOW.1);

    // Bob calls; Alice's window rings with his name and the two buttons.
    let mut bob = headless("bob", server.port, &["--call", "alice", "--duration", "30"]);
    let ring = alice.wait_line("INCOMING_CALL", Duration::from_secs(10));
    assert_eq!(field(&ring, "name"), Some("bob"), "{ring}");
    assert!(num(&ring, "peer") >= 0.0, "{ring}");
    wait_ringing(&x, w, "bob", &layout);

    // Esc declines: Bob's call ends as refused and Alice is back on the list.
    x.focus(w);
    x.key(XK_ESCAPE);
    let end = bob.wait_line("CALL_ENDED", Duration::from_secs(10));
    assert!(end.contains("busy or declined"), "{end}");
    alice.wait_line("UI screen=LIST_PEERS", Duration::from_secs(10));
    bob.interrupt();
    bob.wait_exit(Duration::from_secs(10));

    // Carol calls; Enter answers and Alice receives her pictures.
    let mut carol = headless(
        "carol",
        server.port,
        &["--call", "alice", "--duration", "30"],
    );
    let ring = alice.wait_line("INCOMING_CALL", Duration::from_secs(10));
    assert_eq!(field(&ring, "name"), Some("carol"), "{ring}");
    wait_ringing(&x, w, "carol", &layout);
    x.focus(w);
    x.key(XK_RETURN);
    alice.wait_line("CALL_STARTED", Duration::from_secs(10));
    carol.wait_line("CALL_STARTED", Duration::from_secs(10));
    wait_decoded(&mut alice, 30);

    // Closing the window ends the call and signs out.
    x.close(w);
    assert_eq!(alice.wait_exit(Duration::from_secs(10)), Some(0));
    carol.interrupt();
    carol.wait_exit(Duration::from_secs(10));
}
