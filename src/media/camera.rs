//! V4L2 capture: find what a camera offers, pick the mode closest to what was asked, and
//! stream memory-mapped buffers without ever blocking. The device is opened non-blocking;
//! the client loop registers [`Camera::fd`] with its poll and calls [`Camera::read_frame`]
//! when it is readable, so there is no capture thread and no blocking dequeue.
//!
//! Device discovery and format negotiation use the `v4l` crate; the streaming ioctls are
//! issued here through its `v4l2` wrappers, because its own stream type dequeues with a
//! blocking `poll`.

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use v4l::format::FourCC;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::v4l2;
use v4l::v4l_sys;
use v4l::video::Capture;
use v4l::{Device, Format, Fraction};

use super::convert::{to_i420, PixelFormat};
use super::{I420Frame, MediaError};

/// The device `--video-source camera` opens unless `--device` says otherwise.
pub const DEFAULT_DEVICE: &str = "/dev/video0";
/// Buffers queued with the driver: enough to ride out one slow loop turn.
const BUFFER_COUNT: u32 = 4;

/// One way a device can capture: a four-character code, a size, and the frame rates it
/// offers at that size.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureMode {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    pub fps: Vec<f64>,
}

/// The size and rate the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureRequest {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

/// The mode picked, and the frame rate to ask the driver for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureChoice {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

impl std::fmt::Display for CaptureChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}x{} at {} fps",
            self.format,
            self.width,
            self.height,
            fmt_fps(self.fps)
        )
    }
}

fn fmt_fps(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.01 {
        format!("{}", fps.round())
    } else {
        format!("{fps:.2}")
    }
}

/// Picks the mode closest to `want`: the exact size if offered, else the smallest size that
/// covers it (scaled down later), else the largest there is; then a mode that reaches the
/// frame rate; then the cheapest layout to convert (raw before JPEG). A frame rate slightly
/// under the request (29.97 for 30) counts as reaching it.
pub fn choose_mode(modes: &[CaptureMode], want: CaptureRequest) -> Result<CaptureChoice, String> {
    let want_area = want.width as i64 * want.height as i64;
    let mut best: Option<((u8, i64, u8, PixelFormat), CaptureChoice)> = None;
    for m in modes {
        let Some(format) = PixelFormat::from_fourcc(&m.fourcc) else {
            continue;
        };
        if m.width < 2 || m.height < 2 {
            continue;
        }
        let area = m.width as i64 * m.height as i64;
        let (size_class, size_cost) = if (m.width, m.height) == (want.width, want.height) {
            (0, 0)
        } else if m.width >= want.width && m.height >= want.height {
            (1, area - want_area)
        } else {
            (2, -area)
        };
        let reaching = m.fps.iter().copied().filter(|&f| f >= want.fps - 0.5);
        let fps = match reaching.min_by(f64::total_cmp) {
            Some(f) => Some((0, f)),
            None => m.fps.iter().copied().max_by(f64::total_cmp).map(|f| (1, f)),
        };
        // A size with no frame intervals listed still captures; the driver picks the rate.
        let (fps_short, fps) = fps.unwrap_or((1, want.fps));
        let key = (size_class, size_cost, fps_short, format);
        let choice = CaptureChoice {
            format,
            width: m.width & !1,
            height: m.height & !1,
            fps,
        };
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, choice));
        }
    }
    best.map(|(_, c)| c).ok_or_else(|| {
        let mut offered: Vec<String> = modes
            .iter()
            .map(|m| String::from_utf8_lossy(&m.fourcc).into_owned())
            .collect();
        offered.dedup();
        format!(
            "offers no format this client converts (it offers: {}; usable: YU12, NV12, YUYV, MJPG)",
            if offered.is_empty() {
                "nothing".into()
            } else {
                offered.join(", ")
            }
        )
    })
}

