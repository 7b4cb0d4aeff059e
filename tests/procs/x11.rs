//! A private X server for window tests: Xvfb on a free display, and an X11 connection that
//! finds a client's window, types and clicks into it through XTEST, asks it to close, and
//! captures what the server actually shows (the pixels a user would see).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    self, AtomEnum, ClientMessageEvent, ConnectionExt as _, EventMask, ImageFormat, InputFocus,
    Window,
};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Keysyms the tests press.
pub const XK_RETURN: u32 = 0xff0d;
pub const XK_ESCAPE: u32 = 0xff1b;
pub const XK_DOWN: u32 = 0xff54;
pub const XK_UP: u32 = 0xff52;
pub const XK_BACKSPACE: u32 = 0xff08;
pub const XK_TAB: u32 = 0xff09;

/// Xvfb on the first free display number; killed on drop.
pub struct Xvfb {
    child: Child,
    pub display: String,
}

impl Xvfb {
    pub fn start(width: u32, height: u32) -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                &format!("{width}x{height}x24"),
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start Xvfb ({e}); `make test` installs it (Debian package xvfb)")
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("Xvfb prints its display number");
        let n: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Xvfb printed {line:?}, not a display number"));
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A screenshot: 8-bit RGB, row-major.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Image {
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Saves as PNG under `artifacts/screenshots/` and returns the path.
    pub fn save(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/screenshots");
        std::fs::create_dir_all(&dir).expect("artifacts dir");
        let path = dir.join(format!("{name}.png"));
        let file = std::fs::File::create(&path).expect("png file");
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .and_then(|mut w| w.write_image_data(&self.rgb))
            .expect("png written");
        path
    }

    /// Reads back a PNG written by [`Image::save`] (the checks run on the saved file).
    pub fn load(path: &Path) -> Image {
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(path).expect("png opens"),
        ));
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("png data");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        Image {
            width: info.width,
            height: info.height,
            rgb: buf,
        }
    }
}

