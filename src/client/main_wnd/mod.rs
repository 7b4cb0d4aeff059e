//! `MainWnd`: the client's SDL2 window, after the original's `GtkMainWnd`. It owns the SDL
//! context, turns SDL events into [`UiModel`] input, and paints the model's draw list:
//! rectangles, bitmap text from one glyph atlas, and the two video pictures as IYUV textures.
//!
//! It runs on the client loop's thread: the loop calls [`MainWnd::pump`] every turn (and at
//! least every [`FRAME_TICK`] while the window is open) and [`MainWnd::render_if_due`] after.
//! Nothing here blocks: the renderer is created without vsync, so `present` never waits for
//! the display.

pub mod chat;
pub mod draw;
pub mod layout;
pub mod model;
pub mod text;

use std::time::{Duration, Instant};

use sdl2::event::{Event, WindowEvent};
use sdl2::keyboard::{Keycode, Mod};
use sdl2::mouse::MouseButton;
use sdl2::pixels::{Color, PixelFormatEnum};
use sdl2::rect::Rect;
use sdl2::render::{BlendMode, Canvas, Texture, TextureCreator};
use sdl2::video::{Window, WindowContext};
use sdl2::{EventPump, Sdl, VideoSubsystem};

use crate::media::render::VideoRenderer;
use crate::media::I420Frame;
pub use draw::{
    Colour, Draw, Picture, ACCENT, ANSWER_FILL, BACKGROUND, CHAT, DECLINE_FILL, DIM, ERROR,
    OVERLAY, PANEL, SELECTED, TEXT, VIDEO_BACKGROUND, WARNING,
};
pub use layout::{streaming_areas, Layout};
pub use model::{Field, Key, Ui, UiAction, UiModel};

/// How often the loop wakes for the window while it is open: input is answered within one
/// frame at 60 Hz even when no socket or timer wakes the loop.
pub const FRAME_TICK: Duration = Duration::from_micros(16_667);
/// Presents are at least this far apart: a remote and a local frame arriving together are
/// painted once.
const MIN_PRESENT_INTERVAL: Duration = Duration::from_millis(4);
/// A change only to the preview or the stats waits up to this long for the next remote
/// frame to ride along with, so a call paints about once per remote frame, not twice.
const LAZY_PAINT: Duration = Duration::from_millis(34);
/// The original's default window size.
pub const DEFAULT_SIZE: (u32, u32) = (640, 480);

/// Which SDL renderer paints the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RendererChoice {
    /// SDL's software renderer onto the X11 framebuffer: no GPU driver is loaded, so the
    /// client stays one thread (Mesa's GL starts worker threads of its own).
    Software,
    /// The best renderer SDL finds (OpenGL and friends), scaling on the GPU.
    Accelerated,
}

pub struct MainWnd {
    model: UiModel,
    remote: VideoRenderer,
    local: VideoRenderer,
    font: Texture,
    creator: TextureCreator<WindowContext>,
    canvas: Canvas<Window>,
    events: EventPump,
    _video: VideoSubsystem,
    _sdl: Sdl,
    /// When the window must be painted next, if something changed.
    paint_at: Option<Instant>,
    last_present: Option<Instant>,
    x11: Option<X11Link>,
    next_tick: Instant,
    presented_ui: Option<Ui>,
    renderer_name: String,
}

