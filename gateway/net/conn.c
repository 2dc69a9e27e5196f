#include "net/conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "base/thread_cache.h"

/*
 * One readable event reads at most this much. Large enough that a 1 MiB body
 * takes a handful of reads, small enough that one busy connection cannot
 * monopolise a worker's turn of the loop.
 */
#define CONN_READ_SIZE (64 * 1024)

/*
 * While the input is empty and reads are small (requests, small responses),
 * a read goes into stack space and is then copied into the evbuffer: a
 * small chain comes from malloc's fast path, whereas reserving
 * CONN_READ_SIZE of evbuffer space costs a large allocation and free per
 * request. The stack space is as large as a reserved read, so one read
 * still takes everything; a read larger than CONN_SMALL_READ switches the
 * connection to reserved reads (no copy) until reads are small again.
 */
#define CONN_SMALL_READ 4096

/* Evbuffers lent by idle connections wait in the thread's cache (thread_cache.h). */
static struct evbuffer *borrow(void)
{
    struct thread_cache *tc = thread_cache_self();
    return tc && tc->num_buffers ? tc->buffers[--tc->num_buffers] : evbuffer_new();
}

static void lend(struct evbuffer *b)
{
    struct thread_cache *tc = thread_cache_self();
    if (tc && tc->num_buffers < THREAD_CACHE_BUFFERS)
        tc->buffers[tc->num_buffers++] = b;
    else
        evbuffer_free(b);
}

struct evbuffer *conn_buffer_get(void)
{
    return borrow();
}

void conn_buffer_put(struct evbuffer *b)
{
    if (!b)
        return;
    if (evbuffer_get_length(b))
        evbuffer_free(b);
    else
        lend(b);
}

void conn_release_buffers(struct conn *c)
{
    if (c->ssl || !c->in || !c->out || evbuffer_get_length(c->in) || evbuffer_get_length(c->out))
        return;
    lend(c->in);
    lend(c->out);
    c->in = c->out = NULL;
}

int conn_borrow_buffers(struct conn *c)
{
    if (!c->in)
        c->in = borrow();
    if (!c->out)
        c->out = borrow();
    return c->in && c->out ? 0 : -1;
}

void conn_cache_clear(struct thread_cache *tc)
{
    while (tc->num_buffers)
        evbuffer_free(tc->buffers[--tc->num_buffers]);
}

/*
 * Plain sockets are read and written with socket calls (recv, recvmsg, send,
 * sendmsg), not read/readv/writev: those go through the file layer first
 * (position lock, permission hooks, iterator set-up), about 4% of the CPU a
 * small proxied GET costs, the kernel's share being most of it.
 */
#define CONN_WRITE_VECS 64

