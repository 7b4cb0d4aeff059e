/*
 * fake_v4l2: a userspace V4L2 capture device for tests, loaded with LD_PRELOAD.
 *
 * Opening the path in FAKE_V4L2_PATH (e.g. /dev/video-fake) returns a non-blocking
 * CLOCK_MONOTONIC timerfd instead of a device node. The timer is armed at the frame rate
 * on VIDIOC_STREAMON, so a poller (epoll) sees the descriptor become readable once per
 * frame, as it would a real camera's. The V4L2 ioctls a memory-mapped capture uses are
 * answered here; VIDIOC_DQBUF reads the timer and, for each expiration, fills the oldest
 * queued buffer with a picture of four vertical colour bars.
 *
 * Environment:
 *   FAKE_V4L2_PATH        the path that opens the fake camera (nothing is faked without it)
 *   FAKE_V4L2_FORMATS     formats offered, comma separated: YUYV, NV12 (default YUYV)
 *   FAKE_V4L2_FRAMES=N    after N frames the camera is "unplugged": DQBUF (and every other
 *                         ioctl) fails with ENODEV
 *   FAKE_V4L2_STRIDE_PAD  extra bytes at the end of each row (bytesperline > the minimum)
 *
 * Sizes offered for each format: 640x480 and 320x240, at 30 or 15 fps.
 *
 * Bars, left to right, BT.601 studio-range 100% colours (Y, Cb, Cr):
 *   red (81, 90, 240), green (145, 54, 34), blue (41, 240, 110), yellow (210, 16, 146).
 *
 * Interposed: open, open64, openat, openat64, close, ioctl, mmap, mmap64, munmap, and
 * syscall(). The last one matters: the `v4l` crate issues its ioctls as
 * syscall(SYS_ioctl, fd, request, arg) rather than through ioctl(), so an ioctl() hook
 * alone never sees them. Everything not aimed at a fake descriptor is forwarded to the
 * next definition (dlsym(RTLD_NEXT, ...)).
 *
 * Written from the V4L2 API documentation and <linux/videodev2.h> for this project.
 */

/* Fortified glibc headers define inline wrappers for open(); we define the real symbols. */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

#define MAX_DEVICES 8
#define MAX_BUFFERS 8
#define MAX_FORMATS 2
#define NSIZES 2
#define NRATES 2

static const struct {
    uint32_t width, height;
} sizes[NSIZES] = {{640, 480}, {320, 240}};

/* Frame rates offered at every size, fastest first. */
static const uint32_t rates[NRATES] = {30, 15};

/* The bars: Y, Cb, Cr. */
static const uint8_t bars[4][3] = {
    {81, 90, 240},  /* red */
    {145, 54, 34},  /* green */
    {41, 240, 110}, /* blue */
    {210, 16, 146}, /* yellow */
};

/* ---- the real functions ------------------------------------------------------------- */

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*close_fn)(int);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef long (*syscall_fn)(long, ...);

static open_fn real_open, real_open64;
static openat_fn real_openat, real_openat64;
static close_fn real_close;
static ioctl_fn real_ioctl;
static mmap_fn real_mmap, real_mmap64;
static munmap_fn real_munmap;
static syscall_fn real_syscall;

static void *next_symbol(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        fprintf(stderr, "fake_v4l2: no next definition of %s\n", name);
        abort();
    }
    return p;
}

/* Resolved lazily as well as in the constructor: another library's constructor may call
 * in before ours has run. */
static void *resolve(void **slot, const char *name)
{
    if (!*slot)
        *slot = next_symbol(name);
    return *slot;
}

#define REAL(var, name) ((__typeof__(var))resolve((void **)&(var), name))

__attribute__((constructor)) static void fake_v4l2_init(void)
{
    REAL(real_open, "open");
    REAL(real_open64, "open64");
    REAL(real_openat, "openat");
    REAL(real_openat64, "openat64");
    REAL(real_close, "close");
    REAL(real_ioctl, "ioctl");
    REAL(real_mmap, "mmap");
    REAL(real_mmap64, "mmap64");
    REAL(real_munmap, "munmap");
    REAL(real_syscall, "syscall");
}

/* ---- the fake device ---------------------------------------------------------------- */

enum buf_state { BUF_USER, BUF_QUEUED, BUF_DONE };

