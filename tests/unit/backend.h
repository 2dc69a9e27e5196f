/*
 * backend.h: a scripted HTTP/1.1 upstream for the proxy and codec unit
 * tests: a real loopback listener served by one thread, one connection at
 * a time, with blocking sockets. Each connection answers its requests by
 * the backend's mode; the counters say what it saw.
 */
#ifndef SLUICE_TEST_BACKEND_H
#define SLUICE_TEST_BACKEND_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum backend_mode {
    BACKEND_ANSWER = 0,       /* 200 "ok" to every request, keep-alive */
    BACKEND_ANSWER_THEN_DROP, /* answers the first request of a connection, closes on the next */
    BACKEND_SWALLOW,          /* reads the request, closes without answering */
    BACKEND_RAW,              /* reads the request, writes `raw` (then `raw2` after 200 ms) */
};

struct backend {
    int lfd;
    unsigned short port;
    enum backend_mode mode;
    const char *raw;
    const char *raw2;
    atomic_int conns;
    atomic_int requests;
    char last[4096]; /* the last request head */
    pthread_t thread;
};

/* A free loopback port with nothing listening (connections are refused). */
static inline unsigned short dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* A loopback listener that is never accepted from: connects succeed, nothing answers. */
static inline int silent_listener(unsigned short *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* Reads one request (head and Content-Length body). False on EOF. */
static inline bool backend_read_request(struct backend *b, int fd)
{
    char head[4096];
    size_t have = 0;
    while (have < 4 || memcmp(head + have - 4, "\r\n\r\n", 4) != 0) {
        if (have == sizeof head - 1)
            return false;
        ssize_t n = read(fd, head + have, 1);
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
    head[have] = '\0';
    memcpy(b->last, head, have + 1);
    const char *cl = strcasestr(head, "\r\ncontent-length:");
    long left = cl ? strtol(cl + 17, NULL, 10) : 0;
    char buf[16384];
    while (left > 0) {
        ssize_t n = read(fd, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
        if (n <= 0)
            return false;
        left -= n;
    }
    atomic_fetch_add(&b->requests, 1);
    return true;
}

static inline void backend_write(int fd, const char *s)
{
    if (write(fd, s, strlen(s)) < 0)
        return;
}

static void *backend_main(void *arg)
{
    struct backend *b = arg;
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for (;;) {
        int fd = accept(b->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        atomic_fetch_add(&b->conns, 1);
        for (int i = 0; backend_read_request(b, fd); i++) {
            if (b->mode == BACKEND_SWALLOW || (b->mode == BACKEND_ANSWER_THEN_DROP && i > 0))
                break;
            if (b->mode == BACKEND_RAW) {
                backend_write(fd, b->raw);
                if (b->raw2) {
                    usleep(200 * 1000);
                    backend_write(fd, b->raw2);
                }
                usleep(100 * 1000);
                break;
            }
            backend_write(fd, ok);
        }
        close(fd);
    }
}

/* Starts a backend on a free loopback port. */
static inline void backend_start(struct backend *b, enum backend_mode mode)
{
    memset(b, 0, sizeof *b);
    b->mode = mode;
    b->lfd = silent_listener(&b->port);
    pthread_create(&b->thread, NULL, backend_main, b);
}

static inline void backend_stop(struct backend *b)
{
    shutdown(b->lfd, SHUT_RDWR);
    close(b->lfd);
    pthread_join(b->thread, NULL);
}

#endif