/* Sends what `out` holds (up to CONN_WRITE_VECS chains) and drains what was taken. */
static ssize_t send_out(struct evbuffer *out, int fd)
{
    struct evbuffer_iovec vec[CONN_WRITE_VECS];
    int n = evbuffer_peek(out, -1, NULL, vec, CONN_WRITE_VECS);
    if (n <= 0)
        return 0;
    if (n > CONN_WRITE_VECS)
        n = CONN_WRITE_VECS;
    ssize_t sent;
    if (n == 1) {
        sent = send(fd, vec[0].iov_base, vec[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct iovec iov[CONN_WRITE_VECS];
        for (int i = 0; i < n; i++) {
            iov[i].iov_base = vec[i].iov_base;
            iov[i].iov_len = vec[i].iov_len;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
    }
    if (sent > 0)
        evbuffer_drain(out, (size_t)sent);
    return sent;
}

/* Reads into a stack buffer and copies: see CONN_SMALL_READ. */
static void read_small(struct conn *c, int fd)
{
    char buf[CONN_READ_SIZE];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        c->events->on_error(c, errno);
        return;
    }
    if (n > 0 && evbuffer_add(c->in, buf, (size_t)n) < 0) {
        c->events->on_error(c, ENOMEM);
        return;
    }
    c->bulk = n > CONN_SMALL_READ;
    if (n == 0) {
        c->eof = true;
        conn_read_enable(c, false);
    }
    c->events->on_read(c);
}

/* TLS output smaller than one record is pulled together so it goes as one record. */
#define CONN_TLS_RECORD (16 * 1024)

/* ---- TLS ----------------------------------------------------------------- */

/* The write event is wanted by a waiting write, handshake or read. */
/*
 * The write event is made on first need: most connections never wait to
 * write, and an idle keep-alive connection should not carry a 128-byte
 * event it does not use. Returns false when it cannot be made.
 */
static void on_write_ready(evutil_socket_t fd, short what, void *arg);

static bool wev_make(struct conn *c)
{
    if (!c->wev)
        c->wev =
            event_new(event_get_base(&c->rev), c->fd, EV_WRITE | EV_PERSIST, on_write_ready, c);
    return c->wev != NULL;
}

static void wev_add(struct conn *c)
{
    if (wev_make(c))
        event_add(c->wev, NULL);
}

static void wev_del(struct conn *c)
{
    if (c->wev)
        event_del(c->wev);
}

static void wev_active(struct conn *c)
{
    if (wev_make(c))
        event_active(c->wev, EV_WRITE, 0);
}

static void tls_update_wev(struct conn *c)
{
    if ((c->write_wait && !c->tls_write_read) || c->tls_hs_write || c->tls_read_write)
        wev_add(c);
    else
        wev_del(c);
}

/*
 * Empties the thread's OpenSSL error queue before an SSL call, so that
 * SSL_get_error sees only that call's errors. ERR_clear_error walks every
 * slot of the queue (about 800 instructions); the queue is nearly always
 * empty already, which ERR_peek_error tells for a fraction of that.
 */
static void tls_clear_errors(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
}

/* Records a failed TLS operation (SSL_get_error result `e`); returns the errno to report. */
static int tls_error(struct conn *c, int e)
{
    int err = e == SSL_ERROR_SYSCALL && errno ? errno : EPROTO;
    c->tls_failed = true;
    c->tls_error = ERR_peek_last_error();
    ERR_clear_error();
    return err;
}

static void tls_handshake(struct conn *c)
{
    tls_clear_errors();
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            c->tls_hs_write = e == SSL_ERROR_WANT_WRITE;
            tls_update_wev(c);
            return;
        }
        int err = tls_error(c, e);
        c->tls_verify = SSL_get_verify_result(c->ssl);
        c->tls_hs_write = false;
        c->write_wait = false;
        wev_del(c);
        c->events->on_error(c, err);
        return;
    }
    c->handshaking = false;
    c->tls_hs_write = false;
    /* Records that came with the handshake are out of the kernel's sight: read them soon. */
    if (SSL_has_pending(c->ssl))
        event_active(&c->rev, EV_READ, 0);
    if (c->connecting) {
        c->connecting = false;
        if (evbuffer_get_length(c->out) > 0) {
            c->write_wait = true;
            tls_update_wev(c);
            return;
        }
        tls_update_wev(c);
        c->events->on_writable(c);
        return;
    }
    tls_update_wev(c);
    if (c->events->on_handshake)
        c->events->on_handshake(c);
}

/*
 * Writes c->out through TLS, one chain (or one record's worth) per
 * SSL_write. Returns 0 (all written, or waiting: see tls_write_read), or -1
 * with errno.
 */
static int tls_write(struct conn *c)
{
    c->tls_write_read = false;
    for (;;) {
        size_t left = evbuffer_get_length(c->out);
        if (left == 0)
            return 0;
        struct evbuffer_iovec v;
        if (evbuffer_peek(c->out, -1, NULL, &v, 1) < 1)
            return 0;
        size_t want = left < CONN_TLS_RECORD ? left : CONN_TLS_RECORD;
        if (v.iov_len < want) {
            v.iov_base = evbuffer_pullup(c->out, (ssize_t)want);
            v.iov_len = want;
            if (!v.iov_base) {
                errno = ENOMEM;
                return -1;
            }
        }
        size_t n = 0;
        tls_clear_errors();
        if (SSL_write_ex(c->ssl, v.iov_base, v.iov_len, &n)) {
            evbuffer_drain(c->out, n);
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_WANT_READ) {
            c->tls_write_read = true;
            return 0;
        }
        errno = tls_error(c, e);
        return -1;
    }
}