struct buffer {
    uint8_t *mem;
    enum buf_state state;
    uint64_t order; /* when it was queued (or filled), for FIFO order */
    uint32_t bytesused;
    uint32_t sequence;
    struct timeval timestamp;
    int mapped; /* mmap()s not yet munmap()ed */
};

struct device {
    int fd; /* the timerfd; -1 when the slot is free */
    uint32_t formats[MAX_FORMATS];
    int nformats;
    uint32_t stride_pad;
    long frame_limit; /* 0: unlimited */
    /* the current format */
    uint32_t pixelformat, width, height, bytesperline, sizeimage;
    uint32_t fps;
    /* buffers */
    struct buffer bufs[MAX_BUFFERS];
    uint32_t nbufs;
    size_t buf_span; /* sizeimage rounded up to pages: offset of buffer i = i * buf_span */
    uint64_t order;
    int streaming;
    uint32_t sequence;
    long produced;
    int gone;
    uint8_t *picture; /* one rendered frame of the current format */
};

static struct device devices[MAX_DEVICES];
static int devices_init;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void init_devices_locked(void)
{
    if (devices_init)
        return;
    for (int i = 0; i < MAX_DEVICES; i++)
        devices[i].fd = -1;
    devices_init = 1;
}

/* Called with the lock held. */
static struct device *find_device(int fd)
{
    if (fd < 0)
        return NULL;
    init_devices_locked();
    for (int i = 0; i < MAX_DEVICES; i++)
        if (devices[i].fd == fd)
            return &devices[i];
    return NULL;
}

static int page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (int)p : 4096;
}

static int format_offered(const struct device *d, uint32_t pixelformat)
{
    for (int i = 0; i < d->nformats; i++)
        if (d->formats[i] == pixelformat)
            return 1;
    return 0;
}

static void layout(uint32_t pixelformat, uint32_t width, uint32_t height, uint32_t pad,
                   uint32_t *bytesperline, uint32_t *sizeimage)
{
    if (pixelformat == V4L2_PIX_FMT_NV12) {
        *bytesperline = width + pad;
        *sizeimage = *bytesperline * height * 3 / 2;
    } else {
        *bytesperline = width * 2 + pad;
        *sizeimage = *bytesperline * height;
    }
}

/* Draws the bars into d->picture for the current format. Row padding is left as 0, so a
 * reader that ignores bytesperline sees a sheared picture. */
static int render_picture(struct device *d)
{
    free(d->picture);
    d->picture = calloc(1, d->sizeimage);
    if (!d->picture)
        return -1;
    uint32_t w = d->width, h = d->height, bpl = d->bytesperline;
    if (d->pixelformat == V4L2_PIX_FMT_NV12) {
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x++)
                d->picture[y * bpl + x] = bars[x * 4 / w][0];
        uint8_t *uv = d->picture + (size_t)bpl * h;
        for (uint32_t y = 0; y < h / 2; y++)
            for (uint32_t x = 0; x < w / 2; x++) {
                const uint8_t *c = bars[(2 * x) * 4 / w];
                uv[y * bpl + 2 * x] = c[1];
                uv[y * bpl + 2 * x + 1] = c[2];
            }
    } else {
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x += 2) {
                const uint8_t *c = bars[x * 4 / w];
                uint8_t *p = d->picture + (size_t)y * bpl + 2 * x;
                p[0] = c[0];
                p[1] = c[1];
                p[2] = bars[(x + 1) * 4 / w][0];
                p[3] = c[2];
            }
    }
    return 0;
}

/* Picks the offered size nearest to the request (exact if offered). */
static void nearest_size(uint32_t *width, uint32_t *height)
{
    int best = 0;
    uint64_t best_cost = UINT64_MAX;
    for (int i = 0; i < NSIZES; i++) {
        int64_t dw = (int64_t)sizes[i].width - *width, dh = (int64_t)sizes[i].height - *height;
        uint64_t cost = (uint64_t)(dw * dw + dh * dh);
        if (cost < best_cost) {
            best_cost = cost;
            best = i;
        }
    }
    *width = sizes[best].width;
    *height = sizes[best].height;
}

