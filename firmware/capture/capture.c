/*
 * capture: a V4L2 MMAP capture client for the emulated board and real ones.
 *
 * It walks the exact ioctl sequence that makes videobuf2-dma-contig allocate
 * and free its buffers, and prints one JSON object per line on stdout for each
 * step, with CmaTotal/CmaFree from /proc/meminfo and the vmstat CMA counters
 * read right after the step, so the host can line every step up with the
 * kernel's cma tracepoints.
 *
 * Usage:
 *   capture --plan FILE
 *   capture [--together] STREAM [--stream STREAM ...]      (the older form)
 *   STREAM := [--device DEV] [--width N] [--height N] [--format FOURCC]
 *             [--buffers N] [--frames N] [--label NAME] [--hold]
 *
 * The plan file (cma_tool/deploy/agent.py writes it) holds one directive per
 * line, words separated by blanks, '#' starting a comment:
 *   load MODULE [PARAM=VALUE ...]            for cmatool-run; ignored here
 *   stream LABEL DEVICE WIDTH HEIGHT FOURCC  declare a stream
 *   start LABEL BUFFERS FRAMES               open, S_FMT, REQBUFS, mmap, QBUF,
 *                                            STREAMON, FRAMES frames, STREAMOFF;
 *                                            the stream keeps its buffers
 *   release LABEL                            munmap, REQBUFS 0, close
 * Steps run in file order; a released stream may be started again. Streams
 * still holding buffers at the end are released in reverse start order. The
 * whole plan is checked before the first step runs.
 *
 * DEVICE is a node's path (/dev/videoN), or driver:NAME:INDEX: the INDEX-th (from 0) capture
 * node, in ascending N, of /sys/class/video4linux/videoN whose device's
 * driver is NAME. A capture node is one with STREAMING and VIDEO_CAPTURE (or
 * VIDEO_CAPTURE_MPLANE, as FIMC's) and without M2M, so a FIMC's
 * mem-to-mem node is not counted. Drivers such as vivid register their nodes
 * after modprobe has returned, so the node is waited for (up to 5 s).
 *
 * The older form runs its streams one after the other, each one started and
 * released, except that --hold streams keep their buffers until the end;
 * --together starts every stream, takes frames from all of them in turn, then
 * releases them in reverse.
 *
 * REQBUFS granting fewer buffers than asked is reported and is not fatal (the
 * stream goes on with what it got, or holds no buffers when it got none) so
 * the CMA events still line up. Any other failure prints an "error" event and
 * exits 1; a malformed plan or command line exits 2 before anything runs.
 *
 * Hand-written on purpose: it runs on a bare initramfs (busybox, no libv4l2,
 * no JSON library), so it is a single static C file with no dependencies.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

#define MAX_STREAMS 32
#define MAX_STEPS 256
#define MAX_BUFFERS 32
#define MAX_NODES 64
#define DQBUF_TIMEOUT_MS 10000
#define NODE_WAIT_MS 5000
#define NODE_POLL_MS 100

#define CAPTURE_CAPS (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE)
#define M2M_CAPS (V4L2_CAP_VIDEO_M2M | V4L2_CAP_VIDEO_M2M_MPLANE)

struct stream {
	char label[64];
	char device[128]; /* as the plan gives it */
	unsigned width, height;
	char fourcc[5];
	int hold; /* the older form's --hold */

	char node[128]; /* the node's path, once resolved */
	int fd;
	enum v4l2_buf_type type;
	unsigned planes; /* per buffer: 1, or the driver's num_planes (MPLANE) */
	unsigned granted;
	unsigned frames_done;
	int streaming;
	int holding; /* started and not yet released */
	void *map[MAX_BUFFERS][VIDEO_MAX_PLANES];
	size_t map_len[MAX_BUFFERS][VIDEO_MAX_PLANES];
};

enum op { OP_START, OP_RELEASE };

struct step {
	enum op op;
	unsigned stream;
	unsigned buffers, frames;
	unsigned line; /* in the plan file; 0 for steps the program adds */
};

struct run {
	struct stream streams[MAX_STREAMS];
	unsigned nstreams;
	struct step steps[MAX_STEPS];
	unsigned nsteps;
	unsigned order[MAX_STREAMS]; /* streams holding buffers, oldest start first */
	unsigned nheld;
	const char *source; /* the plan file, or "argv" */
	struct timespec t0;
};

/* ---- JSON output ------------------------------------------------------ */

struct line {
	char text[4096];
	size_t len;
};

static void out(struct line *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(l->text + l->len, sizeof(l->text) - l->len, fmt, ap);
	va_end(ap);
	if (n > 0) {
		l->len += (size_t)n;
		if (l->len >= sizeof(l->text))
			l->len = sizeof(l->text) - 1;
	}
}