/// What `--list-devices` shows about one device node.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub card: String,
    pub driver: String,
    pub bus: String,
    /// False for nodes that carry metadata or output rather than video capture.
    pub can_capture: bool,
    pub modes: Vec<CaptureMode>,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:?} (driver {}, bus {})",
            self.path.display(),
            self.card,
            self.driver,
            self.bus
        )?;
        if !self.can_capture {
            return write!(f, "\n  not a video capture device");
        }
        let mut codes: Vec<[u8; 4]> = self.modes.iter().map(|m| m.fourcc).collect();
        codes.dedup();
        for code in codes {
            let usable = if PixelFormat::from_fourcc(&code).is_some() {
                ""
            } else {
                " (not usable here)"
            };
            write!(f, "\n  {}{usable}:", String::from_utf8_lossy(&code))?;
            for m in self.modes.iter().filter(|m| m.fourcc == code) {
                let rates: Vec<String> = m.fps.iter().map(|&r| fmt_fps(r)).collect();
                write!(
                    f,
                    "\n    {}x{} @ {} fps",
                    m.width,
                    m.height,
                    rates.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

/// Every `/dev/video*` node, sorted by number, with what each offers. Nodes that cannot be
/// opened are reported by the error that stopped them.
pub fn list_devices() -> Vec<Result<DeviceInfo, MediaError>> {
    let mut paths: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    paths.sort();
    paths.into_iter().map(|(_, p)| probe(&p)).collect()
}

fn camera_err(device: &Path, action: &str, source: io::Error) -> MediaError {
    MediaError::Camera {
        device: device.to_path_buf(),
        action: action.to_string(),
        source,
    }
}

fn format_err(device: &Path, reason: impl Into<String>) -> MediaError {
    MediaError::CameraFormat {
        device: device.to_path_buf(),
        reason: reason.into(),
    }
}

/// The `v4l` crate panics on a few replies it does not know (a format description that is
/// not UTF-8, a colorspace newer than it). A device's reply is outside input, so such a
/// panic becomes an error naming the device.
fn guarded<T>(device: &Path, what: &str, f: impl FnOnce() -> T) -> Result<T, MediaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        format_err(
            device,
            format!("the device's answer to {what} could not be read"),
        )
    })
}

fn open_device(path: &Path) -> Result<Device, MediaError> {
    Device::with_path(path).map_err(|e| camera_err(path, "open the device", e))
}

/// Reads the capabilities with our own `VIDIOC_QUERYCAP`: it uses the node's own
/// capabilities (a webcam's metadata node shares the device's) and never panics on a card
/// name that is not UTF-8.
fn probe(path: &Path) -> Result<DeviceInfo, MediaError> {
    let dev = open_device(path)?;
    probe_open(path, &dev)
}

fn probe_open(path: &Path, dev: &Device) -> Result<DeviceInfo, MediaError> {
    // SAFETY: v4l2_capability is integers and byte arrays only: all-zero is a valid value.
    let mut caps: v4l_sys::v4l2_capability = unsafe { std::mem::zeroed() };
    // SAFETY: VIDIOC_QUERYCAP is defined with a v4l2_capability.
    unsafe { ioctl(dev, v4l2::vidioc::VIDIOC_QUERYCAP, &mut caps) }
        .map_err(|e| camera_err(path, "query its capabilities (is it a V4L2 device?)", e))?;
    let text = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    const DEVICE_CAPS: u32 = 0x8000_0000;
    const VIDEO_CAPTURE: u32 = 0x0000_0001;
    const STREAMING: u32 = 0x0400_0000;
    let node_caps = if caps.capabilities & DEVICE_CAPS != 0 {
        caps.device_caps
    } else {
        caps.capabilities
    };
    let can_capture = node_caps & VIDEO_CAPTURE != 0 && node_caps & STREAMING != 0;
    let modes = if can_capture {
        guarded(path, "the format listing", || enumerate_modes(dev))?
    } else {
        Vec::new()
    };
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        card: text(&caps.card),
        driver: text(&caps.driver),
        bus: text(&caps.bus_info),
        can_capture,
        modes,
    })
}

fn interval_fps(f: &Fraction) -> Option<f64> {
    (f.numerator > 0 && f.denominator > 0).then(|| f.denominator as f64 / f.numerator as f64)
}