static void fill_pix(const struct device *d, struct v4l2_pix_format *pix, uint32_t pixelformat,
                     uint32_t width, uint32_t height)
{
    memset(pix, 0, sizeof(*pix));
    pix->width = width;
    pix->height = height;
    pix->pixelformat = pixelformat;
    pix->field = V4L2_FIELD_NONE;
    layout(pixelformat, width, height, d->stride_pad, &pix->bytesperline, &pix->sizeimage);
    pix->colorspace = V4L2_COLORSPACE_SMPTE170M;
    pix->ycbcr_enc = V4L2_YCBCR_ENC_601;
    pix->quantization = V4L2_QUANTIZATION_LIM_RANGE;
    pix->xfer_func = V4L2_XFER_FUNC_709;
}

static void free_buffers(struct device *d)
{
    for (uint32_t i = 0; i < d->nbufs; i++) {
        if (d->bufs[i].mem)
            REAL(real_munmap, "munmap")(d->bufs[i].mem, d->buf_span);
    }
    memset(d->bufs, 0, sizeof(d->bufs));
    d->nbufs = 0;
    d->buf_span = 0;
}

static int any_mapped(const struct device *d)
{
    for (uint32_t i = 0; i < d->nbufs; i++)
        if (d->bufs[i].mapped > 0)
            return 1;
    return 0;
}

static void set_timer(struct device *d, int on)
{
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (on) {
        long period = 1000000000L / (long)(d->fps ? d->fps : 30);
        its.it_interval.tv_nsec = period;
        its.it_value.tv_nsec = period;
    }
    timerfd_settime(d->fd, 0, &its, NULL);
}

/* Expirations since the last read (0 if none). */
static uint64_t read_timer(struct device *d)
{
    uint64_t n = 0;
    if (read(d->fd, &n, sizeof(n)) != (ssize_t)sizeof(n))
        return 0;
    return n;
}

static void describe_buffer(const struct device *d, uint32_t i, struct v4l2_buffer *b)
{
    const struct buffer *buf = &d->bufs[i];
    uint32_t index = i;
    memset(b, 0, sizeof(*b));
    b->index = index;
    b->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    b->memory = V4L2_MEMORY_MMAP;
    b->length = d->sizeimage;
    b->m.offset = (uint32_t)(index * d->buf_span);
    b->field = V4L2_FIELD_NONE;
    b->flags = V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | V4L2_BUF_FLAG_TSTAMP_SRC_EOF;
    if (buf->mapped > 0)
        b->flags |= V4L2_BUF_FLAG_MAPPED;
    if (buf->state == BUF_QUEUED)
        b->flags |= V4L2_BUF_FLAG_QUEUED;
    if (buf->state == BUF_DONE)
        b->flags |= V4L2_BUF_FLAG_DONE;
    b->bytesused = buf->bytesused;
    b->sequence = buf->sequence;
    b->timestamp = buf->timestamp;
}

/* The oldest buffer in `state`, or -1. */
static int oldest(const struct device *d, enum buf_state state)
{
    int best = -1;
    for (uint32_t i = 0; i < d->nbufs; i++)
        if (d->bufs[i].state == state && (best < 0 || d->bufs[i].order < d->bufs[best].order))
            best = (int)i;
    return best;
}

/* One frame "arrives": into the oldest queued buffer, or dropped if none is queued. */
static void produce_frame(struct device *d)
{
    uint32_t seq = d->sequence++;
    int i = oldest(d, BUF_QUEUED);
    if (i < 0)
        return;
    struct buffer *b = &d->bufs[i];
    memcpy(b->mem, d->picture, d->sizeimage);
    b->bytesused = d->sizeimage;
    b->sequence = seq;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    b->timestamp.tv_sec = ts.tv_sec;
    b->timestamp.tv_usec = ts.tv_nsec / 1000;
    b->state = BUF_DONE;
    b->order = d->order++;
}

static int check_buf_type(const struct v4l2_buffer *b)
{
    return b->type == V4L2_BUF_TYPE_VIDEO_CAPTURE && b->memory == V4L2_MEMORY_MMAP;
}