static void out_str(struct line *l, const char *key, const char *value)
{
	const unsigned char *p;

	out(l, ",\"%s\":\"", key);
	for (p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\')
			out(l, "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			out(l, "\\u%04x", *p);
		else
			out(l, "%c", *p);
	}
	out(l, "\"");
}

static void out_uint(struct line *l, const char *key, unsigned long value)
{
	out(l, ",\"%s\":%lu", key, value);
}

static void begin(struct line *l, const struct run *r, const char *event, const struct stream *s)
{
	struct timespec now;
	double t;

	clock_gettime(CLOCK_MONOTONIC, &now);
	t = (double)(now.tv_sec - r->t0.tv_sec) + (double)(now.tv_nsec - r->t0.tv_nsec) / 1e9;
	l->len = 0;
	out(l, "{\"event\":\"%s\"", event);
	if (s)
		out_str(l, "label", s->label);
	out(l, ",\"t\":%.6f", t);
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

static void finish(struct line *l)
{
	out(l, ",\"cma_total_kb\":%ld", read_counter("/proc/meminfo", "CmaTotal"));
	out(l, ",\"cma_free_kb\":%ld", read_counter("/proc/meminfo", "CmaFree"));
	out(l, ",\"cma_alloc_success\":%ld", read_counter("/proc/vmstat", "cma_alloc_success"));
	out(l, ",\"cma_alloc_fail\":%ld", read_counter("/proc/vmstat", "cma_alloc_fail"));
	out(l, "}\n");
	fwrite(l->text, 1, l->len, stdout);
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

/* ---- errors ----------------------------------------------------------- */

static int fatal_errno(const struct run *r, const struct stream *s, const char *step, int err)
{
	struct line l;

	begin(&l, r, "error", s);
	out_str(&l, "step", step);
	out_uint(&l, "errno", (unsigned long)err);
	out_str(&l, "strerror", strerror(err));
	out(&l, ",\"fatal\":true");
	finish(&l);
	return 1;
}

/* A plan or command line that cannot run: said once, exit 2, nothing done. */
static int bad_input(const struct run *r, unsigned line_no, const char *fmt, ...)
{
	struct line l;
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	begin(&l, r, "error", NULL);
	out_str(&l, "step", line_no ? "plan" : "usage");
	if (line_no) {
		out_str(&l, "plan", r->source);
		out_uint(&l, "line", line_no);
	}
	out_str(&l, "strerror", why);
	out(&l, ",\"fatal\":true");
	finish(&l);
	if (line_no)
		fprintf(stderr, "capture: %s:%u: %s\n", r->source, line_no, why);
	else
		fprintf(stderr,
			"capture: %s\n"
			"usage: capture --plan FILE\n"
			"       capture [--together] [--device DEV] [--width N] [--height N]\n"
			"               [--format FOURCC] [--buffers N] [--frames N] [--label NAME]\n"
			"               [--hold] [--stream ...]...\n",
			why);
	return 2;
}

static int xioctl(int fd, unsigned long request, void *arg)
{
	int r;

	do
		r = ioctl(fd, request, arg);
	while (r == -1 && errno == EINTR);
	return r;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* ---- finding the node ------------------------------------------------- */

/* The driver bound to videoN's device ("vivid", "exynos4-fimc"), or "". */
static void node_driver(unsigned n, char *driver, size_t size)
{
	char path[128], target[256];
	ssize_t len;
	const char *base;

	snprintf(path, sizeof(path), "/sys/class/video4linux/video%u/device/driver", n);
	len = readlink(path, target, sizeof(target) - 1);
	driver[0] = '\0';
	if (len <= 0)
		return;
	target[len] = '\0';
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	len = (ssize_t)strlen(base);
	if ((size_t)len >= size)
		len = (ssize_t)size - 1; /* a name that long matches nothing anyway */
	memcpy(driver, base, (size_t)len);
	driver[len] = '\0';
}

/* The N of every /sys/class/video4linux/videoN, ascending. */
static unsigned list_nodes(unsigned nodes[MAX_NODES])
{
	DIR *d = opendir("/sys/class/video4linux");
	struct dirent *e;
	unsigned count = 0, i, j;

	if (!d)
		return 0;
	while ((e = readdir(d)) && count < MAX_NODES) {
		char *end;
		unsigned long n;

		if (strncmp(e->d_name, "video", 5) || !e->d_name[5])
			continue;
		n = strtoul(e->d_name + 5, &end, 10);
		if (*end)
			continue;
		nodes[count++] = (unsigned)n;
	}
	closedir(d);
	for (i = 1; i < count; i++)
		for (j = i; j > 0 && nodes[j - 1] > nodes[j]; j--) {
			unsigned t = nodes[j];

			nodes[j] = nodes[j - 1];
			nodes[j - 1] = t;
		}
	return count;
}

static int is_capture_node(unsigned n)
{
	char path[64];
	struct v4l2_capability cap;
	int fd, ok;

	snprintf(path, sizeof(path), "/dev/video%u", n);
	fd = open(path, O_RDWR | O_NONBLOCK);
	if (fd < 0)
		return 0;
	memset(&cap, 0, sizeof(cap));
	ok = xioctl(fd, VIDIOC_QUERYCAP, &cap) == 0 && (cap.device_caps & V4L2_CAP_STREAMING) &&
	     (cap.device_caps & CAPTURE_CAPS) && !(cap.device_caps & M2M_CAPS);
	close(fd);
	return ok;
}

/* "driver:NAME:INDEX" -> NAME and INDEX; 0 if it is not of that form. */
static int split_driver_device(const char *device, char *name, size_t size, unsigned *index)
{
	const char *first, *last;
	char *end;
	unsigned long v;

	if (strncmp(device, "driver:", 7))
		return 0;
	first = device + 7;
	last = strrchr(first, ':');
	if (!last || last == first || (size_t)(last - first) >= size)
		return 0;
	errno = 0;
	v = strtoul(last + 1, &end, 10);
	if (errno || *end || end == last + 1 || v >= MAX_NODES)
		return 0;
	memcpy(name, first, (size_t)(last - first));
	name[last - first] = '\0';
	*index = (unsigned)v;
	return strchr(name, ':') == NULL;
}


/* One look at sysfs: the node of driver NAME number INDEX, or -1. */
static int find_driver_node(const char *name, unsigned index)
{
	unsigned nodes[MAX_NODES], count = list_nodes(nodes), i, seen = 0;
	char driver[128];

	for (i = 0; i < count; i++) {
		node_driver(nodes[i], driver, sizeof(driver));
		if (strcmp(driver, name) || !is_capture_node(nodes[i]))
			continue;
		if (seen++ == index)
			return (int)nodes[i];
	}
	return -1;
}

static int resolve(struct run *r, struct stream *s)
{
	char name[128], driver[128], real[PATH_MAX];
	unsigned index = 0, waited = 0;
	int n = -1;
	struct line l;

	if (s->node[0])
		return 0;
	if (split_driver_device(s->device, name, sizeof(name), &index)) {
		while ((n = find_driver_node(name, index)) < 0 && waited < NODE_WAIT_MS) {
			sleep_ms(NODE_POLL_MS);
			waited += NODE_POLL_MS;
		}
		if (n < 0) {
			unsigned nodes[MAX_NODES], count = list_nodes(nodes), i;
			char found[1024] = "";
			size_t used = 0;

			for (i = 0; i < count && used < sizeof(found) - 1; i++) {
				int w;

				node_driver(nodes[i], driver, sizeof(driver));
				w = snprintf(found + used, sizeof(found) - used, "%s/dev/video%u (%s%s)", i ? ", " : "",
					     nodes[i], driver[0] ? driver : "no driver",
					     is_capture_node(nodes[i]) ? ", capture" : "");
				if (w > 0)
					used += (size_t)w;
			}
			begin(&l, r, "error", s);
			out_str(&l, "step", "resolve");
			out_str(&l, "device", s->device);
			out_str(&l, "driver", name);
			out_uint(&l, "index", index);
			out_str(&l, "nodes", count ? found : "none");
			out_uint(&l, "errno", ENODEV);
			out_str(&l, "strerror", count ? "no such capture node of that driver after 5 s; the nodes are listed"
						     : "no video nodes at all after 5 s: is the driver loaded?");
			out(&l, ",\"fatal\":true");
			finish(&l);
			return 1;
		}
		snprintf(s->node, sizeof(s->node), "/dev/video%d", n);
	} else {
		/* An explicit node may belong to a driver still registering. */
		while (access(s->device, F_OK) && waited < NODE_WAIT_MS) {
			sleep_ms(NODE_POLL_MS);
			waited += NODE_POLL_MS;
		}
		snprintf(s->node, sizeof(s->node), "%s", s->device);
		if (realpath(s->device, real))
			sscanf(real, "/dev/video%d", &n);
	}
	driver[0] = '\0';
	if (n >= 0)
		node_driver((unsigned)n, driver, sizeof(driver));
	begin(&l, r, "resolve", s);
	out_str(&l, "device", s->device);
	out_str(&l, "node", s->node);
	out_str(&l, "driver", driver);
	out_uint(&l, "waited_ms", waited);
	finish(&l);
	return 0;
}

/* ---- ioctl steps ------------------------------------------------------ */

/* A v4l2_buffer naming buffer "index" of the stream's MMAP queue. */
static void queue_buffer(const struct stream *s, struct v4l2_buffer *buf, struct v4l2_plane *planes, unsigned index)
{
	memset(buf, 0, sizeof(*buf));
	buf->type = s->type;
	buf->memory = V4L2_MEMORY_MMAP;
	buf->index = index;
	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		memset(planes, 0, sizeof(*planes) * VIDEO_MAX_PLANES);
		buf->m.planes = planes;
		buf->length = s->planes;
	}
}

static int open_and_format(struct run *r, struct stream *s)
{
	struct v4l2_capability cap;
	struct v4l2_format fmt;
	struct line l;
	char text[5];
	unsigned long sizeimage = 0, bytesperline;
	unsigned p;
	__u32 want = v4l2_fourcc(s->fourcc[0], s->fourcc[1], s->fourcc[2], s->fourcc[3]);

	s->fd = open(s->node, O_RDWR);
	if (s->fd < 0)
		return fatal_errno(r, s, "open", errno);
	begin(&l, r, "open", s);
	out_str(&l, "device", s->node);
	finish(&l);

	memset(&cap, 0, sizeof(cap));
	if (xioctl(s->fd, VIDIOC_QUERYCAP, &cap))
		return fatal_errno(r, s, "querycap", errno);
	begin(&l, r, "querycap", s);
	out_str(&l, "driver", (const char *)cap.driver);
	out_str(&l, "card", (const char *)cap.card);
	out_str(&l, "bus_info", (const char *)cap.bus_info);
	out(&l, ",\"capabilities\":\"0x%08x\"", cap.device_caps);
	finish(&l);
	if (!(cap.device_caps & V4L2_CAP_STREAMING) || !(cap.device_caps & CAPTURE_CAPS))
		return fatal_errno(r, s, "querycap", ENOTSUP);
	s->type = (cap.device_caps & V4L2_CAP_VIDEO_CAPTURE) ? V4L2_BUF_TYPE_VIDEO_CAPTURE
							      : V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;

	memset(&fmt, 0, sizeof(fmt));
	fmt.type = s->type;
	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE) {
		fmt.fmt.pix.width = s->width;
		fmt.fmt.pix.height = s->height;
		fmt.fmt.pix.pixelformat = want;
		fmt.fmt.pix.field = V4L2_FIELD_ANY;
	} else {
		fmt.fmt.pix_mp.width = s->width;
		fmt.fmt.pix_mp.height = s->height;
		fmt.fmt.pix_mp.pixelformat = want;
		fmt.fmt.pix_mp.field = V4L2_FIELD_ANY;
	}
	if (xioctl(s->fd, VIDIOC_S_FMT, &fmt))
		return fatal_errno(r, s, "s_fmt", errno);
	begin(&l, r, "s_fmt", s);
	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE) {
		s->planes = 1;
		fourcc_text(fmt.fmt.pix.pixelformat, text);
		out_uint(&l, "width", fmt.fmt.pix.width);
		out_uint(&l, "height", fmt.fmt.pix.height);
		bytesperline = fmt.fmt.pix.bytesperline;
		sizeimage = fmt.fmt.pix.sizeimage;
	} else {
		s->planes = fmt.fmt.pix_mp.num_planes;
		if (s->planes < 1 || s->planes > VIDEO_MAX_PLANES)
			return fatal_errno(r, s, "s_fmt", ERANGE);
		fourcc_text(fmt.fmt.pix_mp.pixelformat, text);
		out_uint(&l, "width", fmt.fmt.pix_mp.width);
		out_uint(&l, "height", fmt.fmt.pix_mp.height);
		bytesperline = fmt.fmt.pix_mp.plane_fmt[0].bytesperline;
		/* Each plane is its own allocation: the sum is what CMA gives. */
		for (p = 0; p < s->planes; p++)
			sizeimage += fmt.fmt.pix_mp.plane_fmt[p].sizeimage;
	}
	out_str(&l, "format", text);
	out_uint(&l, "bytesperline", bytesperline);
	out_uint(&l, "sizeimage", sizeimage);
	out_uint(&l, "asked_width", s->width);
	out_uint(&l, "asked_height", s->height);
	out_str(&l, "asked_format", s->fourcc);
	out_str(&l, "api", s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE ? "single-planar" : "multi-planar");
	out_uint(&l, "planes", s->planes);
	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		out(&l, ",\"plane_sizeimage\":[");
		for (p = 0; p < s->planes; p++)
			out(&l, "%s%u", p ? "," : "", fmt.fmt.pix_mp.plane_fmt[p].sizeimage);
		out(&l, "]");
	}
	finish(&l);
	return 0;
}

