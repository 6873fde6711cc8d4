/*
 * capture: a V4L2 MMAP capture client for the emulated board (and real ones).
 *
 * It walks the exact ioctl sequence that makes videobuf2-dma-contig allocate
 * and free its buffers, and prints one JSON object per line on stdout for each
 * step, with CmaTotal/CmaFree from /proc/meminfo and the vmstat CMA counters
 * read right after the step, so the host can line every step up with the
 * kernel's cma tracepoints.
 *
 * Usage:
 *   capture [--together] STREAM [--stream STREAM ...]
 *   STREAM := [--device PATH] [--width N] [--height N] [--format FOURCC]
 *             [--buffers N] [--frames N] [--label NAME] [--hold]
 *
 * Options before the first --stream describe the first stream. Streams run
 * one after the other (each one: set up, capture, tear down) unless:
 *   --hold      this stream keeps its buffers (mapped, allocated) after its
 *               frames until every stream has run; held streams are torn
 *               down at the end in reverse order.
 *   --together  every stream is set up first, frames are taken round-robin
 *               from all of them at once, then all are torn down in reverse.
 *
 * REQBUFS granting fewer buffers than asked is reported and is not fatal (the
 * stream goes on with what it got, or is skipped when it got none) so the CMA
 * events still line up. Any other ioctl failure prints an "error" event and
 * exits 1. Bad usage exits 2.
 *
 * Hand-written on purpose: it runs on a bare initramfs (busybox, no libv4l2,
 * no JSON library), so it is a single static C file with no dependencies.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_STREAMS 8
#define MAX_BUFFERS 32
#define DQBUF_TIMEOUT_MS 10000

struct stream {
	const char *device;
	const char *label;
	unsigned width, height;
	char fourcc[5];
	unsigned buffers, frames;
	int hold;

	int fd;
	unsigned granted;
	unsigned frames_done;
	int streaming;
	void *map[MAX_BUFFERS];
	size_t map_len[MAX_BUFFERS];
};

static struct timespec t0;

/* ---- JSON output ------------------------------------------------------ */

static char line[4096];
static size_t line_len;

static void out(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line + line_len, sizeof(line) - line_len, fmt, ap);
	va_end(ap);
	if (n > 0) {
		line_len += (size_t)n;
		if (line_len >= sizeof(line))
			line_len = sizeof(line) - 1;
	}
}