/* tls_read_some's outcome, besides an errno (> 0). */
enum { TLS_READ_MORE = 0, TLS_READ_WAIT = -1, TLS_READ_EOF = -2 };

/*
 * One SSL_read_ex into buf. Returns the bytes read; on failure it returns 0
 * and sets *st to TLS_READ_WAIT (would block, or wants to write),
 * TLS_READ_EOF or an errno.
 */
static size_t tls_read_some(struct conn *c, char *buf, size_t len, int *st)
{
    size_t n = 0;
    tls_clear_errors();
    if (SSL_read_ex(c->ssl, buf, len, &n))
        return n;
    int e = SSL_get_error(c->ssl, 0);
    *st = TLS_READ_WAIT;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->tls_read_write = true;
        tls_update_wev(c);
    } else if (e == SSL_ERROR_ZERO_RETURN) {
        *st = TLS_READ_EOF;
    } else if (e != SSL_ERROR_WANT_READ) {
        *st = tls_error(c, e);
    }
    return 0;
}

/*
 * Reads through TLS like the plain path: small reads into stack space and
 * copied (see CONN_SMALL_READ), larger ones into reserved space. With
 * read-ahead (tls.c) one read() takes in what the kernel holds (up to
 * OpenSSL's buffer), so a small read goes on only while OpenSSL holds
 * bytes (SSL_has_pending: a record still encrypted, or decrypted bytes not
 * yet taken), which the kernel would not wake us for; it does not read
 * again only to see EAGAIN, as the level-triggered read event comes back
 * if the kernel has more. A bulk read goes on up to CONN_READ_SIZE, and
 * past it while OpenSSL holds bytes.
 */
static void tls_on_read(struct conn *c)
{
    if (c->handshaking) {
        tls_handshake(c);
        return;
    }
    if (c->tls_write_read) {
        /* A write waited for this readability: let the write event retry it. */
        c->tls_write_read = false;
        tls_update_wev(c);
    }
    if (c->tls_pending_err) {
        int err = c->tls_pending_err;
        c->tls_pending_err = 0;
        c->events->on_error(c, err);
        return;
    }
    size_t total = 0;
    int st = TLS_READ_MORE;
    if (!c->bulk && evbuffer_get_length(c->in) == 0) {
        char buf[CONN_READ_SIZE];
        size_t used = 0;
        while (st == TLS_READ_MORE && used < sizeof buf) {
            used += tls_read_some(c, buf + used, sizeof buf - used, &st);
            if (!SSL_has_pending(c->ssl))
                break;
        }
        if (used && evbuffer_add(c->in, buf, used) < 0)
            st = ENOMEM;
        total = used;
        /* The space is full and OpenSSL holds more: come back from the loop. */
        if (st == TLS_READ_MORE && used == sizeof buf && SSL_has_pending(c->ssl))
            event_active(&c->rev, EV_READ, 0);
    } else {
        bool more = true;
        while (more) {
            struct evbuffer_iovec vec[2];
            int nvec = evbuffer_reserve_space(c->in, CONN_READ_SIZE, vec, 2);
            if (nvec <= 0) {
                st = ENOMEM;
                break;
            }
            size_t used[2] = {0, 0};
            for (int i = 0; i < nvec && more;) {
                if (used[i] == vec[i].iov_len) {
                    i++;
                    continue;
                }
                size_t n = tls_read_some(c, (char *)vec[i].iov_base + used[i],
                                         vec[i].iov_len - used[i], &st);
                used[i] += n;
                total += n;
                /* A bulk reader expects more: read on up to CONN_READ_SIZE. */
                more = st == TLS_READ_MORE && (total < CONN_READ_SIZE || SSL_has_pending(c->ssl));
            }
            for (int i = 0; i < nvec; i++)
                vec[i].iov_len = used[i];
            evbuffer_commit_space(c->in, vec, nvec);
        }
    }
    c->bulk = total > CONN_SMALL_READ;
    bool eof = st == TLS_READ_EOF;
    int err = st > 0 ? st : 0;
    if (err && total) {
        /* Deliver what arrived first; the error follows from the loop. */
        c->tls_pending_err = err;
        event_active(&c->rev, EV_READ, 0);
        err = 0;
    }
    if (err) {
        c->events->on_error(c, err);
        return;
    }
    if (eof) {
        c->eof = true;
        conn_read_enable(c, false);
    }
    if (total || eof)
        c->events->on_read(c);
}