static int request_buffers(struct run *r, struct stream *s, unsigned count)
{
	struct v4l2_requestbuffers req;
	struct line l;

	memset(&req, 0, sizeof(req));
	req.count = count;
	req.type = s->type;
	req.memory = V4L2_MEMORY_MMAP;
	if (xioctl(s->fd, VIDIOC_REQBUFS, &req)) {
		int err = errno;

		/* vb2 fails the whole call with ENOMEM when not even one buffer
		 * could be allocated: the same CMA shortage as a partial grant. */
		if (count && err == ENOMEM) {
			s->granted = 0;
			begin(&l, r, "reqbufs", s);
			out_uint(&l, "asked", count);
			out_uint(&l, "granted", 0);
			out_uint(&l, "errno", (unsigned long)err);
			out_str(&l, "strerror", strerror(err));
			finish(&l);
			begin(&l, r, "shortfall", s);
			out_uint(&l, "asked", count);
			out_uint(&l, "granted", 0);
			out(&l, ",\"fatal\":false");
			finish(&l);
			return 0;
		}
		return fatal_errno(r, s, "reqbufs", err);
	}
	begin(&l, r, "reqbufs", s);
	out_uint(&l, "asked", count);
	out_uint(&l, "granted", req.count);
	finish(&l);
	if (count && req.count < count) {
		begin(&l, r, "shortfall", s);
		out_uint(&l, "asked", count);
		out_uint(&l, "granted", req.count);
		out(&l, ",\"fatal\":false");
		finish(&l);
	}
	s->granted = count ? req.count : 0;
	if (s->granted > MAX_BUFFERS)
		return fatal_errno(r, s, "reqbufs", E2BIG);
	return 0;
}