/* Returns 0 or a positive errno. Called with the lock held. */
static int device_ioctl(struct device *d, unsigned long request, void *arg)
{
    if (d->gone)
        return ENODEV;
    if (!arg)
        return EFAULT;

    switch (request) {
    case VIDIOC_QUERYCAP: {
        struct v4l2_capability *cap = arg;
        memset(cap, 0, sizeof(*cap));
        snprintf((char *)cap->driver, sizeof(cap->driver), "fake_v4l2");
        snprintf((char *)cap->card, sizeof(cap->card), "Fake Camera");
        snprintf((char *)cap->bus_info, sizeof(cap->bus_info), "platform:fake_v4l2");
        cap->version = (6u << 16) | (1u << 8);
        cap->device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        cap->capabilities = cap->device_caps | V4L2_CAP_DEVICE_CAPS;
        return 0;
    }
    case VIDIOC_ENUM_FMT: {
        struct v4l2_fmtdesc *f = arg;
        if (f->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || f->index >= (uint32_t)d->nformats)
            return EINVAL;
        uint32_t index = f->index, type = f->type;
        memset(f, 0, sizeof(*f));
        f->index = index;
        f->type = type;
        f->pixelformat = d->formats[index];
        snprintf((char *)f->description, sizeof(f->description), "%s",
                 f->pixelformat == V4L2_PIX_FMT_NV12 ? "Y/UV 4:2:0" : "YUYV 4:2:2");
        return 0;
    }
    case VIDIOC_ENUM_FRAMESIZES: {
        struct v4l2_frmsizeenum *s = arg;
        if (!format_offered(d, s->pixel_format) || s->index >= NSIZES)
            return EINVAL;
        s->type = V4L2_FRMSIZE_TYPE_DISCRETE;
        s->discrete.width = sizes[s->index].width;
        s->discrete.height = sizes[s->index].height;
        memset(s->reserved, 0, sizeof(s->reserved));
        return 0;
    }
    case VIDIOC_ENUM_FRAMEINTERVALS: {
        struct v4l2_frmivalenum *iv = arg;
        int size_ok = 0;
        for (int i = 0; i < NSIZES; i++)
            if (sizes[i].width == iv->width && sizes[i].height == iv->height)
                size_ok = 1;
        if (!format_offered(d, iv->pixel_format) || !size_ok || iv->index >= NRATES)
            return EINVAL;
        iv->type = V4L2_FRMIVAL_TYPE_DISCRETE;
        iv->discrete.numerator = 1;
        iv->discrete.denominator = rates[iv->index];
        memset(iv->reserved, 0, sizeof(iv->reserved));
        return 0;
    }
    case VIDIOC_G_FMT: {
        struct v4l2_format *f = arg;
        if (f->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return EINVAL;
        fill_pix(d, &f->fmt.pix, d->pixelformat, d->width, d->height);
        return 0;
    }
    case VIDIOC_TRY_FMT:
    case VIDIOC_S_FMT: {
        struct v4l2_format *f = arg;
        if (f->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return EINVAL;
        /* As drivers do: an unknown format or size is adjusted, not refused. */
        uint32_t pf = format_offered(d, f->fmt.pix.pixelformat) ? f->fmt.pix.pixelformat
                                                                 : d->formats[0];
        uint32_t w = f->fmt.pix.width, h = f->fmt.pix.height;
        nearest_size(&w, &h);
        fill_pix(d, &f->fmt.pix, pf, w, h);
        if (request == VIDIOC_TRY_FMT)
            return 0;
        if (d->nbufs > 0 || d->streaming)
            return EBUSY;
        d->pixelformat = pf;
        d->width = w;
        d->height = h;
        d->bytesperline = f->fmt.pix.bytesperline;
        d->sizeimage = f->fmt.pix.sizeimage;
        return render_picture(d) ? ENOMEM : 0;
    }
    case VIDIOC_G_PARM:
    case VIDIOC_S_PARM: {
        struct v4l2_streamparm *p = arg;
        if (p->type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return EINVAL;
        if (request == VIDIOC_S_PARM) {
            struct v4l2_fract t = p->parm.capture.timeperframe;
            if (t.numerator > 0 && t.denominator > 0) {
                double want = (double)t.denominator / t.numerator, best_diff = 1e300;
                for (int i = 0; i < NRATES; i++) {
                    double diff = want > rates[i] ? want - rates[i] : rates[i] - want;
                    if (diff < best_diff) {
                        best_diff = diff;
                        d->fps = rates[i];
                    }
                }
                if (d->streaming)
                    set_timer(d, 1);
            }
        }
        memset(&p->parm, 0, sizeof(p->parm));
        p->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
        p->parm.capture.timeperframe.numerator = 1;
        p->parm.capture.timeperframe.denominator = d->fps;
        return 0;
    }
    case VIDIOC_REQBUFS: {
        struct v4l2_requestbuffers *r = arg;
        if (r->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || r->memory != V4L2_MEMORY_MMAP)
            return EINVAL;
        /* As videobuf2: no reallocation while streaming or while buffers are mapped. */
        if (d->streaming || any_mapped(d))
            return EBUSY;
        free_buffers(d);
        uint32_t count = r->count;
        if (count > MAX_BUFFERS)
            count = MAX_BUFFERS;
        if (count > 0) {
            size_t page = (size_t)page_size();
            d->buf_span = (d->sizeimage + page - 1) / page * page;
            for (uint32_t i = 0; i < count; i++) {
                void *m = REAL(real_mmap, "mmap")(NULL, d->buf_span, PROT_READ | PROT_WRITE,
                                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED) {
                    free_buffers(d);
                    return ENOMEM;
                }
                d->bufs[i].mem = m;
                d->bufs[i].state = BUF_USER;
                d->nbufs = i + 1;
            }
        }
        r->count = d->nbufs;
#ifdef V4L2_BUF_CAP_SUPPORTS_MMAP
        r->capabilities = V4L2_BUF_CAP_SUPPORTS_MMAP;
#endif
        return 0;
    }
    case VIDIOC_QUERYBUF: {
        struct v4l2_buffer *b = arg;
        if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->index >= d->nbufs)
            return EINVAL;
        describe_buffer(d, b->index, b);
        return 0;
    }
    case VIDIOC_QBUF: {
        struct v4l2_buffer *b = arg;
        if (!check_buf_type(b) || b->index >= d->nbufs)
            return EINVAL;
        struct buffer *buf = &d->bufs[b->index];
        if (buf->state != BUF_USER)
            return EINVAL;
        buf->state = BUF_QUEUED;
        buf->order = d->order++;
        buf->bytesused = 0;
        describe_buffer(d, b->index, b);
        return 0;
    }
    case VIDIOC_DQBUF: {
        struct v4l2_buffer *b = arg;
        if (!check_buf_type(b))
            return EINVAL;
        if (!d->streaming)
            return EINVAL;
        for (uint64_t n = read_timer(d); n > 0; n--) {
            if (d->frame_limit > 0 && d->produced >= d->frame_limit) {
                d->gone = 1;
                fprintf(stderr, "fake_v4l2: camera unplugged after %ld frames\n", d->produced);
                return ENODEV;
            }
            d->produced++;
            produce_frame(d);
        }
        int i = oldest(d, BUF_DONE);
        if (i < 0)
            return EAGAIN;
        d->bufs[i].state = BUF_USER;
        describe_buffer(d, (uint32_t)i, b);
        return 0;
    }
    case VIDIOC_STREAMON: {
        int *type = arg;
        if (*type != V4L2_BUF_TYPE_VIDEO_CAPTURE || d->nbufs == 0)
            return EINVAL;
        if (!d->streaming) {
            d->streaming = 1;
            d->sequence = 0;
            read_timer(d);
            set_timer(d, 1);
        }
        return 0;
    }
    case VIDIOC_STREAMOFF: {
        int *type = arg;
        if (*type != V4L2_BUF_TYPE_VIDEO_CAPTURE)
            return EINVAL;
        /* As videobuf2: every buffer goes back to the application, filled or not. */
        d->streaming = 0;
        set_timer(d, 0);
        read_timer(d);
        for (uint32_t i = 0; i < d->nbufs; i++)
            d->bufs[i].state = BUF_USER;
        return 0;
    }
    default:
        return EINVAL;
    }
}

/* ---- entry points ------------------------------------------------------------------- */

static const char *fake_path(void)
{
    const char *p = getenv("FAKE_V4L2_PATH");
    return p && *p ? p : NULL;
}

static int is_fake_path(const char *path)
{
    const char *p = fake_path();
    return p && path && strcmp(path, p) == 0;
}

static uint32_t parse_formats(uint32_t *out)
{
    const char *env = getenv("FAKE_V4L2_FORMATS");
    int n = 0;
    if (!env || !*env)
        env = "YUYV";
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ", ", &save); tok && n < MAX_FORMATS;
         tok = strtok_r(NULL, ", ", &save)) {
        uint32_t code;
        if (strcmp(tok, "YUYV") == 0)
            code = V4L2_PIX_FMT_YUYV;
        else if (strcmp(tok, "NV12") == 0)
            code = V4L2_PIX_FMT_NV12;
        else {
            fprintf(stderr, "fake_v4l2: FAKE_V4L2_FORMATS: unknown format %s\n", tok);
            continue;
        }
        int dup = 0;
        for (int i = 0; i < n; i++)
            dup |= out[i] == code;
        if (!dup)
            out[n++] = code;
    }
    return (uint32_t)n;
}