impl MainWnd {
    /// Opens the window on the connect screen, its top-left corner at `position` on the
    /// screen (None: where SDL and the window manager put it). Fails (with SDL's reason) when
    /// there is no display to open it on.
    pub fn create(
        name: &str,
        server: &str,
        port: u16,
        size: (u32, u32),
        position: Option<(i32, i32)>,
        renderer: RendererChoice,
    ) -> Result<MainWnd, String> {
        // Our loop handles SIGINT/SIGTERM; SDL must not turn them into quit events.
        sdl2::hint::set("SDL_NO_SIGNAL_HANDLERS", "1");
        // The environment (SDL_RENDER_DRIVER, ...) still overrides these. An empty driver
        // name matches none, so SDL picks its best.
        let (driver, framebuffer_gl) = match renderer {
            RendererChoice::Software => ("software", "0"),
            RendererChoice::Accelerated => ("", "1"),
        };
        sdl2::hint::set("SDL_RENDER_DRIVER", driver);
        sdl2::hint::set("SDL_FRAMEBUFFER_ACCELERATION", framebuffer_gl);
        // A click that focuses the window also counts as a click.
        sdl2::hint::set("SDL_MOUSE_FOCUS_CLICKTHROUGH", "1");
        let sdl = sdl2::init()?;
        let video = sdl.video()?;
        let title = format!("PeerConnection client: {name}");
        let mut builder = video.window(&title, size.0, size.1);
        builder.resizable();
        if let Some((x, y)) = position {
            builder.position(x, y);
        }
        let window = builder.build().map_err(|e| e.to_string())?;
        let canvas = window
            .into_canvas()
            .build()
            .map_err(|e| format!("cannot create a renderer: {e}"))?;
        let renderer_name = canvas.info().name.to_string();
        // Our frames (the test pattern, OpenH264's output, V4L2 cameras) are BT.601 at every
        // size; SDL would otherwise pick BT.709 for HD pictures.
        // SAFETY: a plain setter of SDL's global conversion mode, called on SDL's thread.
        unsafe {
            sdl2::sys::SDL_SetYUVConversionMode(
                sdl2::sys::SDL_YUV_CONVERSION_MODE::SDL_YUV_CONVERSION_BT601,
            );
        }
        let creator = canvas.texture_creator();
        // Glyphs are scaled by whole numbers with nearest sampling (sharp); video with
        // linear sampling (smooth).
        sdl2::hint::set("SDL_RENDER_SCALE_QUALITY", "0");
        let mut font = creator
            .create_texture_static(
                PixelFormatEnum::RGBA32,
                text::ATLAS_WIDTH,
                text::ATLAS_HEIGHT,
            )
            .map_err(|e| format!("cannot create the font texture: {e}"))?;
        font.update(None, &text::atlas_rgba(), (text::ATLAS_WIDTH * 4) as usize)
            .map_err(|e| format!("cannot upload the font: {e}"))?;
        font.set_blend_mode(BlendMode::Blend);
        sdl2::hint::set("SDL_RENDER_SCALE_QUALITY", "1");
        video.text_input().start();
        let events = sdl.event_pump()?;
        let (w, h) = canvas.output_size()?;
        log::info!("window open: {w}x{h}, renderer {renderer_name}");
        let x11 = X11Link::of(canvas.window());
        Ok(MainWnd {
            model: UiModel::new(name, server, port, w, h),
            remote: VideoRenderer::new(),
            local: VideoRenderer::new(),
            font,
            creator,
            canvas,
            events,
            _video: video,
            _sdl: sdl,
            paint_at: Some(Instant::now()),
            last_present: None,
            x11,
            next_tick: Instant::now(),
            presented_ui: None,
            renderer_name,
        })
    }

    /// SDL's name for the renderer in use (`opengl`, `software`, ...).
    pub fn renderer_name(&self) -> &str {
        &self.renderer_name
    }

    pub fn current_ui(&self) -> Ui {
        self.model.current_ui()
    }

    /// The model, for the loop to change what is shown; the window repaints after.
    pub fn model(&mut self) -> &mut UiModel {
        self.repaint();
        &mut self.model
    }

    /// Something visible changed: paint as soon as presents allow.
    fn repaint(&mut self) {
        self.paint_within(MIN_PRESENT_INTERVAL);
    }

    /// Schedules a paint no sooner than `gap` after the last present (now if that passed),
    /// keeping an earlier one already scheduled.
    fn paint_within(&mut self, gap: Duration) {
        let now = Instant::now();
        let due = self.last_present.map_or(now, |t| (t + gap).max(now));
        self.paint_at = Some(self.paint_at.map_or(due, |p| p.min(due)));
    }

    /// The X server connection's descriptor: the loop polls it so input wakes it at once.
    pub fn input_fd(&self) -> Option<std::os::fd::RawFd> {
        self.x11.as_ref().map(|x| x.fd)
    }

    /// Whether input already sits in Xlib's queue (read while painting): the loop must
    /// pump again before it sleeps, as the descriptor will not wake it for those.
    pub fn input_queued(&self) -> bool {
        self.x11.as_ref().is_some_and(X11Link::queued)
    }

    /// A decoded remote picture: uploaded now, shown at the next paint.
    pub fn remote_frame(&mut self, frame: &I420Frame) {
        if let Err(e) = self.remote.update(&self.creator, frame) {
            log::warn!("remote video: {e}");
        }
        self.repaint();
    }