static int map_and_queue(struct run *r, struct stream *s)
{
	struct line l;
	unsigned i, p;

	for (i = 0; i < s->granted; i++) {
		struct v4l2_plane planes[VIDEO_MAX_PLANES];
		struct v4l2_buffer buf;
		unsigned long length = 0, offset;

		queue_buffer(s, &buf, planes, i);
		if (xioctl(s->fd, VIDIOC_QUERYBUF, &buf))
			return fatal_errno(r, s, "querybuf", errno);
		for (p = 0; p < s->planes; p++) {
			size_t len = s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE ? buf.length : planes[p].length;
			off_t off = s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE ? buf.m.offset : planes[p].m.mem_offset;

			s->map[i][p] = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, off);
			if (s->map[i][p] == MAP_FAILED) {
				s->map[i][p] = NULL;
				return fatal_errno(r, s, "mmap", errno);
			}
			s->map_len[i][p] = len;
			length += len;
		}
		offset = s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE ? buf.m.offset : planes[0].m.mem_offset;
		begin(&l, r, "querybuf", s);
		out_uint(&l, "index", i);
		out_uint(&l, "length", length);
		out(&l, ",\"offset\":\"0x%08lx\"", offset);
		finish(&l);
	}
	for (i = 0; i < s->granted; i++) {
		struct v4l2_plane planes[VIDEO_MAX_PLANES];
		struct v4l2_buffer buf;

		queue_buffer(s, &buf, planes, i);
		if (xioctl(s->fd, VIDIOC_QBUF, &buf))
			return fatal_errno(r, s, "qbuf", errno);
	}
	begin(&l, r, "qbuf_all", s);
	out_uint(&l, "count", s->granted);
	finish(&l);
	return 0;
}