static void tls_on_write(struct conn *c)
{
    if (c->connecting && c->write_wait) {
        /* The TCP connect finished: start the handshake. */
        int err = c->connect_err;
        socklen_t len = sizeof err;
        if (!err && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        c->write_wait = false;
        if (err) {
            c->connecting = false;
            wev_del(c);
            c->events->on_error(c, err);
            return;
        }
        conn_read_enable(c, true);
        tls_handshake(c);
        return;
    }
    if (c->handshaking) {
        tls_handshake(c);
        return;
    }
    if (c->tls_read_write) {
        c->tls_read_write = false;
        tls_update_wev(c);
        if (c->reading)
            event_active(&c->rev, EV_READ, 0);
        if (!c->write_wait)
            return;
    }
    if (tls_write(c) < 0) {
        c->write_wait = false;
        tls_update_wev(c);
        c->events->on_error(c, errno);
        return;
    }
    if (evbuffer_get_length(c->out) == 0) {
        c->write_wait = false;
        tls_update_wev(c);
        c->events->on_writable(c);
        return;
    }
    tls_update_wev(c);
}

/* ---- events ---------------------------------------------------------------- */

static void on_read_ready(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    /* An idle connection lent its buffers out; borrow a pair back. */
    if ((!c->in || !c->out) && conn_borrow_buffers(c) < 0) {
        c->events->on_error(c, ENOMEM);
        return;
    }
    if (c->ssl) {
        tls_on_read(c);
        return;
    }
    if (!c->bulk && evbuffer_get_length(c->in) == 0) {
        read_small(c, fd);
        return;
    }
    struct evbuffer_iovec vec[2];
    int nvec = evbuffer_reserve_space(c->in, CONN_READ_SIZE, vec, 2);
    if (nvec <= 0) {
        c->events->on_error(c, ENOMEM);
        return;
    }
    struct iovec iov[2];
    for (int i = 0; i < nvec; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)nvec};
    ssize_t n = recvmsg(fd, &msg, 0);
    if (n < 0) {
        evbuffer_commit_space(c->in, vec, 0);
        if (errno == EAGAIN || errno == EINTR)
            return;
        c->events->on_error(c, errno);
        return;
    }
    /* Commit only what was read: shorten the vectors to the byte count. */
    size_t left = (size_t)n;
    for (int i = 0; i < nvec; i++) {
        if (vec[i].iov_len > left)
            vec[i].iov_len = left;
        left -= vec[i].iov_len;
    }
    evbuffer_commit_space(c->in, vec, nvec);
    c->bulk = n > CONN_SMALL_READ;
    if (n == 0) {
        c->eof = true;
        /* A closed peer keeps the socket readable: stop polling it. */
        conn_read_enable(c, false);
    }
    c->events->on_read(c);
}

static void on_write_ready(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->ssl) {
        tls_on_write(c);
        return;
    }
    if (c->connecting) {
        int err = c->connect_err;
        socklen_t len = sizeof err;
        if (!err && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        c->connecting = false;
        if (err) {
            wev_del(c);
            c->write_wait = false;
            c->events->on_error(c, err);
            return;
        }
        if (evbuffer_get_length(c->out) == 0) {
            wev_del(c);
            c->write_wait = false;
            conn_read_enable(c, true);
            c->events->on_writable(c);
            return;
        }
        conn_read_enable(c, true);
    }
    ssize_t n = send_out(c->out, fd);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        wev_del(c);
        c->write_wait = false;
        c->events->on_error(c, errno);
        return;
    }
    if (evbuffer_get_length(c->out) == 0) {
        wev_del(c);
        c->write_wait = false;
        c->events->on_writable(c);
    }
}