static int fake_open(const char *path, int flags)
{
    (void)flags; /* always non-blocking: DQBUF answers EAGAIN rather than wait */
    uint32_t formats[MAX_FORMATS];
    uint32_t nformats = parse_formats(formats);
    if (nformats == 0) {
        errno = ENODEV;
        return -1;
    }
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&lock);
    init_devices_locked();
    struct device *d = NULL;
    for (int i = 0; i < MAX_DEVICES; i++)
        if (devices[i].fd < 0) {
            d = &devices[i];
            break;
        }
    if (!d) {
        pthread_mutex_unlock(&lock);
        REAL(real_close, "close")(fd);
        errno = EMFILE;
        return -1;
    }
    memset(d, 0, sizeof(*d));
    d->fd = fd;
    memcpy(d->formats, formats, sizeof(formats));
    d->nformats = (int)nformats;
    const char *pad = getenv("FAKE_V4L2_STRIDE_PAD");
    d->stride_pad = pad ? (uint32_t)strtoul(pad, NULL, 10) & ~1u : 0;
    const char *limit = getenv("FAKE_V4L2_FRAMES");
    d->frame_limit = limit ? strtol(limit, NULL, 10) : 0;
    d->fps = rates[0];
    d->pixelformat = formats[0];
    d->width = sizes[0].width;
    d->height = sizes[0].height;
    layout(d->pixelformat, d->width, d->height, d->stride_pad, &d->bytesperline, &d->sizeimage);
    int failed = render_picture(d);
    if (failed)
        d->fd = -1;
    pthread_mutex_unlock(&lock);
    if (failed) {
        REAL(real_close, "close")(fd);
        errno = ENOMEM;
        return -1;
    }
    fprintf(stderr, "fake_v4l2: %s opened as fd %d\n", path, fd);
    return fd;
}