    /// A captured local picture for the preview.
    pub fn local_frame(&mut self, frame: &I420Frame) {
        if let Err(e) = self.local.update(&self.creator, frame) {
            log::warn!("local preview: {e}");
        }
        // Only the preview changed: paint with the next remote frame, or soon anyway.
        self.paint_within(LAZY_PAINT);
    }

    /// Hides the window at once (it was closed; the loop still signs out before exiting).
    pub fn hide(&mut self) {
        self.canvas.window_mut().hide();
    }

    /// Forgets both pictures (the call ended).
    pub fn clear_video(&mut self) {
        self.remote.clear();
        self.local.clear();
        self.repaint();
    }

    /// When the loop must wake next for the window.
    pub fn deadline(&self) -> Instant {
        if self.input_queued() {
            return Instant::now();
        }
        self.paint_at
            .map_or(self.next_tick, |p| p.min(self.next_tick))
    }

    /// Takes every pending SDL event and returns what the user asked for.
    pub fn pump(&mut self, now: Instant) -> Vec<UiAction> {
        let mut actions = Vec::new();
        let events: Vec<Event> = self.events.poll_iter().collect();
        for event in events {
            if let Some(a) = self.event(event) {
                actions.push(a);
            }
        }
        self.next_tick = now + FRAME_TICK;
        actions
    }

    fn event(&mut self, event: Event) -> Option<UiAction> {
        match event {
            Event::Quit { .. } => Some(UiAction::Quit),
            Event::Window { win_event, .. } => match win_event {
                WindowEvent::Close => Some(UiAction::Quit),
                WindowEvent::SizeChanged(..)
                | WindowEvent::Resized(..)
                | WindowEvent::Exposed
                | WindowEvent::Shown
                | WindowEvent::Restored
                | WindowEvent::Maximized => {
                    if let Ok((w, h)) = self.canvas.output_size() {
                        self.model.resize(w, h);
                    }
                    self.repaint();
                    None
                }
                _ => None,
            },
            Event::KeyDown {
                keycode: Some(k),
                keymod,
                ..
            } => {
                let shift = keymod.intersects(Mod::LSHIFTMOD | Mod::RSHIFTMOD);
                let key = match k {
                    Keycode::Up => Key::Up,
                    Keycode::Down => Key::Down,
                    Keycode::PageUp => Key::PageUp,
                    Keycode::PageDown => Key::PageDown,
                    Keycode::Home => Key::Home,
                    Keycode::End => Key::End,
                    Keycode::Return | Keycode::KpEnter => Key::Enter,
                    Keycode::Escape => Key::Escape,
                    Keycode::Tab if shift => Key::BackTab,
                    Keycode::Tab => Key::Tab,
                    Keycode::Backspace => Key::Backspace,
                    Keycode::M => Key::Mute,
                    _ => return None,
                };
                self.repaint();
                self.model.key(key)
            }
            Event::TextInput { text, .. } => {
                self.repaint();
                self.model.text(&text);
                None
            }
            Event::MouseButtonDown {
                mouse_btn: MouseButton::Left,
                clicks,
                x,
                y,
                ..
            } => {
                // Window coordinates to renderer pixels (they differ on high-DPI screens).
                let (ww, wh) = self.canvas.window().size();
                let (ow, oh) = self.canvas.output_size().unwrap_or((ww, wh));
                let sx = x as i64 * ow as i64 / ww.max(1) as i64;
                let sy = y as i64 * oh as i64 / wh.max(1) as i64;
                self.repaint();
                self.model.click(sx as i32, sy as i32, clicks)
            }
            Event::MouseWheel { y, .. } => {
                self.repaint();
                self.model.wheel(y);
                None
            }
            _ => None,
        }
    }

    /// Paints if something changed and the last present is not too recent. Returns the
    /// screen when a different one than before was just presented (the loop announces it).
    pub fn render_if_due(&mut self, now: Instant) -> Option<Ui> {
        if self.paint_at.is_none_or(|t| now < t) {
            return None;
        }
        self.model.set_now(now);
        if let Err(e) = self.render() {
            log::warn!("painting the window failed: {e}");
        }
        self.paint_at = None;
        self.last_present = Some(now);
        let ui = self.model.current_ui();
        (self.presented_ui != Some(ui)).then(|| {
            self.presented_ui = Some(ui);
            ui
        })
    }

