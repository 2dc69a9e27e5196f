/*
 * wsbench: the WebSocket echo backend and load client of bench/compare.sh
 * (bench/lib/ws_bench.py builds it with cc -O2 ... -lcrypto).
 *
 *   wsbench server PORT               echo backend (one thread, epoll): answers
 *                                     the upgrade, echoes text/binary messages
 *                                     unmasked, answers "stream N" with N bytes
 *                                     of binary frames (64 KiB payload each)
 *   wsbench rtt PORT CONNS WARM SECS SIZE
 *                                     CONNS tunnels, one SIZE-byte message in
 *                                     flight on each; prints "go" after WARM
 *                                     seconds, then "done RTT SECONDS" SECS later
 *   wsbench stream PORT BYTES         one tunnel; prints "go", asks for BYTES
 *                                     one way (server to client), then
 *                                     "done BYTES SECONDS" when all arrived
 *   wsbench idle PORT N               N tunnels, one echo on each; prints
 *                                     "open N", waits for a line on stdin,
 *                                     closes them all and exits
 *
 * Client frames are masked, server frames are not (RFC 6455 5.1). Every
 * echo is checked byte for byte; any error exits 1 with a message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define STREAM_PAYLOAD 65536
#define STREAM_FRAME (STREAM_PAYLOAD + 10)
#define STREAM_BUF_FRAMES 16

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "wsbench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- server ------------------------------------------------------------------ */

struct sconn {
    int fd;
    int open; /* handshake done */
    char *in; /* unparsed input */
    size_t in_len, in_cap;
    char *out; /* output not yet written */
    size_t out_len, out_cap;
    uint64_t stream_left; /* bytes of the stream buffer still to write */
    uint64_t stream_off;
};

static char *stream_buf; /* STREAM_BUF_FRAMES frames of STREAM_PAYLOAD zero bytes */

static void grow(char **b, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    *b = realloc(*b, n);
    if (!*b)
        die("out of memory");
    *cap = n;
}