/* Returns 1 and sets *ret if fd was a fake device (now closed). */
static int fake_close(int fd, int *ret)
{
    pthread_mutex_lock(&lock);
    struct device *d = find_device(fd);
    if (!d) {
        pthread_mutex_unlock(&lock);
        return 0;
    }
    /* Mappings outlive the descriptor, as with a real device: leak mapped buffers. */
    if (!any_mapped(d))
        free_buffers(d);
    free(d->picture);
    d->picture = NULL;
    d->fd = -1;
    pthread_mutex_unlock(&lock);
    *ret = REAL(real_close, "close")(fd);
    return 1;
}

/* Returns 1 and sets *ret (0 or -1 with errno) if fd was a fake device. */
static int fake_ioctl(int fd, unsigned long request, void *arg, int *ret)
{
    pthread_mutex_lock(&lock);
    struct device *d = find_device(fd);
    if (!d) {
        pthread_mutex_unlock(&lock);
        return 0;
    }
    int err = device_ioctl(d, request, arg);
    pthread_mutex_unlock(&lock);
    if (err) {
        errno = err;
        *ret = -1;
    } else {
        *ret = 0;
    }
    return 1;
}

/* Returns 1 and sets *ret if fd was a fake device. */
static int fake_mmap(size_t length, int fd, off_t offset, void **ret)
{
    pthread_mutex_lock(&lock);
    struct device *d = find_device(fd);
    if (!d) {
        pthread_mutex_unlock(&lock);
        return 0;
    }
    int err = 0;
    *ret = MAP_FAILED;
    if (d->gone) {
        err = ENODEV;
    } else if (d->buf_span == 0 || offset < 0 || (size_t)offset % d->buf_span != 0 ||
               (size_t)offset / d->buf_span >= d->nbufs || length == 0 ||
               length > d->buf_span) {
        err = EINVAL;
    } else {
        struct buffer *b = &d->bufs[(size_t)offset / d->buf_span];
        b->mapped++;
        *ret = b->mem;
    }
    pthread_mutex_unlock(&lock);
    if (err)
        errno = err;
    return 1;
}