static int stream_on(struct run *r, struct stream *s)
{
	enum v4l2_buf_type type = s->type;
	struct line l;

	if (xioctl(s->fd, VIDIOC_STREAMON, &type))
		return fatal_errno(r, s, "streamon", errno);
	s->streaming = 1;
	begin(&l, r, "streamon", s);
	finish(&l);
	return 0;
}

static int one_frame(struct run *r, struct stream *s)
{
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN };
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer buf;
	struct line l;
	unsigned long used = 0;
	unsigned p;
	int n;

	do
		n = poll(&pfd, 1, DQBUF_TIMEOUT_MS);
	while (n == -1 && errno == EINTR);
	if (n == 0)
		return fatal_errno(r, s, "dqbuf", ETIMEDOUT);
	if (n < 0)
		return fatal_errno(r, s, "dqbuf", errno);
	queue_buffer(s, &buf, planes, 0); /* DQBUF fills in the index */
	if (xioctl(s->fd, VIDIOC_DQBUF, &buf))
		return fatal_errno(r, s, "dqbuf", errno);
	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE)
		used = buf.bytesused;
	else
		for (p = 0; p < s->planes; p++)
			used += planes[p].bytesused;
	begin(&l, r, "frame", s);
	out_uint(&l, "index", buf.index);
	out_uint(&l, "sequence", buf.sequence);
	out_uint(&l, "bytesused", used);
	finish(&l);
	s->frames_done++;
	if (xioctl(s->fd, VIDIOC_QBUF, &buf))
		return fatal_errno(r, s, "qbuf", errno);
	return 0;
}

/* STREAMOFF keeps the buffers; without it vivid would go on rendering. */
static int stop(struct run *r, struct stream *s)
{
	enum v4l2_buf_type type = s->type;
	struct line l;

	if (!s->streaming)
		return 0;
	if (xioctl(s->fd, VIDIOC_STREAMOFF, &type))
		return fatal_errno(r, s, "streamoff", errno);
	s->streaming = 0;
	begin(&l, r, "streamoff", s);
	out_uint(&l, "frames", s->frames_done);
	finish(&l);
	return 0;
}

/* Everything up to and including STREAMON; a stream granted 0 buffers stops
 * after REQBUFS (nothing to stream) and holds an empty queue until released. */
static int setup(struct run *r, struct stream *s, unsigned buffers)
{
	s->granted = 0;
	s->frames_done = 0;
	if (resolve(r, s) || open_and_format(r, s))
		return 1;
	s->holding = 1;
	r->order[r->nheld++] = (unsigned)(s - r->streams);
	if (request_buffers(r, s, buffers))
		return 1;
	if (!s->granted)
		return 0;
	return map_and_queue(r, s) || stream_on(r, s);
}

static int take_frames(struct run *r, struct stream *s, unsigned frames)
{
	unsigned i;

	for (i = 0; s->granted && i < frames; i++)
		if (one_frame(r, s))
			return 1;
	return 0;
}