    /// Paints the current screen and presents it.
    pub fn render(&mut self) -> Result<(), String> {
        let draws = self.model.draw_list(self.remote.size(), self.local.size());
        for d in draws {
            match d {
                Draw::Fill(area, c) => {
                    self.canvas.set_blend_mode(if c.3 == 255 {
                        BlendMode::None
                    } else {
                        BlendMode::Blend
                    });
                    self.canvas.set_draw_color(Color::RGBA(c.0, c.1, c.2, c.3));
                    self.canvas.fill_rect(area.to_sdl())?;
                }
                Draw::Text {
                    x,
                    y,
                    scale,
                    colour,
                    text,
                } => self.draw_text(x, y, scale, colour, &text)?,
                Draw::Video(picture, area) => {
                    let renderer = match picture {
                        Picture::Remote => &self.remote,
                        Picture::Local => &self.local,
                    };
                    renderer.draw(&mut self.canvas, area)?;
                }
            }
        }
        self.canvas.present();
        Ok(())
    }

    fn draw_text(
        &mut self,
        x: i32,
        y: i32,
        scale: u32,
        colour: Colour,
        text: &str,
    ) -> Result<(), String> {
        self.font.set_color_mod(colour.0, colour.1, colour.2);
        self.font.set_alpha_mod(colour.3);
        let cell = text::GLYPH * scale;
        for (i, c) in text.chars().enumerate() {
            if c == ' ' {
                continue;
            }
            let (gx, gy) = text::atlas_cell(c);
            let src = Rect::new(gx, gy, text::GLYPH, text::GLYPH);
            let dst = Rect::new(x + (i as u32 * cell) as i32, y, cell, cell);
            self.canvas.copy(&self.font, src, dst)?;
        }
        Ok(())
    }
}

/// Xlib's `XEventsQueued`, as `x11-dl` declares it.
type XEventsQueuedFn =
    unsafe extern "C" fn(*mut x11_dl::xlib::Display, std::ffi::c_int) -> std::ffi::c_int;

/// SDL's Xlib connection: its descriptor, which the loop polls, and the count of events Xlib
/// has already read from it. Xlib comes through `x11-dl`, which opens the library SDL already
/// loaded (SDL opens it at run time, so the binary does not link it).
struct X11Link {
    display: *mut x11_dl::xlib::Display,
    fd: std::os::fd::RawFd,
    /// From the library `x11-dl` keeps open for the life of the process.
    events_queued: XEventsQueuedFn,
}

impl X11Link {
    fn of(window: &Window) -> Option<X11Link> {
        use raw_window_handle::{HasDisplayHandle, RawDisplayHandle};
        // Only SDL's X11 driver has an Xlib display (and sdl2 panics when asked for the
        // display of a driver without window-manager info, such as "dummy").
        if window.subsystem().current_video_driver() != "x11" {
            return None;
        }
        let RawDisplayHandle::Xlib(handle) = window.display_handle().ok()?.as_raw() else {
            return None;
        };
        let display = handle.display?.as_ptr().cast::<x11_dl::xlib::Display>();
        let xlib = match x11_dl::xlib::Xlib::open() {
            Ok(xlib) => xlib,
            Err(e) => {
                log::debug!("cannot reach Xlib ({e}): input wakes the loop only on its tick");
                return None;
            }
        };
        // SAFETY: `display` is the connection SDL opened for this window's video subsystem,
        // live while the window is, and it is used here on SDL's own thread;
        // XConnectionNumber only reads it.
        let fd = unsafe { (xlib.XConnectionNumber)(display) };
        log::debug!("X server connection on fd {fd}: input wakes the loop");
        Some(X11Link {
            display,
            fd,
            events_queued: xlib.XEventsQueued,
        })
    }

    fn queued(&self) -> bool {
        /// Xlib's `QueuedAlready`: count what is queued, without reading or flushing.
        const QUEUED_ALREADY: std::ffi::c_int = 0;
        // SAFETY: `MainWnd` owns both this link and the SDL video subsystem whose connection
        // `display` is, so the connection is live; the call is made on SDL's thread, and with
        // `QueuedAlready` it only reads Xlib's queue, without IO.
        unsafe { (self.events_queued)(self.display, QUEUED_ALREADY) > 0 }
    }
}