/* Returns 1 if addr is a fake buffer (the "unmapping" is a no-op). */
static int fake_munmap(void *addr)
{
    if (!addr)
        return 0;
    int found = 0;
    pthread_mutex_lock(&lock);
    init_devices_locked();
    for (int i = 0; i < MAX_DEVICES && !found; i++) {
        struct device *d = &devices[i];
        if (d->fd < 0)
            continue;
        for (uint32_t j = 0; j < d->nbufs; j++)
            if (d->bufs[j].mem == addr) {
                if (d->bufs[j].mapped > 0)
                    d->bufs[j].mapped--;
                found = 1;
                break;
            }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

static mode_t open_mode(int flags, va_list ap)
{
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
        return (mode_t)va_arg(ap, int);
    return 0;
}

EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    if (is_fake_path(path))
        return fake_open(path, flags);
    return REAL(real_open, "open")(path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    if (is_fake_path(path))
        return fake_open(path, flags);
    return REAL(real_open64, "open64")(path, flags, mode);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    if (is_fake_path(path))
        return fake_open(path, flags);
    return REAL(real_openat, "openat")(dirfd, path, flags, mode);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = open_mode(flags, ap);
    va_end(ap);
    if (is_fake_path(path))
        return fake_open(path, flags);
    return REAL(real_openat64, "openat64")(dirfd, path, flags, mode);
}

EXPORT int close(int fd)
{
    int ret;
    if (fake_close(fd, &ret))
        return ret;
    return REAL(real_close, "close")(fd);
}

EXPORT int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int ret;
    if (fake_ioctl(fd, request, arg, &ret))
        return ret;
    return REAL(real_ioctl, "ioctl")(fd, request, arg);
}

EXPORT void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    void *ret;
    if (fd >= 0 && fake_mmap(length, fd, offset, &ret))
        return ret;
    return REAL(real_mmap, "mmap")(addr, length, prot, flags, fd, offset);
}

EXPORT void *mmap64(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
    void *ret;
    if (fd >= 0 && fake_mmap(length, fd, offset, &ret))
        return ret;
    return REAL(real_mmap64, "mmap64")(addr, length, prot, flags, fd, offset);
}

EXPORT int munmap(void *addr, size_t length)
{
    if (fake_munmap(addr))
        return 0;
    return REAL(real_munmap, "munmap")(addr, length);
}

/* The raw syscall() entry: the `v4l` crate's ioctls come through here. Six arguments are
 * read whatever the call passed, as the C library's own syscall() does. */
EXPORT long syscall(long number, ...)
{
    va_list ap;
    va_start(ap, number);
    long a0 = va_arg(ap, long), a1 = va_arg(ap, long), a2 = va_arg(ap, long);
    long a3 = va_arg(ap, long), a4 = va_arg(ap, long), a5 = va_arg(ap, long);
    va_end(ap);
    switch (number) {
    case SYS_ioctl: {
        int ret;
        if (fake_ioctl((int)a0, (unsigned long)a1, (void *)a2, &ret))
            return ret;
        break;
    }
    case SYS_close: {
        int ret;
        if (fake_close((int)a0, &ret))
            return ret;
        break;
    }
    case SYS_mmap: {
        void *ret;
        if ((int)a4 >= 0 && fake_mmap((size_t)a1, (int)a4, (off_t)a5, &ret))
            return (long)ret;
        break;
    }
    case SYS_munmap:
        if (fake_munmap((void *)a0))
            return 0;
        break;
#ifdef SYS_open
    case SYS_open:
        if (is_fake_path((const char *)a0))
            return fake_open((const char *)a0, (int)a1);
        break;
#endif
    case SYS_openat: {
        const char *path = (const char *)a1;
        if (is_fake_path(path))
            return fake_open(path, (int)a2);
        break;
    }
    default:
        break;
    }
    return REAL(real_syscall, "syscall")(number, a0, a1, a2, a3, a4, a5);
}