/// Every (format, size) with its frame rates. Stepwise sizes are offered as their largest
/// and smallest size; stepwise rates as their two ends.
fn enumerate_modes(dev: &Device) -> Vec<CaptureMode> {
    let mut modes = Vec::new();
    for desc in dev.enum_formats().unwrap_or_default() {
        let fourcc = desc.fourcc;
        let mut sizes = Vec::new();
        for fs in dev.enum_framesizes(fourcc).unwrap_or_default() {
            match fs.size {
                FrameSizeEnum::Discrete(d) => sizes.push((d.width, d.height)),
                FrameSizeEnum::Stepwise(s) => {
                    sizes.push((s.max_width, s.max_height));
                    for (w, h) in [(1280, 720), (640, 480), (320, 240)] {
                        let fits = (s.min_width..=s.max_width).contains(&w)
                            && (s.min_height..=s.max_height).contains(&h)
                            && (w - s.min_width) % s.step_width.max(1) == 0
                            && (h - s.min_height) % s.step_height.max(1) == 0;
                        if fits {
                            sizes.push((w, h));
                        }
                    }
                }
            }
        }
        for (width, height) in sizes {
            let mut fps = Vec::new();
            for fi in dev
                .enum_frameintervals(fourcc, width, height)
                .unwrap_or_default()
            {
                match fi.interval {
                    FrameIntervalEnum::Discrete(f) => fps.extend(interval_fps(&f)),
                    FrameIntervalEnum::Stepwise(s) => {
                        fps.extend(interval_fps(&s.min));
                        fps.extend(interval_fps(&s.max));
                    }
                }
            }
            fps.sort_by(|a, b| b.total_cmp(a));
            fps.dedup();
            modes.push(CaptureMode {
                fourcc: fourcc.repr,
                width,
                height,
                fps,
            });
        }
    }
    modes
}

/// Issues the V4L2 `request` on `device` with `arg` as its argument (the kernel reads and
/// writes `arg` in place).
///
/// # Safety
///
/// `T` must be the argument type `request` is defined with (`VIDIOC_QUERYBUF` takes a
/// `v4l2_buffer`, `VIDIOC_STREAMON` an `int`, ...), and any pointer inside `arg` must be
/// valid for what the request does with it. The requests used here are single-planar
/// memory-mapped capture, whose arguments carry no pointers.
unsafe fn ioctl<T>(
    device: &Device,
    request: v4l2::vidioc::_IOC_TYPE,
    arg: &mut T,
) -> io::Result<()> {
    // The request number encodes its argument's size: a mismatched type is a bug here, and
    // stopping beats letting the kernel write past `arg`.
    assert_eq!(
        (request >> 16) as usize & 0x3fff,
        std::mem::size_of::<T>(),
        "argument size of ioctl {request:#x}"
    );
    // SAFETY: `arg` is a live, exclusive borrow of a `T`, the type the caller vouches the
    // request takes; the descriptor is the device's own, open as long as `device` lives.
    unsafe { v4l2::ioctl(device.handle().fd(), request, (arg as *mut T).cast()) }
}

/// One driver buffer mapped into our memory, unmapped on drop.
struct MappedBuffer {
    ptr: *mut u8,
    len: usize,
}