/* STREAMOFF if still streaming, unmap, REQBUFS 0 (back to CMA), close. */
static int release(struct run *r, struct stream *s)
{
	struct line l;
	unsigned i, p, k;

	if (!s->holding)
		return 0;
	if (stop(r, s))
		return 1;
	for (i = 0; i < s->granted; i++)
		for (p = 0; p < s->planes; p++) {
			if (s->map[i][p])
				munmap(s->map[i][p], s->map_len[i][p]);
			s->map[i][p] = NULL;
		}
	if (s->granted) {
		begin(&l, r, "munmap", s);
		out_uint(&l, "count", s->granted);
		finish(&l);
	}
	if (request_buffers(r, s, 0))
		return 1;
	close(s->fd);
	s->fd = -1;
	s->holding = 0;
	for (i = k = 0; i < r->nheld; i++)
		if (&r->streams[r->order[i]] != s)
			r->order[k++] = r->order[i];
	r->nheld = k;
	begin(&l, r, "close", s);
	finish(&l);
	return 0;
}

/* ---- running steps ---------------------------------------------------- */

static void step_event(struct run *r, const struct step *st)
{
	struct line l;

	begin(&l, r, "step", &r->streams[st->stream]);
	out_str(&l, "op", st->op == OP_START ? "start" : "release");
	out_uint(&l, "line", st->line);
	if (st->op == OP_START) {
		out_uint(&l, "buffers", st->buffers);
		out_uint(&l, "frames", st->frames);
	}
	finish(&l);
}

static int run_step(struct run *r, const struct step *st)
{
	struct stream *s = &r->streams[st->stream];

	step_event(r, st);
	if (st->op == OP_RELEASE)
		return release(r, s);
	return setup(r, s, st->buffers) || take_frames(r, s, st->frames) || stop(r, s);
}

static void start_event(struct run *r, const char *mode)
{
	struct line l;

	begin(&l, r, "start", NULL);
	out_uint(&l, "streams", r->nstreams);
	out_uint(&l, "steps", r->nsteps);
	out_str(&l, "mode", mode);
	out_str(&l, "source", r->source);
	finish(&l);
}

static int done_event(struct run *r)
{
	struct line l;

	begin(&l, r, "done", NULL);
	out_uint(&l, "streams", r->nstreams);
	finish(&l);
	return 0;
}

/* Every step in order, then whatever still holds buffers, newest start first. */
static int run_steps(struct run *r, const char *mode)
{
	unsigned i;

	start_event(r, mode);
	for (i = 0; i < r->nsteps; i++)
		if (run_step(r, &r->steps[i]))
			return 1;
	while (r->nheld) {
		struct step st = { .op = OP_RELEASE, .stream = r->order[r->nheld - 1] };

		if (run_step(r, &st))
			return 1;
	}
	return done_event(r);
}

/* The older --together: every stream streaming at once, frames in turn. */
static int run_together(struct run *r)
{
	unsigned i, round, most = 0;

	start_event(r, "together");
	for (i = 0; i < r->nsteps; i++) {
		const struct step *st = &r->steps[i];

		if (st->op != OP_START)
			continue;
		step_event(r, st);
		if (setup(r, &r->streams[st->stream], st->buffers))
			return 1;
		if (st->frames > most)
			most = st->frames;
	}
	for (round = 0; round < most; round++)
		for (i = 0; i < r->nsteps; i++) {
			const struct step *st = &r->steps[i];

			if (st->op == OP_START && round < st->frames && r->streams[st->stream].granted &&
			    one_frame(r, &r->streams[st->stream]))
				return 1;
		}
	for (i = r->nheld; i-- > 0;)
		if (stop(r, &r->streams[r->order[i]]))
			return 1;
	while (r->nheld) {
		struct step st = { .op = OP_RELEASE, .stream = r->order[r->nheld - 1] };

		if (run_step(r, &st))
			return 1;
	}
	return done_event(r);
}

/* ---- reading the plan ------------------------------------------------- */

static int parse_uint(const char *text, unsigned *value)
{
	char *end;
	unsigned long v;

	if (*text < '0' || *text > '9')
		return -1;
	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || *end || v > 1000000)
		return -1;
	*value = (unsigned)v;
	return 0;
}

static int valid_label(const char *label)
{
	const char *p;

	if (!*label || strlen(label) >= sizeof(((struct stream *)0)->label))
		return 0;
	for (p = label; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '.' || *p == '-'))
			return 0;
	return 1;
}

static int valid_device(const char *device)
{
	char name[128];
	unsigned index;

	if (strlen(device) >= sizeof(((struct stream *)0)->device))
		return 0;
	/* Any absolute path: udev's /dev/v4l/by-path links name a node for good. */
	return device[0] == '/' || split_driver_device(device, name, sizeof(name), &index);
}

static int find_stream(const struct run *r, const char *label)
{
	unsigned i;

	for (i = 0; i < r->nstreams; i++)
		if (!strcmp(r->streams[i].label, label))
			return (int)i;
	return -1;
}