static int setup(struct conn *c, struct event_base *base, int fd, const struct conn_events *events,
                 void *owner)
{
    c->fd = fd;
    c->events = events;
    c->owner = owner;
    c->eof = false;
    c->reading = false;
    c->connecting = false;
    c->write_wait = false;
    c->bulk = false;
    c->connect_err = 0;
    c->handshaking = false;
    c->tls_hs_write = c->tls_read_write = c->tls_write_read = false;
    c->tls_failed = false;
    c->tls_pending_err = 0;
    c->tls_error = 0;
    c->tls_verify = 0;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev_set = event_assign(&c->rev, base, fd, EV_READ | EV_PERSIST, on_read_ready, c) == 0;
    c->wev = NULL; /* made on the first write that must wait: see wev_add */
    if (!c->in || !c->out || !c->rev_set) {
        c->fd = -1;
        conn_close(c);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

struct conn *conn_new(void)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c)
        c->fd = -1;
    return c;
}

void conn_free(struct conn *c)
{
    if (!c)
        return;
    conn_close(c);
    free(c);
}

void conn_set_owner(struct conn *c, const struct conn_events *events, void *owner)
{
    c->events = events;
    c->owner = owner;
}

int conn_open(struct conn *c, struct event_base *base, int fd, const struct conn_events *events,
              void *owner)
{
    if (setup(c, base, fd, events, owner) < 0)
        return -1;
    conn_read_enable(c, true);
    return 0;
}

int conn_connect(struct conn *c, struct event_base *base, const struct sockaddr *addr,
                 socklen_t addrlen, const struct conn_events *events, void *owner)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setup(c, base, fd, events, owner) < 0) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    c->connecting = true;
    c->connect_err = 0;
    wev_add(c);
    c->write_wait = true;
    if (connect(fd, addr, addrlen) < 0 && errno != EINPROGRESS) {
        /* Report from the loop, so callers see one failure path. */
        c->connect_err = errno;
        wev_active(c);
    }
    return 0;
}

void conn_read_enable(struct conn *c, bool on)
{
    if (c->fd < 0 || on == c->reading)
        return;
    if (on && c->eof)
        return;
    if (on)
        event_add(&c->rev, NULL);
    else
        event_del(&c->rev);
    c->reading = on;
}

int conn_flush(struct conn *c)
{
    if (c->fd < 0)
        return -1;
    if (c->connecting || c->write_wait)
        return 0; /* the write event will carry on */
    if (!c->out || evbuffer_get_length(c->out) == 0)
        return 0;
    if (c->ssl) {
        if (c->handshaking)
            return 0;
        if (tls_write(c) < 0)
            return -1;
        if (evbuffer_get_length(c->out) > 0) {
            c->write_wait = true;
            tls_update_wev(c);
        }
        return 0;
    }
    ssize_t n = send_out(c->out, c->fd);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        return -1;
    if (evbuffer_get_length(c->out) > 0) {
        wev_add(c);
        c->write_wait = true;
    }
    return 0;
}

int conn_tls_accept(struct conn *c, SSL *ssl)
{
    if (c->fd < 0 || c->ssl || !SSL_set_fd(ssl, c->fd)) {
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    c->ssl = ssl;
    c->handshaking = true;
    SSL_set_accept_state(ssl);
    conn_read_enable(c, true);
    return 0;
}

void conn_tls_handshake_now(struct conn *c)
{
    if (c->ssl && c->handshaking && !c->connecting)
        tls_handshake(c);
}

int conn_tls_connect(struct conn *c, SSL *ssl)
{
    if (c->fd < 0 || c->ssl || !c->connecting || !SSL_set_fd(ssl, c->fd)) {
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    c->ssl = ssl;
    c->handshaking = true;
    SSL_set_connect_state(ssl);
    return 0;
}

/* One close_notify, if the session is up and none was sent; never waits. */
static void tls_close_notify(struct conn *c)
{
    if (!c->ssl || c->fd < 0 || c->handshaking || c->tls_failed ||
        (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN))
        return;
    ERR_clear_error();
    SSL_shutdown(c->ssl);
    ERR_clear_error();
}

void conn_shutdown_write(struct conn *c)
{
    if (c->fd < 0)
        return;
    tls_close_notify(c);
    shutdown(c->fd, SHUT_WR);
}

void conn_close(struct conn *c)
{
    if (c->ssl) {
        tls_close_notify(c);
        SSL_free(c->ssl);
        c->ssl = NULL;
        c->handshaking = false;
    }
    if (c->rev_set)
        event_del(&c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    c->rev_set = false;
    c->wev = NULL;
    c->in = c->out = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->reading = false;
    c->write_wait = false;
}