/// Whether two colours are within `tolerance` on every channel.
pub fn near(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

pub struct X11 {
    conn: RustConnection,
    root: Window,
    min_keycode: u8,
    keysyms_per_keycode: u8,
    keysyms: Vec<u32>,
}

impl X11 {
    pub fn connect(display: &str) -> X11 {
        let (conn, screen) = x11rb::connect(Some(display)).expect("connect to Xvfb");
        let root = conn.setup().roots[screen].root;
        let (min, max) = (conn.setup().min_keycode, conn.setup().max_keycode);
        let map = conn
            .get_keyboard_mapping(min, max - min + 1)
            .expect("request")
            .reply()
            .expect("keyboard mapping");
        conn.xtest_get_version(2, 2)
            .expect("request")
            .reply()
            .expect("Xvfb has XTEST");
        X11 {
            conn,
            root,
            min_keycode: min,
            keysyms_per_keycode: map.keysyms_per_keycode,
            keysyms: map.keysyms,
        }
    }

    fn atom(&self, name: &str) -> u32 {
        self.conn
            .intern_atom(false, name.as_bytes())
            .expect("request")
            .reply()
            .expect("atom")
            .atom
    }

    fn title(&self, w: Window) -> String {
        let utf8 = self.atom("UTF8_STRING");
        let net_name = self.atom("_NET_WM_NAME");
        for (prop, ty) in [
            (net_name, utf8),
            (AtomEnum::WM_NAME.into(), AtomEnum::STRING.into()),
        ] {
            if let Ok(Ok(r)) = self
                .conn
                .get_property(false, w, prop, ty, 0, 1024)
                .map(|c| c.reply())
            {
                if !r.value.is_empty() {
                    return String::from_utf8_lossy(&r.value).into_owned();
                }
            }
        }
        String::new()
    }

    /// The mapped top-level window whose title contains `title`, within `timeout`.
    pub fn find_window(&self, title: &str, timeout: Duration) -> Window {
        let deadline = Instant::now() + timeout;
        loop {
            let tree = self
                .conn
                .query_tree(self.root)
                .expect("request")
                .reply()
                .expect("tree");
            for &w in &tree.children {
                let viewable = self
                    .conn
                    .get_window_attributes(w)
                    .ok()
                    .and_then(|c| c.reply().ok())
                    .is_some_and(|a| a.map_state == xproto::MapState::VIEWABLE);
                if viewable && self.title(w).contains(title) {
                    return w;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no window titled {title:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The window's position on the screen and its size.
    pub fn geometry(&self, w: Window) -> (i16, i16, u16, u16) {
        let g = self
            .conn
            .get_geometry(w)
            .expect("request")
            .reply()
            .expect("geometry");
        let t = self
            .conn
            .translate_coordinates(w, self.root, 0, 0)
            .expect("request")
            .reply()
            .expect("translate");
        (t.dst_x, t.dst_y, g.width, g.height)
    }

    /// What the screen shows where the window is.
    pub fn capture(&self, w: Window) -> Image {
        let (_, _, width, height) = self.geometry(w);
        self.capture_area(w, 0, 0, width, height)
    }

    /// What the screen shows in a rectangle of the window (window coordinates).
    pub fn capture_area(&self, w: Window, ax: i16, ay: i16, width: u16, height: u16) -> Image {
        let (wx, wy, _, _) = self.geometry(w);
        let (x, y) = (wx + ax, wy + ay);
        let reply = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, width, height, !0)
            .expect("request")
            .reply()
            .expect("image");
        assert_eq!(reply.depth, 24, "Xvfb runs at depth 24");
        // Depth 24 in ZPixmap is 32 bits per pixel, little-endian B, G, R, pad.
        let rgb = reply
            .data
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        Image {
            width: width as u32,
            height: height as u32,
            rgb,
        }
    }

    /// Gives `w` the keyboard and puts the pointer over it.
    pub fn focus(&self, w: Window) {
        let (x, y, width, height) = self.geometry(w);
        self.conn
            .set_input_focus(InputFocus::POINTER_ROOT, w, x11rb::CURRENT_TIME)
            .expect("focus");
        self.conn
            .xtest_fake_input(
                xproto::MOTION_NOTIFY_EVENT,
                0,
                x11rb::CURRENT_TIME,
                self.root,
                x + width as i16 / 2,
                y + height as i16 / 2,
                0,
            )
            .expect("motion");
        self.conn.sync().expect("sync");
    }

    fn keycode(&self, keysym: u32) -> u8 {
        let per = self.keysyms_per_keycode as usize;
        let i = self
            .keysyms
            .iter()
            .position(|&k| k == keysym)
            .unwrap_or_else(|| panic!("keysym {keysym:#x} is not on the keyboard map"));
        self.min_keycode + (i / per) as u8
    }

    /// Presses and releases a key, as a keyboard would.
    pub fn key(&self, keysym: u32) {
        let code = self.keycode(keysym);
        for ty in [xproto::KEY_PRESS_EVENT, xproto::KEY_RELEASE_EVENT] {
            self.conn
                .xtest_fake_input(ty, code, x11rb::CURRENT_TIME, self.root, 0, 0, 0)
                .expect("key");
        }
        self.conn.sync().expect("sync");
    }

    /// A left click (or two, quickly: a double click) at window coordinates.
    pub fn click(&self, w: Window, x: i16, y: i16, clicks: u32) {
        let (wx, wy, _, _) = self.geometry(w);
        self.conn
            .xtest_fake_input(
                xproto::MOTION_NOTIFY_EVENT,
                0,
                x11rb::CURRENT_TIME,
                self.root,
                wx + x,
                wy + y,
                0,
            )
            .expect("motion");
        for _ in 0..clicks {
            for ty in [xproto::BUTTON_PRESS_EVENT, xproto::BUTTON_RELEASE_EVENT] {
                self.conn
                    .xtest_fake_input(ty, 1, x11rb::CURRENT_TIME, self.root, 0, 0, 0)
                    .expect("button");
            }
        }
        self.conn.sync().expect("sync");
    }

    /// Resizes the window, as a user dragging its corner would.
    pub fn resize(&self, w: Window, width: u32, height: u32) {
        let aux = xproto::ConfigureWindowAux::new()
            .width(width)
            .height(height);
        self.conn.configure_window(w, &aux).expect("configure");
        self.conn.sync().expect("sync");
    }

    /// Asks the window to close, as a window manager's close button does.
    pub fn close(&self, w: Window) {
        let protocols = self.atom("WM_PROTOCOLS");
        let delete = self.atom("WM_DELETE_WINDOW");
        let event =
            ClientMessageEvent::new(32, w, protocols, [delete, x11rb::CURRENT_TIME, 0, 0, 0]);
        self.conn
            .send_event(false, w, EventMask::NO_EVENT, event)
            .expect("send");
        self.conn.sync().expect("sync");
    }
}