static void queue(struct sconn *c, const void *p, size_t n)
{
    grow(&c->out, &c->out_cap, c->out_len + n);
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* Writes what is queued, then the stream. Returns -1 on error, 1 when all went, 0 when blocked. */
static int flush(struct sconn *c)
{
    while (c->out_len) {
        ssize_t n = write(c->fd, c->out, c->out_len);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    while (c->stream_left) {
        size_t size = (size_t)STREAM_FRAME * STREAM_BUF_FRAMES;
        size_t off = (size_t)(c->stream_off % size);
        size_t len = size - off;
        if (len > c->stream_left)
            len = (size_t)c->stream_left;
        ssize_t n = write(c->fd, stream_buf + off, len);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->stream_left -= (uint64_t)n;
        c->stream_off += (uint64_t)n;
    }
    return 1;
}

static void accept_key(const char *key, size_t len, char out[32])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char buf[256];
    unsigned char md[SHA_DIGEST_LENGTH];
    if (len > 200)
        len = 200;
    memcpy(buf, key, len);
    memcpy(buf + len, guid, sizeof guid - 1);
    SHA1((unsigned char *)buf, len + sizeof guid - 1, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

/* Returns -1 to close the connection. */
static int server_input(struct sconn *c)
{
    size_t pos = 0;
    if (!c->open) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end)
            return c->in_len > 16384 ? -1 : 0;
        char *k = memmem(c->in, (size_t)(end - c->in), "Sec-WebSocket-Key:", 18);
        if (!k)
            k = memmem(c->in, (size_t)(end - c->in), "sec-websocket-key:", 18);
        if (!k)
            return -1;
        k += 18;
        while (*k == ' ')
            k++;
        char *e = k;
        while (e < end && *e != '\r')
            e++;
        char acc[32];
        accept_key(k, (size_t)(e - k), acc);
        char head[256];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                         acc);
        queue(c, head, (size_t)n);
        c->open = 1;
        pos = (size_t)(end - c->in) + 4;
    }
    for (;;) {
        size_t have = c->in_len - pos;
        unsigned char *p = (unsigned char *)c->in + pos;
        if (have < 2)
            break;
        int op = p[0] & 0x0f;
        int masked = p[1] & 0x80;
        uint64_t len = p[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (have < 4)
                break;
            len = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (len == 127) {
            if (have < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            hl = 10;
        }
        if (!masked)
            return -1; /* RFC 6455 5.1 */
        if (len > (1u << 24))
            return -1;
        if (have < hl + 4 + len)
            break;
        unsigned char *mask = p + hl, *data = p + hl + 4;
        for (uint64_t i = 0; i < len; i++)
            data[i] ^= mask[i & 3];
        if (op == 8) {
            unsigned char h[2] = {0x88, 0};
            queue(c, h, 2);
            return -1;
        }
        if (op == 1 && len > 7 && memcmp(data, "stream ", 7) == 0) {
            char num[32] = {0};
            memcpy(num, data + 7, len - 7 < 31 ? len - 7 : 31);
            uint64_t bytes = strtoull(num, NULL, 10);
            c->stream_left = bytes / STREAM_PAYLOAD * (uint64_t)STREAM_FRAME;
            c->stream_off = 0;
        } else if (op == 1 || op == 2 || op == 9) {
            unsigned char h[10];
            size_t n = 2;
            h[0] = (unsigned char)(0x80 | (op == 9 ? 10 : op));
            if (len < 126) {
                h[1] = (unsigned char)len;
            } else if (len < 65536) {
                h[1] = 126;
                h[2] = (unsigned char)(len >> 8);
                h[3] = (unsigned char)len;
                n = 4;
            } else {
                h[1] = 127;
                for (int i = 0; i < 8; i++)
                    h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
                n = 10;
            }
            queue(c, h, n);
            queue(c, data, (size_t)len);
        }
        pos += hl + 4 + (size_t)len;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    return 0;
}

static void server_close(int ep, struct sconn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static int run_server(int port)
{
    stream_buf = calloc(STREAM_BUF_FRAMES, STREAM_FRAME);
    for (int i = 0; i < STREAM_BUF_FRAMES; i++) {
        unsigned char *h = (unsigned char *)stream_buf + (size_t)i * STREAM_FRAME;
        h[0] = 0x82;
        h[1] = 127;
        uint64_t len = STREAM_PAYLOAD;
        for (int j = 0; j < 8; j++)
            h[2 + j] = (unsigned char)(len >> (56 - 8 * j));
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0)
        die("listen on %d: %s", port, strerror(errno));
    nonblock(ls);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct sconn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    nonblock(fd);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            int bad = 0;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {
                    grow(&c->in, &c->in_cap, c->in_len + 65536);
                    ssize_t r = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
                    if (r > 0) {
                        c->in_len += (size_t)r;
                        if (c->in_len < c->in_cap)
                            break;
                        continue;
                    }
                    if (r < 0 && errno == EAGAIN)
                        break;
                    bad = 1;
                    break;
                }
                if (!bad && server_input(c) < 0)
                    bad = 1;
                if (c->in_len == 0) { /* idle: give the buffer back */
                    free(c->in);
                    c->in = NULL;
                    c->in_cap = 0;
                }
            }
            int f = flush(c);
            if (bad || f < 0) {
                server_close(ep, c);
                continue;
            }
            struct epoll_event e = {.events = EPOLLIN | (f == 0 ? EPOLLOUT : 0), .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
        }
    }
    return 0;
}

/* ---- client -------------------------------------------------------------------- */

static const unsigned char MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A masked client frame of `len` payload bytes (op 1 text or 2 binary). */
static size_t client_frame(unsigned char *out, int op, const void *payload, size_t len)
{
    size_t n = 2;
    out[0] = (unsigned char)(0x80 | op);
    if (len < 126) {
        out[1] = (unsigned char)(0x80 | len);
    } else {
        out[1] = 0x80 | 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        n = 4;
    }
    memcpy(out + n, MASK, 4);
    n += 4;
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++)
        out[n + i] = p[i] ^ MASK[i & 3];
    return n + len;
}

/* Writes (or reads) all n bytes, waiting on a non-blocking socket; dies on error or close. */
static void io_all(int fd, void *p, size_t n, int writing)
{
    char *c = p;
    while (n) {
        ssize_t r = writing ? write(fd, c, n) : read(fd, c, n);
        if (r < 0 && errno == EAGAIN) {
            usleep(100);
            continue;
        }
        if (r <= 0)
            die("%s: %s", writing ? "write" : "read",
                r < 0 ? strerror(errno) : "the tunnel closed");
        c += r;
        n -= (size_t)r;
    }
}

static void write_all(int fd, const void *p, size_t n)
{
    io_all(fd, (void *)p, n, 1);
}

/* A connected blocking socket with the upgrade done (nothing read past the 101 head). */
static int ws_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect to %d: %s", port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     port);
    write_all(fd, req, (size_t)n);
    char head[4096];
    size_t have = 0;
    while (have < 4 || memcmp(head + have - 4, "\r\n\r\n", 4) != 0) {
        if (have == sizeof head)
            die("upgrade answer too long");
        ssize_t r = read(fd, head + have, 1); /* byte by byte: nothing past the head */
        if (r <= 0)
            die("upgrade: %s", r < 0 ? strerror(errno) : "closed before the answer");
        have += (size_t)r;
    }
    head[have] = 0;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0 || !strstr(head, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        die("upgrade refused: %.80s", head);
    return fd;
}

struct rconn {
    int fd;
    size_t got; /* bytes of the current echo received */
};

static int run_rtt(int port, int conns, double warm, double secs, size_t size)
{
    if (size >= 126)
        die("rtt: SIZE must be below 126");
    unsigned char *payload = malloc(size), frame[256];
    for (size_t i = 0; i < size; i++)
        payload[i] = (unsigned char)('a' + i % 26);
    size_t flen = client_frame(frame, 2, payload, size);
    size_t elen = size + 2;
    unsigned char *expect = malloc(elen);
    expect[0] = 0x82;
    expect[1] = (unsigned char)size;
    memcpy(expect + 2, payload, size);

    int ep = epoll_create1(0);
    struct rconn *cs = calloc((size_t)conns, sizeof *cs);
    unsigned char *rx = malloc((size_t)conns * elen);
    for (int i = 0; i < conns; i++) {
        cs[i].fd = ws_connect(port);
        nonblock(cs[i].fd);
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e);
        write_all(cs[i].fd, frame, flen);
    }
    double t0 = now(), t_go = t0 + warm, t_end = 0;
    uint64_t count = 0;
    int measuring = 0;
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (!measuring && t >= t_go) {
            measuring = 1;
            count = 0;
            t_go = t;
            t_end = t + secs;
            printf("go\n");
            fflush(stdout);
        } else if (measuring && t >= t_end) {
            break;
        }
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            struct rconn *c = &cs[evs[k].data.u32];
            unsigned char *buf = rx + (size_t)evs[k].data.u32 * elen;
            for (;;) {
                ssize_t r = read(c->fd, buf + c->got, elen - c->got);
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r <= 0)
                    die("rtt: read: %s", r < 0 ? strerror(errno) : "the tunnel closed");
                c->got += (size_t)r;
                if (c->got < elen)
                    continue;
                if (memcmp(buf, expect, elen) != 0)
                    die("rtt: the echo differs from the message");
                c->got = 0;
                count++;
                write_all(c->fd, frame, flen);
            }
        }
    }
    double took = now() - t_go;
    printf("done %llu %.6f\n", (unsigned long long)count, took);
    fflush(stdout);
    for (int i = 0; i < conns; i++)
        close(cs[i].fd);
    return 0;
}