impl MappedBuffer {
    /// Maps `len` bytes at `offset` of the device `fd`: what `VIDIOC_QUERYBUF` answered for one
    /// buffer.
    fn map(fd: RawFd, len: usize, offset: u32) -> io::Result<MappedBuffer> {
        // SAFETY: with a null address the kernel places a fresh shared mapping where nothing of
        // ours is, so no Rust object is aliased; it stays valid until `drop` unmaps it.
        let ptr = unsafe {
            v4l2::mmap(
                std::ptr::null_mut(),
                len,
                nix::libc::PROT_READ | nix::libc::PROT_WRITE,
                nix::libc::MAP_SHARED,
                fd,
                offset as nix::libc::off_t,
            )
        }?;
        Ok(MappedBuffer {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The first `len` bytes of the buffer (all of it if `len` is larger).
    ///
    /// # Safety
    ///
    /// The buffer must stay dequeued while the slice lives: a queued buffer is the driver's,
    /// which may write into it at any time.
    unsafe fn bytes(&self, len: usize) -> &[u8] {
        // SAFETY: `ptr..ptr + self.len` is our live, readable mapping; the caller guarantees
        // nothing writes it while the borrow of `self` lasts.
        unsafe { std::slice::from_raw_parts(self.ptr, len.min(self.len)) }
    }
}

impl Drop for MappedBuffer {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping `map` made; it is unmapped once, here, and no slice
        // of it outlives `self`.
        let _ = unsafe { v4l2::munmap(self.ptr.cast(), self.len) };
    }
}

/// An open camera, set to one mode, streaming or not.
pub struct Camera {
    path: PathBuf,
    device: Device,
    card: String,
    choice: CaptureChoice,
    /// Bytes per row of the first plane, as the driver set it.
    stride: usize,
    buffers: Vec<MappedBuffer>,
    streaming: bool,
}

fn buffer_desc() -> v4l_sys::v4l2_buffer {
    v4l_sys::v4l2_buffer {
        type_: v4l::buffer::Type::VideoCapture as u32,
        memory: v4l::memory::Memory::Mmap as u32,
        // SAFETY: v4l2_buffer is integers, a timeval and a union of integers and a raw pointer:
        // all-zero is a valid value, and the one V4L2 asks callers to start from.
        ..unsafe { std::mem::zeroed() }
    }
}

impl Camera {
    /// Opens `path` and sets it to the mode closest to `want` (see [`choose_mode`]). Does not
    /// start streaming: the camera runs only during calls.
    pub fn open(path: &Path, want: CaptureRequest) -> Result<Camera, MediaError> {
        let device = open_device(path)?;
        let info = probe_open(path, &device)?;
        if !info.can_capture {
            return Err(format_err(
                path,
                format!("{:?} is not a video capture device", info.card),
            ));
        }
        let choice = choose_mode(&info.modes, want).map_err(|e| format_err(path, e))?;
        let requested = Format::new(
            choice.width,
            choice.height,
            FourCC::new(&choice.format.fourcc()),
        );
        let set = guarded(path, "setting the format", || device.set_format(&requested))?
            .map_err(|e| camera_err(path, &format!("set the format {choice}"), e))?;
        if set.fourcc.repr != choice.format.fourcc() {
            return Err(format_err(
                path,
                format!(
                    "asked for {} but the driver set {}",
                    choice.format,
                    String::from_utf8_lossy(&set.fourcc.repr)
                ),
            ));
        }
        let (width, height) = (set.width & !1, set.height & !1);
        if width < 2 || height < 2 {
            return Err(format_err(
                path,
                format!(
                    "the driver set an unusable size {}x{}",
                    set.width, set.height
                ),
            ));
        }
        let min_stride = choice.format.min_stride(width as usize);
        let stride = (set.stride as usize).max(min_stride);
        let mut choice = CaptureChoice {
            width,
            height,
            ..choice
        };
        let interval = Fraction::new(1000, (choice.fps * 1000.0).round().max(1.0) as u32);
        let params = guarded(path, "setting the frame rate", || {
            device.set_params(&v4l::video::capture::Parameters::new(interval))
        })?;
        match params {
            Ok(p) => {
                if let Some(fps) = interval_fps(&p.interval) {
                    choice.fps = fps;
                }
            }
            Err(e) => log::debug!("{}: cannot set the frame rate: {e}", path.display()),
        }
        log::info!(
            "camera {} ({:?}): {choice} (asked {}x{} at {} fps)",
            path.display(),
            info.card,
            want.width,
            want.height,
            fmt_fps(want.fps)
        );
        Ok(Camera {
            path: path.to_path_buf(),
            device,
            card: info.card,
            choice,
            stride,
            buffers: Vec::new(),
            streaming: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn card(&self) -> &str {
        &self.card
    }

    /// The mode in use: frames come out at this size.
    pub fn mode(&self) -> CaptureChoice {
        self.choice
    }

    /// The descriptor the loop polls for readability while streaming.
    pub fn fd(&self) -> RawFd {
        self.device.handle().fd()
    }

    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// [`ioctl`] on this camera's device.
    ///
    /// # Safety
    ///
    /// As for [`ioctl`]: `T` must be the argument type `request` is defined with.
    unsafe fn ioctl<T>(&self, request: v4l2::vidioc::_IOC_TYPE, arg: &mut T) -> io::Result<()> {
        // SAFETY: the caller upholds `ioctl`'s contract.
        unsafe { ioctl(&self.device, request, arg) }
    }

    /// Maps the driver's buffers, queues them all and turns the stream on.
    pub fn start(&mut self) -> Result<(), MediaError> {
        if self.streaming {
            return Ok(());
        }
        let path = &self.path;
        let count = self
            .request_buffers(BUFFER_COUNT)
            .map_err(|e| camera_err(path, "request capture buffers", e))?;
        if count == 0 {
            return Err(format_err(path, "the driver granted no capture buffers"));
        }
        for index in 0..count {
            let mut buf = v4l_sys::v4l2_buffer {
                index,
                ..buffer_desc()
            };
            // SAFETY: VIDIOC_QUERYBUF is defined with a v4l2_buffer.
            unsafe { self.ioctl(v4l2::vidioc::VIDIOC_QUERYBUF, &mut buf) }
                .map_err(|e| camera_err(path, "query a capture buffer", e))?;
            // SAFETY: every field of the union is an integer or a raw pointer, so any bits
            // read as a u32; for memory-mapped buffers the driver set `offset`.
            let offset = unsafe { buf.m.offset };
            let buffer = MappedBuffer::map(self.fd(), buf.length as usize, offset)
                .map_err(|e| camera_err(path, "map a capture buffer", e))?;
            self.buffers.push(buffer);
        }
        for index in 0..count {
            self.queue(index)?;
        }
        self.stream(true)
            .map_err(|e| camera_err(path, "start streaming", e))?;
        self.streaming = true;
        log::info!("camera {}: streaming {}", path.display(), self.choice);
        Ok(())
    }

    /// `VIDIOC_REQBUFS` for memory-mapped capture buffers; returns how many were granted
    /// (0 releases them).
    fn request_buffers(&self, count: u32) -> io::Result<u32> {
        let mut req = v4l_sys::v4l2_requestbuffers {
            count,
            type_: v4l::buffer::Type::VideoCapture as u32,
            memory: v4l::memory::Memory::Mmap as u32,
            // SAFETY: v4l2_requestbuffers is integers only: all-zero is a valid value, and
            // the reserved fields must be zero.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: VIDIOC_REQBUFS is defined with a v4l2_requestbuffers.
        unsafe { self.ioctl(v4l2::vidioc::VIDIOC_REQBUFS, &mut req) }?;
        Ok(req.count)
    }

    /// `VIDIOC_STREAMON` (`on`) or `VIDIOC_STREAMOFF` for video capture.
    fn stream(&self, on: bool) -> io::Result<()> {
        let request = if on {
            v4l2::vidioc::VIDIOC_STREAMON
        } else {
            v4l2::vidioc::VIDIOC_STREAMOFF
        };
        let mut typ = v4l::buffer::Type::VideoCapture as u32;
        // SAFETY: both requests are defined with an int (the buffer type); u32 has its size.
        unsafe { self.ioctl(request, &mut typ) }
    }

    /// Hands buffer `index` (back) to the driver to fill.
    fn queue(&self, index: u32) -> Result<(), MediaError> {
        let mut buf = v4l_sys::v4l2_buffer {
            index,
            ..buffer_desc()
        };
        // SAFETY: VIDIOC_QBUF is defined with a v4l2_buffer.
        unsafe { self.ioctl(v4l2::vidioc::VIDIOC_QBUF, &mut buf) }
            .map_err(|e| camera_err(&self.path, "queue a capture buffer", e))
    }

    /// Dequeues one filled buffer: `Ok(None)` when none is ready (`EAGAIN`).
    fn dequeue(&self) -> io::Result<Option<(u32, usize, bool)>> {
        let mut buf = buffer_desc();
        // SAFETY: VIDIOC_DQBUF is defined with a v4l2_buffer.
        match unsafe { self.ioctl(v4l2::vidioc::VIDIOC_DQBUF, &mut buf) } {
            Ok(()) => {
                const ERROR_FLAG: u32 = 0x0040;
                Ok(Some((
                    buf.index,
                    buf.bytesused as usize,
                    buf.flags & ERROR_FLAG != 0,
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes every filled buffer the driver has and returns the newest as I420 (older ones
    /// are handed straight back: a late frame is worth less than the next). `Ok(None)` when
    /// nothing new arrived. An error means the device failed or disappeared; stop it.
    pub fn read_frame(&mut self) -> Result<Option<I420Frame>, MediaError> {
        if !self.streaming {
            return Ok(None);
        }
        let path = &self.path;
        let mut newest: Option<(u32, usize)> = None;
        loop {
            match self.dequeue() {
                Ok(Some((index, used, corrupt))) => {
                    if index as usize >= self.buffers.len() {
                        return Err(format_err(
                            path,
                            format!("the driver returned unknown buffer {index}"),
                        ));
                    }
                    if let Some((old, _)) = newest.take() {
                        self.queue(old)?;
                    }
                    if corrupt {
                        log::debug!("camera {}: dropped a corrupt frame", path.display());
                        self.queue(index)?;
                    } else {
                        newest = Some((index, used));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(camera_err(path, "dequeue a frame", e)),
            }
        }
        let Some((index, used)) = newest else {
            return Ok(None);
        };
        let buffer = &self.buffers[index as usize];
        // A driver that reports no size filled the whole buffer.
        let len = if used == 0 { buffer.len } else { used };
        // SAFETY: the buffer is dequeued; the slice is dropped with the conversion, before the
        // buffer is queued again below.
        let bytes = unsafe { buffer.bytes(len) };
        let c = self.choice;
        let converted = to_i420(c.format, bytes, c.width, c.height, self.stride);
        self.queue(index)?;
        match converted {
            Ok(frame) => Ok(Some(frame)),
            Err(e) => {
                // One bad frame (a torn JPEG) is not the end of the camera.
                log::debug!("camera {}: {e}", path.display());
                Ok(None)
            }
        }
    }

    /// Turns the stream off and releases the buffers. A device that is already gone is not
    /// an error here.
    pub fn stop(&mut self) {
        if self.streaming {
            if let Err(e) = self.stream(false) {
                log::debug!("camera {}: stream off: {e}", self.path.display());
            }
            self.streaming = false;
        }
        if !self.buffers.is_empty() {
            self.buffers.clear();
            if let Err(e) = self.request_buffers(0) {
                log::debug!("camera {}: release buffers: {e}", self.path.display());
            }
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(fourcc: &[u8; 4], width: u32, height: u32, fps: &[f64]) -> CaptureMode {
        CaptureMode {
            fourcc: *fourcc,
            width,
            height,
            fps: fps.to_vec(),
        }
    }

    fn want(width: u32, height: u32, fps: f64) -> CaptureRequest {
        CaptureRequest { width, height, fps }
    }

    /// What a common USB webcam (UVC) lists: raw YUYV is slow at large sizes, MJPEG is not.
    fn webcam() -> Vec<CaptureMode> {
        vec![
            mode(b"YUYV", 640, 480, &[30.0, 15.0]),
            mode(b"YUYV", 1280, 720, &[10.0, 5.0]),
            mode(b"YUYV", 320, 240, &[30.0]),
            mode(b"MJPG", 640, 480, &[30.0, 15.0]),
            mode(b"MJPG", 1280, 720, &[30.0, 15.0]),
            mode(b"MJPG", 1920, 1080, &[30.0]),
        ]
    }

    fn choice(format: PixelFormat, width: u32, height: u32, fps: f64) -> CaptureChoice {
        CaptureChoice {
            format,
            width,
            height,
            fps,
        }
    }

    #[test]
    fn webcam_raw_when_it_keeps_up_jpeg_when_it_does_not() {
        let m = webcam();
        assert_eq!(
            choose_mode(&m, want(640, 480, 30.0)),
            Ok(choice(PixelFormat::Yuyv, 640, 480, 30.0))
        );
        assert_eq!(
            choose_mode(&m, want(1280, 720, 30.0)),
            Ok(choice(PixelFormat::Mjpeg, 1280, 720, 30.0)),
            "YUYV only reaches 10 fps at 720p"
        );
        assert_eq!(
            choose_mode(&m, want(1280, 720, 10.0)),
            Ok(choice(PixelFormat::Yuyv, 1280, 720, 10.0)),
            "at 10 fps the raw mode is enough"
        );
        assert_eq!(
            choose_mode(&m, want(640, 480, 15.0)),
            Ok(choice(PixelFormat::Yuyv, 640, 480, 15.0)),
            "the lowest rate that reaches the request"
        );
    }

    #[test]
    fn missing_sizes_take_the_smallest_cover_or_else_the_largest() {
        let m = webcam();
        // 800x600 is not offered: 1280x720 covers it (and is scaled down later).
        assert_eq!(
            choose_mode(&m, want(800, 600, 30.0)),
            Ok(choice(PixelFormat::Mjpeg, 1280, 720, 30.0))
        );
        // Nothing covers 4K: the largest there is.
        assert_eq!(
            choose_mode(&m, want(3840, 2160, 30.0)),
            Ok(choice(PixelFormat::Mjpeg, 1920, 1080, 30.0))
        );
    }

    #[test]
    fn nv12_and_yu12_beat_yuyv_and_29_97_counts_as_30() {
        let m = vec![
            mode(b"YUYV", 640, 480, &[30.0]),
            mode(b"NV12", 640, 480, &[29.97]),
        ];
        assert_eq!(
            choose_mode(&m, want(640, 480, 30.0)),
            Ok(choice(PixelFormat::Nv12, 640, 480, 29.97))
        );
        let m = vec![
            mode(b"NV12", 640, 480, &[30.0]),
            mode(b"YU12", 640, 480, &[30.0]),
        ];
        assert_eq!(
            choose_mode(&m, want(640, 480, 30.0)).unwrap().format,
            PixelFormat::I420
        );
    }

    #[test]
    fn mjpeg_only_devices_are_used() {
        let m = vec![mode(b"MJPG", 1280, 720, &[30.0])];
        assert_eq!(
            choose_mode(&m, want(640, 480, 30.0)),
            Ok(choice(PixelFormat::Mjpeg, 1280, 720, 30.0))
        );
    }

    #[test]
    fn too_slow_devices_give_their_fastest_rate() {
        let m = vec![mode(b"YUYV", 640, 480, &[5.0, 15.0, 10.0])];
        assert_eq!(choose_mode(&m, want(640, 480, 30.0)).unwrap().fps, 15.0);
        // No intervals listed: the request is passed on and the driver decides.
        let m = vec![mode(b"YUYV", 640, 480, &[])];
        assert_eq!(choose_mode(&m, want(640, 480, 25.0)).unwrap().fps, 25.0);
    }

    #[test]
    fn unusable_devices_are_an_error_naming_what_they_offer() {
        let m = vec![
            mode(b"H264", 1280, 720, &[30.0]),
            mode(b"GREY", 640, 480, &[30.0]),
        ];
        let e = choose_mode(&m, want(640, 480, 30.0)).unwrap_err();
        assert!(e.contains("H264") && e.contains("GREY"), "{e}");
        let e = choose_mode(&[], want(640, 480, 30.0)).unwrap_err();
        assert!(e.contains("nothing"), "{e}");
    }

    #[test]
    fn odd_sizes_are_rounded_down_to_even() {
        let m = vec![mode(b"YUYV", 641, 481, &[30.0])];
        let c = choose_mode(&m, want(640, 480, 30.0)).unwrap();
        assert_eq!((c.width, c.height), (640, 480));
    }

    #[test]
    fn a_missing_device_is_a_clear_error_naming_it() {
        let path = Path::new("/dev/video-does-not-exist");
        let e = Camera::open(path, want(640, 480, 30.0))
            .err()
            .expect("no such device")
            .to_string();
        assert!(e.contains("/dev/video-does-not-exist"), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_camera_is_refused() {
        let e = Camera::open(Path::new("/dev/null"), want(640, 480, 30.0))
            .err()
            .expect("/dev/null is no camera")
            .to_string();
        assert!(e.contains("/dev/null") && e.contains("V4L2"), "{e}");
    }

    #[test]
    fn device_listing_shows_formats_sizes_and_rates() {
        let info = DeviceInfo {
            path: PathBuf::from("/dev/video0"),
            card: "Test Cam".into(),
            driver: "uvcvideo".into(),
            bus: "usb-1".into(),
            can_capture: true,
            modes: vec![
                mode(b"YUYV", 640, 480, &[30.0, 15.0]),
                mode(b"H264", 1280, 720, &[29.97]),
            ],
        };
        let text = info.to_string();
        assert!(
            text.contains("/dev/video0: \"Test Cam\" (driver uvcvideo"),
            "{text}"
        );
        assert!(text.contains("YUYV:\n    640x480 @ 30, 15 fps"), "{text}");
        assert!(text.contains("H264 (not usable here)"), "{text}");
        assert!(text.contains("29.97"), "{text}");
    }
}
