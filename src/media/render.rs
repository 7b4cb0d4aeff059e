//! Drawing video with SDL2: each picture is uploaded as an IYUV texture (the three I420
//! planes as they are; the renderer converts to RGB on the GPU, or in SDL's SIMD code with the
//! software renderer) and scaled into a rectangle with its aspect kept.

use sdl2::pixels::PixelFormatEnum;
use sdl2::rect::Rect;
use sdl2::render::{Canvas, RenderTarget, Texture, TextureAccess, TextureCreator};

use super::I420Frame;

/// A rectangle in window pixels (SDL-free, so layout code can be tested without a display).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Area {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
}

impl Area {
    pub const fn new(x: i32, y: i32, w: u32, h: u32) -> Area {
        Area { x, y, w, h }
    }

    pub fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x && y >= self.y && x < self.x + self.w as i32 && y < self.y + self.h as i32
    }

    pub fn right(&self) -> i32 {
        self.x + self.w as i32
    }

    pub fn bottom(&self) -> i32 {
        self.y + self.h as i32
    }

    pub fn to_sdl(self) -> Rect {
        Rect::new(self.x, self.y, self.w.max(1), self.h.max(1))
    }
}

/// The largest rectangle of `width`:`height` shape inside `area`, centred (letterboxed or
/// pillarboxed).
pub fn fit_rect(width: u32, height: u32, area: Area) -> Area {
    if width == 0 || height == 0 || area.w == 0 || area.h == 0 {
        return Area::new(area.x, area.y, 0, 0);
    }
    let (w, h) = (width as u64, height as u64);
    let (aw, ah) = (area.w as u64, area.h as u64);
    let (fw, fh) = if aw * h > ah * w {
        ((ah * w / h) as u32, area.h)
    } else {
        (area.w, (aw * h / w) as u32)
    };
    Area::new(
        area.x + ((area.w - fw) / 2) as i32,
        area.y + ((area.h - fh) / 2) as i32,
        fw,
        fh,
    )
}

/// One video picture on screen: a streaming IYUV texture, remade when the picture size
/// changes (textures are not lifetime-bound in this build, so the old one is destroyed by
/// hand).
#[derive(Default)]
pub struct VideoRenderer {
    texture: Option<Texture>,
    size: Option<(u32, u32)>,
}

impl VideoRenderer {
    pub fn new() -> VideoRenderer {
        VideoRenderer::default()
    }

    /// The size of the picture shown, once there is one.
    pub fn size(&self) -> Option<(u32, u32)> {
        self.size
    }

    /// Uploads `frame`'s planes as they are.
    pub fn update<T>(
        &mut self,
        creator: &TextureCreator<T>,
        frame: &I420Frame,
    ) -> Result<(), String> {
        frame.validate().map_err(|e| e.to_string())?;
        if self.size != Some((frame.width, frame.height)) || self.texture.is_none() {
            self.destroy();
            let texture = creator
                .create_texture(
                    PixelFormatEnum::IYUV,
                    TextureAccess::Streaming,
                    frame.width,
                    frame.height,
                )
                .map_err(|e| {
                    format!(
                        "cannot create a {}x{} video texture: {e}",
                        frame.width, frame.height
                    )
                })?;
            self.texture = Some(texture);
            self.size = Some((frame.width, frame.height));
        }
        let texture = self.texture.as_mut().expect("created above");
        let (w, cw) = (frame.width as usize, frame.chroma_width() as usize);
        texture
            .update_yuv(None, frame.y(), w, frame.u(), cw, frame.v(), cw)
            .map_err(|e| format!("cannot upload a video frame: {e}"))
    }

    /// Draws the last picture into `area`, aspect kept; returns where it went.
    pub fn draw<T: RenderTarget>(
        &self,
        canvas: &mut Canvas<T>,
        area: Area,
    ) -> Result<Option<Area>, String> {
        let (Some(texture), Some((w, h))) = (&self.texture, self.size) else {
            return Ok(None);
        };
        let dst = fit_rect(w, h, area);
        if dst.w == 0 || dst.h == 0 {
            return Ok(None);
        }
        canvas.copy(texture, None, Some(dst.to_sdl()))?;
        Ok(Some(dst))
    }

    /// Forgets the picture (the call ended).
    pub fn clear(&mut self) {
        self.destroy();
    }

    fn destroy(&mut self) {
        if let Some(t) = self.texture.take() {
            // SAFETY: the texture belongs to the renderer that is still alive (the window
            // owns both and drops renderers after the textures' owners), and it is not used
            // after this.
            unsafe { t.destroy() };
        }
        self.size = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_aspect_and_centres() {
        let area = Area::new(0, 0, 800, 480);
        // 4:3 into 800x480: pillarboxed, 640 wide, centred.
        assert_eq!(fit_rect(640, 480, area), Area::new(80, 0, 640, 480));
        // 16:9 into 800x480: letterboxed.
        assert_eq!(fit_rect(1280, 720, area), Area::new(0, 15, 800, 450));
        // Offsets carry through; exact fit fills.
        assert_eq!(
            fit_rect(2, 1, Area::new(10, 20, 100, 50)),
            Area::new(10, 20, 100, 50)
        );
        assert_eq!(fit_rect(0, 10, area).w, 0);
        assert_eq!(fit_rect(10, 10, Area::new(0, 0, 0, 10)).w, 0);
    }

    #[test]
    fn area_contains_its_pixels_only() {
        let a = Area::new(10, 10, 5, 5);
        assert!(a.contains(10, 10) && a.contains(14, 14));
        assert!(!a.contains(15, 10) && !a.contains(9, 12));
        assert_eq!((a.right(), a.bottom()), (15, 15));
    }
}