static void init_stream(struct stream *s)
{
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

static int add_step(struct run *r, unsigned line_no, enum op op, int stream, unsigned buffers, unsigned frames)
{
	if (r->nsteps == MAX_STEPS)
		return bad_input(r, line_no, "more than %d steps", MAX_STEPS);
	r->steps[r->nsteps].op = op;
	r->steps[r->nsteps].stream = (unsigned)stream;
	r->steps[r->nsteps].buffers = buffers;
	r->steps[r->nsteps].frames = frames;
	r->steps[r->nsteps].line = line_no;
	r->nsteps++;
	return 0;
}

/* One directive, split into words; "holding" follows the plan as it would run. */
static int parse_directive(struct run *r, unsigned line_no, char **w, unsigned nw, int holding[MAX_STREAMS])
{
	struct stream *s;
	unsigned a, b;
	int i;

	if (!strcmp(w[0], "load"))
		return nw >= 2 ? 0 : bad_input(r, line_no, "'load' needs a module name: load MODULE [PARAM=VALUE ...]");
	if (!strcmp(w[0], "stream")) {
		if (nw != 6)
			return bad_input(r, line_no, "'stream' takes 5 words: stream LABEL DEVICE WIDTH HEIGHT FOURCC");
		if (!valid_label(w[1]))
			return bad_input(r, line_no, "label '%s' must be 1-63 of A-Z a-z 0-9 _ . -", w[1]);
		if (find_stream(r, w[1]) >= 0)
			return bad_input(r, line_no, "stream '%s' is declared twice", w[1]);
		if (!valid_device(w[2]))
			return bad_input(r, line_no, "device '%s' is neither a /dev path nor driver:NAME:INDEX", w[2]);
		if (parse_uint(w[3], &a) || parse_uint(w[4], &b) || !a || !b)
			return bad_input(r, line_no, "frame size %sx%s is not two positive whole numbers", w[3], w[4]);
		if (strlen(w[5]) != 4)
			return bad_input(r, line_no,
					 "format '%s' is not a four-character V4L2 code (YUYV, NV12, RGBP for RGB565, "
					 "RGB3 for RGB24, YU12 for YUV420...)",
					 w[5]);
		if (r->nstreams == MAX_STREAMS)
			return bad_input(r, line_no, "more than %d streams", MAX_STREAMS);
		s = &r->streams[r->nstreams++];
		init_stream(s);
		snprintf(s->label, sizeof(s->label), "%s", w[1]);
		snprintf(s->device, sizeof(s->device), "%s", w[2]);
		s->width = a;
		s->height = b;
		memcpy(s->fourcc, w[5], 5);
		return 0;
	}
	if (!strcmp(w[0], "start") || !strcmp(w[0], "release")) {
		int start = w[0][0] == 's';

		if (start && nw != 4)
			return bad_input(r, line_no, "'start' takes 3 words: start LABEL BUFFERS FRAMES");
		if (!start && nw != 2)
			return bad_input(r, line_no, "'release' takes 1 word: release LABEL");
		i = find_stream(r, w[1]);
		if (i < 0)
			return bad_input(r, line_no, "no stream '%s' is declared above this line", w[1]);
		if (start && holding[i])
			return bad_input(r, line_no, "stream '%s' is started again before it is released", w[1]);
		if (!start && !holding[i])
			return bad_input(r, line_no, "stream '%s' is released but does not hold buffers", w[1]);
		a = b = 0;
		if (start && (parse_uint(w[2], &a) || !a || a > MAX_BUFFERS))
			return bad_input(r, line_no, "buffers '%s' must be 1..%d", w[2], MAX_BUFFERS);
		if (start && parse_uint(w[3], &b))
			return bad_input(r, line_no, "frames '%s' is not a whole number", w[3]);
		holding[i] = start;
		return add_step(r, line_no, start ? OP_START : OP_RELEASE, i, a, b);
	}
	return bad_input(r, line_no, "unknown directive '%s' (load, stream, start or release)", w[0]);
}

static int read_plan(struct run *r, const char *path)
{
	char text[1024];
	int holding[MAX_STREAMS] = { 0 };
	unsigned line_no = 0;
	FILE *f = fopen(path, "r");

	r->source = path;
	if (!f) {
		int err = errno;
		struct line l;

		begin(&l, r, "error", NULL);
		out_str(&l, "step", "plan");
		out_str(&l, "plan", path);
		out_uint(&l, "errno", (unsigned long)err);
		out_str(&l, "strerror", strerror(err));
		out(&l, ",\"fatal\":true");
		finish(&l);
		fprintf(stderr, "capture: cannot read the plan %s: %s\n", path, strerror(err));
		return 2;
	}
	while (fgets(text, sizeof(text), f)) {
		char *words[16], *save = NULL, *hash, *word;
		unsigned nw = 0;

		line_no++;
		if (!strchr(text, '\n') && !feof(f)) {
			fclose(f);
			return bad_input(r, line_no, "line longer than %zu characters", sizeof(text) - 2);
		}
		hash = strchr(text, '#');
		if (hash)
			*hash = '\0';
		for (word = strtok_r(text, " \t\r\n", &save); word; word = strtok_r(NULL, " \t\r\n", &save)) {
			if (nw == sizeof(words) / sizeof(words[0])) {
				fclose(f);
				return bad_input(r, line_no, "more than %zu words", sizeof(words) / sizeof(words[0]));
			}
			words[nw++] = word;
		}
		if (nw && parse_directive(r, line_no, words, nw, holding)) {
			fclose(f);
			return 2;
		}
	}
	fclose(f);
	if (!r->nsteps)
		return bad_input(r, line_no ? line_no : 1, "the plan has no 'start' step");
	return 0;
}

/* ---- the older command line ------------------------------------------- */

struct argv_stream {
	struct stream *s;
	unsigned buffers, frames;
};

static void argv_defaults(struct run *r, struct argv_stream *as)
{
	as->s = &r->streams[r->nstreams];
	init_stream(as->s);
	snprintf(as->s->label, sizeof(as->s->label), "s%u", r->nstreams);
	snprintf(as->s->device, sizeof(as->s->device), "/dev/video0");
	as->s->width = 1920;
	as->s->height = 1080;
	memcpy(as->s->fourcc, "YUYV", 5);
	as->buffers = 4;
	as->frames = 5;
	r->nstreams++;
}

static int parse_argv(struct run *r, int argc, char **argv, int *together)
{
	struct argv_stream streams[MAX_STREAMS];
	unsigned i;
	int started = 0, a;

	r->source = "argv";
	argv_defaults(r, &streams[0]);
	for (a = 1; a < argc; a++) {
		const char *opt = argv[a];
		struct argv_stream *as = &streams[r->nstreams - 1];
		const char *val;

		if (!strcmp(opt, "--together")) {
			*together = 1;
			continue;
		}
		if (!strcmp(opt, "--hold")) {
			as->s->hold = 1;
			continue;
		}
		if (!strcmp(opt, "--stream")) {
			/* The first --stream opens the first stream, unless options
			 * before it already described that one. */
			if (started) {
				if (r->nstreams == MAX_STREAMS)
					return bad_input(r, 0, "too many streams");
				argv_defaults(r, &streams[r->nstreams]);
			}
			started = 1;
			continue;
		}
		if (a + 1 >= argc)
			return bad_input(r, 0, "option %s needs a value", opt);
		val = argv[++a];
		started = 1;
		if (!strcmp(opt, "--device")) {
			if (!valid_device(val))
				return bad_input(r, 0, "--device %s is neither a /dev path nor driver:NAME:INDEX", val);
			snprintf(as->s->device, sizeof(as->s->device), "%s", val);
		} else if (!strcmp(opt, "--label")) {
			if (!valid_label(val))
				return bad_input(r, 0, "--label %s must be 1-63 of A-Z a-z 0-9 _ . -", val);
			snprintf(as->s->label, sizeof(as->s->label), "%s", val);
		} else if (!strcmp(opt, "--format")) {
			if (strlen(val) != 4)
				return bad_input(r, 0, "--format takes a four-character V4L2 code such as YUYV or RGBP");
			memcpy(as->s->fourcc, val, 5);
		} else if (!strcmp(opt, "--width")) {
			if (parse_uint(val, &as->s->width) || !as->s->width)
				return bad_input(r, 0, "bad --width %s", val);
		} else if (!strcmp(opt, "--height")) {
			if (parse_uint(val, &as->s->height) || !as->s->height)
				return bad_input(r, 0, "bad --height %s", val);
		} else if (!strcmp(opt, "--buffers")) {
			if (parse_uint(val, &as->buffers) || as->buffers == 0 || as->buffers > MAX_BUFFERS)
				return bad_input(r, 0, "--buffers must be 1..%d", MAX_BUFFERS);
		} else if (!strcmp(opt, "--frames")) {
			if (parse_uint(val, &as->frames))
				return bad_input(r, 0, "bad --frames %s", val);
		} else
			return bad_input(r, 0, "unknown option %s", opt);
	}
	for (i = 0; i < r->nstreams; i++) {
		add_step(r, 0, OP_START, (int)i, streams[i].buffers, streams[i].frames);
		if (!*together && !streams[i].s->hold)
			add_step(r, 0, OP_RELEASE, (int)i, 0, 0);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct run r;
	int together = 0, rc;

	clock_gettime(CLOCK_MONOTONIC, &r.t0);
	r.source = "argv";
	if (argc >= 2 && !strcmp(argv[1], "--plan")) {
		if (argc != 3)
			return bad_input(&r, 0, "--plan takes one file and nothing else");
		rc = read_plan(&r, argv[2]);
		return rc ? rc : run_steps(&r, "plan");
	}
	rc = parse_argv(&r, argc, argv, &together);
	if (rc)
		return rc;
	return together ? run_together(&r) : run_steps(&r, "sequence");
}