static void out_str(const char *key, const char *value)
{
	const unsigned char *p;

	out(",\"%s\":\"", key);
	for (p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\')
			out("\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			out("\\u%04x", *p);
		else
			out("%c", *p);
	}
	out("\"");
}

static void out_uint(const char *key, unsigned long value)
{
	out(",\"%s\":%lu", key, value);
}

static void begin(const char *event, const struct stream *s)
{
	struct timespec now;
	double t;

	clock_gettime(CLOCK_MONOTONIC, &now);
	t = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
	line_len = 0;
	out("{\"event\":\"%s\"", event);
	if (s)
		out_str("label", s->label);
	out(",\"t\":%.6f", t);
}

/* Reads "Key:   123 kB" from /proc/meminfo or "key 123" from /proc/vmstat. */
static long read_counter(const char *path, const char *key)
{
	char buf[256];
	size_t klen = strlen(key);
	long value = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		if (strncmp(buf, key, klen) == 0 && (buf[klen] == ':' || buf[klen] == ' ')) {
			value = strtol(buf + klen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return value;
}

static void finish(void)
{
	out(",\"cma_total_kb\":%ld", read_counter("/proc/meminfo", "CmaTotal"));
	out(",\"cma_free_kb\":%ld", read_counter("/proc/meminfo", "CmaFree"));
	out(",\"cma_alloc_success\":%ld", read_counter("/proc/vmstat", "cma_alloc_success"));
	out(",\"cma_alloc_fail\":%ld", read_counter("/proc/vmstat", "cma_alloc_fail"));
	out("}\n");
	fwrite(line, 1, line_len, stdout);
	fflush(stdout);
}

static void fourcc_text(__u32 v, char text[5])
{
	int i;

	for (i = 0; i < 4; i++) {
		char c = (char)((v >> (8 * i)) & 0xff);
		text[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
	}
	text[4] = '\0';
}

/* ---- ioctl steps ------------------------------------------------------ */

static int fatal_errno(const struct stream *s, const char *step, int err)
{
	begin("error", s);
	out_str("step", step);
	out_uint("errno", (unsigned long)err);
	out_str("strerror", strerror(err));
	out(",\"fatal\":true");
	finish();
	return 1;
}

static int xioctl(int fd, unsigned long request, void *arg)
{
	int r;

	do
		r = ioctl(fd, request, arg);
	while (r == -1 && errno == EINTR);
	return r;
}

static int open_and_format(struct stream *s)
{
	struct v4l2_capability cap;
	struct v4l2_format fmt;
	char text[5];

	s->fd = open(s->device, O_RDWR);
	if (s->fd < 0)
		return fatal_errno(s, "open", errno);
	begin("open", s);
	out_str("device", s->device);
	finish();

	memset(&cap, 0, sizeof(cap));
	if (xioctl(s->fd, VIDIOC_QUERYCAP, &cap))
		return fatal_errno(s, "querycap", errno);
	begin("querycap", s);
	out_str("driver", (const char *)cap.driver);
	out_str("card", (const char *)cap.card);
	out_str("bus_info", (const char *)cap.bus_info);
	out(",\"capabilities\":\"0x%08x\"", cap.device_caps);
	finish();
	if (!(cap.device_caps & V4L2_CAP_VIDEO_CAPTURE) || !(cap.device_caps & V4L2_CAP_STREAMING))
		return fatal_errno(s, "querycap", ENOTSUP);

	memset(&fmt, 0, sizeof(fmt));
	fmt.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	fmt.fmt.pix.width = s->width;
	fmt.fmt.pix.height = s->height;
	fmt.fmt.pix.pixelformat = v4l2_fourcc(s->fourcc[0], s->fourcc[1], s->fourcc[2], s->fourcc[3]);
	fmt.fmt.pix.field = V4L2_FIELD_ANY;
	if (xioctl(s->fd, VIDIOC_S_FMT, &fmt))
		return fatal_errno(s, "s_fmt", errno);
	fourcc_text(fmt.fmt.pix.pixelformat, text);
	begin("s_fmt", s);
	out_uint("width", fmt.fmt.pix.width);
	out_uint("height", fmt.fmt.pix.height);
	out_str("format", text);
	out_uint("bytesperline", fmt.fmt.pix.bytesperline);
	out_uint("sizeimage", fmt.fmt.pix.sizeimage);
	out_uint("asked_width", s->width);
	out_uint("asked_height", s->height);
	out_str("asked_format", s->fourcc);
	finish();
	return 0;
}

static int request_buffers(struct stream *s, unsigned count)
{
	struct v4l2_requestbuffers req;

	memset(&req, 0, sizeof(req));
	req.count = count;
	req.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	req.memory = V4L2_MEMORY_MMAP;
	if (xioctl(s->fd, VIDIOC_REQBUFS, &req)) {
		int err = errno;

		/* vb2 fails the whole call with ENOMEM when not even one buffer
		 * could be allocated: the same CMA shortage as a partial grant. */
		if (count && err == ENOMEM) {
			s->granted = 0;
			begin("reqbufs", s);
			out_uint("asked", count);
			out_uint("granted", 0);
			out_uint("errno", (unsigned long)err);
			out_str("strerror", strerror(err));
			finish();
			begin("shortfall", s);
			out_uint("asked", count);
			out_uint("granted", 0);
			out(",\"fatal\":false");
			finish();
			return 0;
		}
		return fatal_errno(s, "reqbufs", err);
	}
	begin("reqbufs", s);
	out_uint("asked", count);
	out_uint("granted", req.count);
	finish();
	if (count && req.count < count) {
		begin("shortfall", s);
		out_uint("asked", count);
		out_uint("granted", req.count);
		out(",\"fatal\":false");
		finish();
	}
	s->granted = count ? req.count : 0;
	if (s->granted > MAX_BUFFERS)
		return fatal_errno(s, "reqbufs", E2BIG);
	return 0;
}

/* A v4l2_buffer naming capture buffer "index" of an MMAP queue. */
static void mmap_buffer(struct v4l2_buffer *buf, unsigned index)
{
	memset(buf, 0, sizeof(*buf));
	buf->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
	buf->memory = V4L2_MEMORY_MMAP;
	buf->index = index;
}

static int map_and_queue(struct stream *s)
{
	unsigned i;

	for (i = 0; i < s->granted; i++) {
		struct v4l2_buffer buf;

		mmap_buffer(&buf, i);
		if (xioctl(s->fd, VIDIOC_QUERYBUF, &buf))
			return fatal_errno(s, "querybuf", errno);
		s->map[i] = mmap(NULL, buf.length, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, buf.m.offset);
		if (s->map[i] == MAP_FAILED) {
			s->map[i] = NULL;
			return fatal_errno(s, "mmap", errno);
		}
		s->map_len[i] = buf.length;
		begin("querybuf", s);
		out_uint("index", i);
		out_uint("length", buf.length);
		out(",\"offset\":\"0x%08x\"", buf.m.offset);
		finish();
	}
	for (i = 0; i < s->granted; i++) {
		struct v4l2_buffer buf;

		mmap_buffer(&buf, i);
		if (xioctl(s->fd, VIDIOC_QBUF, &buf))
			return fatal_errno(s, "qbuf", errno);
	}
	begin("qbuf_all", s);
	out_uint("count", s->granted);
	finish();
	return 0;
}

static int stream_on(struct stream *s)
{
	enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;

	if (xioctl(s->fd, VIDIOC_STREAMON, &type))
		return fatal_errno(s, "streamon", errno);
	s->streaming = 1;
	begin("streamon", s);
	finish();
	return 0;
}

static int one_frame(struct stream *s)
{
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
	struct v4l2_buffer buf;
	int r;

	do
		r = poll(&pfd, 1, DQBUF_TIMEOUT_MS);
	while (r == -1 && errno == EINTR);
	if (r == 0)
		return fatal_errno(s, "dqbuf", ETIMEDOUT);
	if (r < 0)
		return fatal_errno(s, "dqbuf", errno);
	mmap_buffer(&buf, 0); /* DQBUF fills in the index */
	if (xioctl(s->fd, VIDIOC_DQBUF, &buf))
		return fatal_errno(s, "dqbuf", errno);
	begin("frame", s);
	out_uint("index", buf.index);
	out_uint("sequence", buf.sequence);
	out_uint("bytesused", buf.bytesused);
	finish();
	s->frames_done++;
	if (xioctl(s->fd, VIDIOC_QBUF, &buf))
		return fatal_errno(s, "qbuf", errno);
	return 0;
}

static int stop(struct stream *s)
{
	enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;

	if (!s->streaming)
		return 0;
	if (xioctl(s->fd, VIDIOC_STREAMOFF, &type))
		return fatal_errno(s, "streamoff", errno);
	s->streaming = 0;
	begin("streamoff", s);
	out_uint("frames", s->frames_done);
	finish();
	return 0;
}

/* STREAMOFF if still streaming, unmap, REQBUFS 0, close. */
static int teardown(struct stream *s)
{
	unsigned i;

	if (s->fd < 0)
		return 0;
	if (stop(s))
		return 1;
	for (i = 0; i < s->granted; i++) {
		if (s->map[i])
			munmap(s->map[i], s->map_len[i]);
		s->map[i] = NULL;
	}
	if (s->granted) {
		begin("munmap", s);
		out_uint("count", s->granted);
		finish();
	}
	/* REQBUFS 0 is what frees the buffers (back to CMA) once unmapped. */
	if (request_buffers(s, 0))
		return 1;
	close(s->fd);
	s->fd = -1;
	begin("close", s);
	finish();
	return 0;
}

/* Everything up to and including STREAMON; a stream granted 0 buffers stops
 * after REQBUFS (nothing to stream) and is only closed at teardown. */
static int setup(struct stream *s)
{
	if (open_and_format(s) || request_buffers(s, s->buffers))
		return 1;
	if (!s->granted)
		return 0;
	if (map_and_queue(s) || stream_on(s))
		return 1;
	return 0;
}

/* ---- command line ----------------------------------------------------- */

static int usage(const char *why)
{
	begin("error", NULL);
	out_str("step", "usage");
	out_str("strerror", why);
	out(",\"fatal\":true");
	finish();
	fprintf(stderr,
		"usage: capture [--together] [--device PATH] [--width N] [--height N]\n"
		"               [--format FOURCC] [--buffers N] [--frames N] [--label NAME]\n"
		"               [--hold] [--stream ...]...\n");
	return 2;
}

static int parse_uint(const char *text, unsigned *value)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 0);
	if (errno || *end || end == text || v > 1000000)
		return -1;
	*value = (unsigned)v;
	return 0;
}

static void stream_defaults(struct stream *s, unsigned index)
{
	static char labels[MAX_STREAMS][8];

	memset(s, 0, sizeof(*s));
	s->device = "/dev/video0";
	snprintf(labels[index], sizeof(labels[index]), "s%u", index);
	s->label = labels[index];
	s->width = 1920;
	s->height = 1080;
	memcpy(s->fourcc, "YUYV", 5);
	s->buffers = 4;
	s->frames = 5;
	s->fd = -1;
}

int main(int argc, char **argv)
{
	struct stream streams[MAX_STREAMS];
	unsigned nstreams = 1, i, round;
	int together = 0, started = 0, a;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	stream_defaults(&streams[0], 0);
	for (a = 1; a < argc; a++) {
		const char *opt = argv[a];
		struct stream *s = &streams[nstreams - 1];
		const char *val = NULL;

		if (!strcmp(opt, "--together")) {
			together = 1;
			continue;
		}
		if (!strcmp(opt, "--hold")) {
			s->hold = 1;
			continue;
		}
		if (!strcmp(opt, "--stream")) {
			/* The first --stream opens the first stream, unless options
			 * before it already described that one. */
			if (started) {
				if (nstreams == MAX_STREAMS)
					return usage("too many streams");
				stream_defaults(&streams[nstreams], nstreams);
				nstreams++;
			}
			started = 1;
			continue;
		}
		if (a + 1 >= argc)
			return usage("option needs a value");
		val = argv[++a];
		started = 1;
		if (!strcmp(opt, "--device"))
			s->device = val;
		else if (!strcmp(opt, "--label"))
			s->label = val;
		else if (!strcmp(opt, "--format")) {
			if (strlen(val) != 4)
				return usage("--format takes a four-character code such as YUYV");
			memcpy(s->fourcc, val, 5);
		} else if (!strcmp(opt, "--width")) {
			if (parse_uint(val, &s->width))
				return usage("bad --width");
		} else if (!strcmp(opt, "--height")) {
			if (parse_uint(val, &s->height))
				return usage("bad --height");
		} else if (!strcmp(opt, "--buffers")) {
			if (parse_uint(val, &s->buffers) || s->buffers == 0 || s->buffers > MAX_BUFFERS)
				return usage("--buffers must be 1..32");
		} else if (!strcmp(opt, "--frames")) {
			if (parse_uint(val, &s->frames))
				return usage("bad --frames");
		} else
			return usage("unknown option");
	}

	begin("start", NULL);
	out_uint("streams", nstreams);
	out_str("mode", together ? "together" : "sequence");
	finish();

	if (together) {
		unsigned most = 0;

		for (i = 0; i < nstreams; i++) {
			if (setup(&streams[i]))
				return 1;
			if (streams[i].frames > most)
				most = streams[i].frames;
		}
		for (round = 0; round < most; round++)
			for (i = 0; i < nstreams; i++)
				if (streams[i].granted && round < streams[i].frames && one_frame(&streams[i]))
					return 1;
		for (i = nstreams; i-- > 0;)
			if (stop(&streams[i]))
				return 1;
		for (i = nstreams; i-- > 0;)
			if (teardown(&streams[i]))
				return 1;
	} else {
		for (i = 0; i < nstreams; i++) {
			struct stream *s = &streams[i];

			if (setup(s))
				return 1;
			for (round = 0; s->granted && round < s->frames; round++)
				if (one_frame(s))
					return 1;
			/* A held stream stops streaming (vivid would keep
			 * rendering frames otherwise) but keeps its buffers. */
			if (s->hold ? stop(s) : teardown(s))
				return 1;
		}
		for (i = nstreams; i-- > 0;)
			if (teardown(&streams[i]))
				return 1;
	}

	begin("done", NULL);
	out_uint("streams", nstreams);
	finish();
	return 0;
}
