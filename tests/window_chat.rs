//! The window's chat, black-box: a windowed client on a private Xvfb in a call with a
//! headless one reading `--chat-stdin`, driven with real key presses (XTEST) and checked
//! on screenshots (saved under `artifacts/screenshots/`): `Enter` opens the field, typed
//! text shows, `Enter` sends it to the peer's `CHAT` line; the peer's line shows in the
//! overlay, fades after a few seconds, and `Tab` brings the scroll-back.

mod procs;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use peerconnection::client::main_wnd::chat::SHOWN_FOR;
use peerconnection::client::main_wnd::text::text_mask;
use peerconnection::client::main_wnd::{Colour, Layout, ACCENT, CHAT};
use procs::x11::{near, Image, Xvfb, X11, XK_RETURN, XK_TAB};
use procs::{num, ServerProc};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const WINDOW: (u32, u32) = (640, 480);
/// Lowercase letters and space are their own keysyms.
const XK_SPACE: u32 = 0x20;

fn rgb(c: Colour) -> [u8; 3] {
    [c.0, c.1, c.2]
}

fn screenshot(x: &X11, w: u32, name: &str) -> (Image, PathBuf) {
    // A few frame ticks for the last key to reach the screen.
    std::thread::sleep(Duration::from_millis(300));
    let path = x.capture(w).save(name);
    (Image::load(&path), path)
}

/// Types lowercase text and spaces with real key presses.
fn type_text(x: &X11, text: &str) {
    for c in text.chars() {
        assert!(
            c.is_ascii_lowercase() || c == ' ',
            "{c:?}: type lowercase only"
        );
        x.key(if c == ' ' { XK_SPACE } else { c as u32 });
    }
}

/// The overlay row (0 = the peer's name) where `text` is drawn in `colour`, if any: every
/// lit pixel of its glyphs has the colour (the overlay box is see-through, so unlit pixels
/// are not checked).
fn overlay_row(img: &Image, layout: &Layout, text: &str, colour: Colour) -> Option<usize> {
    let (w, h, mask) = text_mask(text, layout.scale);
    (0..12).find(|row| {
        let y = layout.margin as u32 + *row as u32 * layout.line_h;
        (0..h)
            .flat_map(|dy| (0..w).map(move |dx| (dx, dy)))
            .filter(|&(dx, dy)| mask[(dy * w + dx) as usize])
            .all(|(dx, dy)| {
                near(
                    img.pixel(layout.margin as u32 + dx, y + dy),
                    rgb(colour),
                    12,
                )
            })
    })
}

#[test]
fn window_chat_sends_shows_fades_and_keeps_a_scroll_back() {
    let xvfb = Xvfb::start(1024, 768);
    let x = X11::connect(&xvfb.display);
    let server = ServerProc::start(&[]);
    let mut bob = procs::client_with_stdin(
        "bob",
        server.port,
        &[
            &procs::PATTERN_ARGS[..],
            &["--chat-stdin", "--duration", "60"],
        ]
        .concat(),
    );
    let bob_id = num(&bob.wait_line("SIGNED_IN", SECS(10)), "id") as u32;
    let mut alice = procs::client(
        "alice",
        server.port,
        &[
            &procs::PATTERN_ARGS[..],
            &["--autoconnect", "--call", "bob", "--duration", "60"],
        ]
        .concat(),
        &[("DISPLAY", xvfb.display.as_str())],
    );
    alice.wait_line("UI screen=STREAMING", SECS(15));
    alice.wait_line("CHAT_OPEN", SECS(15));
    bob.wait_line("CHAT_OPEN", SECS(15));
    let w = x.find_window("PeerConnection client: alice", SECS(5));
    let layout = Layout::for_window(WINDOW.0, WINDOW.1);

    // Enter opens the field; the typed text shows with its cursor.
    x.focus(w);
    x.key(XK_RETURN);
    type_text(&x, "hi bob");
    let (img, path) = screenshot(&x, w, "chat_typing");
    assert!(
        overlay_row(&img, &layout, "> hi bob_", ACCENT).is_some(),
        "{}: the chat field with the typed text",
        path.display()
    );

    // Enter sends: bob prints it; alice's overlay shows it as hers.
    x.key(XK_RETURN);
    let got = bob.wait_line("CHAT", SECS(5));
    assert!(got.ends_with(r#"text="hi bob""#), "{got}");
    let (img, path) = screenshot(&x, w, "chat_sent");
    let sent_row = overlay_row(&img, &layout, "alice: hi bob", CHAT);
    assert!(sent_row.is_some(), "{}: the sent line", path.display());
    assert!(
        overlay_row(&img, &layout, "> hi bob_", ACCENT).is_none(),
        "{}: the field closed",
        path.display()
    );

    // bob's line shows under alice's.
    bob.write_stdin(b"hello alice\n");
    let printed = alice.wait_line("CHAT", SECS(5));
    assert!(
        printed.starts_with(&format!("CHAT peer={bob_id} ")),
        "{printed}"
    );
    let received_at = Instant::now();
    let (img, path) = screenshot(&x, w, "chat_received");
    let got_row = overlay_row(&img, &layout, "bob: hello alice", CHAT);
    assert!(
        got_row.is_some() && got_row > sent_row,
        "{}: bob's line below alice's ({got_row:?}, {sent_row:?})",
        path.display()
    );

    // After a few seconds both fade from the overlay; Tab shows them in the scroll-back.
    std::thread::sleep(
        (received_at + SHOWN_FOR + SECS(1)).saturating_duration_since(Instant::now()),
    );
    let (img, path) = screenshot(&x, w, "chat_faded");
    assert!(
        overlay_row(&img, &layout, "bob: hello alice", CHAT).is_none(),
        "{}: faded",
        path.display()
    );
    x.key(XK_TAB);
    let (img, path) = screenshot(&x, w, "chat_log");
    let a = overlay_row(&img, &layout, "alice: hi bob", CHAT);
    let b = overlay_row(&img, &layout, "bob: hello alice", CHAT);
    assert!(
        a.is_some() && b > a,
        "{}: the scroll-back ({a:?}, {b:?})",
        path.display()
    );
    assert!(alice.seen_with("CALL_ENDED").is_empty());
}