static int run_stream(int port, uint64_t bytes)
{
    int fd = ws_connect(port);
    char cmd[64];
    int cl = snprintf(cmd, sizeof cmd, "stream %llu", (unsigned long long)bytes);
    unsigned char frame[128];
    size_t flen = client_frame(frame, 1, cmd, (size_t)cl);
    printf("go\n");
    fflush(stdout);
    double t0 = now();
    write_all(fd, frame, flen);
    size_t cap = 1 << 20;
    unsigned char *buf = malloc(cap);
    uint64_t payload = 0, frame_left = 0;
    unsigned char hdr[10];
    size_t hgot = 0;
    while (payload < bytes) {
        ssize_t r = read(fd, buf, cap);
        if (r <= 0)
            die("stream: read after %llu bytes: %s", (unsigned long long)payload,
                r < 0 ? strerror(errno) : "the tunnel closed");
        size_t i = 0;
        while (i < (size_t)r) {
            if (frame_left) {
                size_t take = (size_t)r - i;
                if (take > frame_left)
                    take = (size_t)frame_left;
                frame_left -= take;
                payload += take;
                i += take;
                continue;
            }
            hdr[hgot++] = buf[i++];
            if (hgot == 2 && (hdr[0] != 0x82 || (hdr[1] & 0x7f) != 127))
                die("stream: unexpected frame header %02x %02x", hdr[0], hdr[1]);
            if (hgot == 10) {
                frame_left = 0;
                for (int j = 0; j < 8; j++)
                    frame_left = frame_left << 8 | hdr[2 + j];
                hgot = 0;
            }
        }
    }
    double took = now() - t0;
    printf("done %llu %.6f\n", (unsigned long long)payload, took);
    fflush(stdout);
    close(fd);
    return 0;
}

static int run_idle(int port, int count)
{
    int *fds = calloc((size_t)count, sizeof *fds);
    unsigned char frame[64], echo[16];
    size_t flen = client_frame(frame, 2, "hello", 5);
    for (int i = 0; i < count; i++) {
        fds[i] = ws_connect(port);
        write_all(fds[i], frame, flen);
        io_all(fds[i], echo, 7, 0);
        if (memcmp(echo, "\x82\x05hello", 7) != 0)
            die("idle: bad echo on tunnel %d", i);
    }
    printf("open %d\n", count);
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) {
        /* stdin closed: close the tunnels all the same */
    }
    for (int i = 0; i < count; i++)
        close(fds[i]);
    return 0;
}

int main(int argc, char **argv)
{
    raise_nofile();
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        return run_server(atoi(argv[2]));
    if (argc == 7 && strcmp(argv[1], "rtt") == 0)
        return run_rtt(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), atof(argv[5]),
                       (size_t)atoi(argv[6]));
    if (argc == 4 && strcmp(argv[1], "stream") == 0)
        return run_stream(atoi(argv[2]), strtoull(argv[3], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "idle") == 0)
        return run_idle(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: wsbench server PORT | rtt PORT CONNS WARM SECS SIZE | "
                    "stream PORT BYTES | idle PORT N\n");
    return 2;
}
