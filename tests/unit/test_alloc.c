/*
 * Allocations per proxied request, counted, not timed: a real worker
 * serves keep-alive GETs from a client thread and proxies them to a small
 * backend thread over loopback; after a warm-up, every allocation any
 * thread makes during N requests is counted. The test fails when the
 * count per request grows past its budget, which is what a per-request
 * malloc on the hot path would do.
 *
 * Counting: under AddressSanitizer through its malloc hooks; otherwise by
 * wrapping glibc's allocator. The client and backend threads allocate
 * nothing in the measured window (fixed buffers, raw sockets).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/proxy.h"
#include "harness.h"
#include "server/codecs.h"

static atomic_long allocations;
static atomic_bool counting;

#if defined(__SANITIZE_ADDRESS__)
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void on_malloc(const volatile void *p, size_t n)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}

static void on_free(const volatile void *p)
{
}

static void install_counter(void)
{
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}

/* The arena cache is off under ASan (use-after-free must stay visible): one more. */
#define BUDGET_EXTRA 1
#else
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);

static void count_one(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
    count_one();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    count_one();
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    count_one();
    return __libc_realloc(p, n);
}

static void install_counter(void)
{
}

#define BUDGET_EXTRA 0
#endif

/*
 * The budget per proxied keep-alive GET, as measured when this test was
 * written: libevent allocates a small chain for each of the four buffers a
 * request passes through (client in/out, upstream in/out). Everything of
 * our own (exchange arena, body buffers, timers, metrics, ids) is reused.
 */
#define BUDGET 4

#define REQUESTS 2000
#define WARMUP 200

static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: test\r\n\r\nok";

static int listen_any(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

/* Reads one request head (no body) into buf; returns false on EOF. */
static bool read_head(int fd, char *buf, size_t cap)
{
    size_t have = 0;
    while (have < 4 || memcmp(buf + have - 4, "\r\n\r\n", 4) != 0) {
        if (have == cap)
            return false;
        ssize_t n = read(fd, buf + have, 1);
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
    return true;
}

/* The backend: answers every request on every connection with `response`. */
static void *backend(void *arg)
{
    int lfd = *(int *)arg;
    char buf[4096];
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        while (read_head(fd, buf, sizeof buf))
            if (write(fd, response, sizeof response - 1) < 0)
                break;
        close(fd);
    }
}

/* Sends one GET on `fd` and reads the whole response; returns false on failure. */
static bool one_request(int fd)
{
    static const char req[] = "GET /x HTTP/1.1\r\nHost: test\r\nUser-Agent: alloc-test\r\n\r\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
        return false;
    char buf[4096];
    if (!read_head(fd, buf, sizeof buf))
        return false;
    char body[2];
    return read(fd, body, 2) == 2 && memcmp(body, "ok", 2) == 0;
}

int main(void)
{
    install_counter();
    uint16_t backend_port = 0, gateway_port = 0;
    int backend_fd = listen_any(&backend_port);
    int probe = listen_any(&gateway_port); /* a free port for the gateway */
    close(probe);
    ok(backend_fd >= 0 && gateway_port, "loopback sockets");

    char dir[] = "/tmp/sluice-test-alloc-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    struct snapshot *s =
        config_from_file(dir,
                         "{\"workers\": 1, \"access_log\": {\"path\": \"off\"},\n"
                         " \"listen\": [{\"address\": \"127.0.0.1:%u\"}],\n"
                         " \"upstreams\": {\"b\": {\"targets\": [\"127.0.0.1:%u\"]}},\n"
                         " \"routes\": [{\"upstream\": \"b\"}]}\n",
                         gateway_port, backend_port);
    ok(s != NULL, "config loads");
    if (!s)
        return test_done();
    config_current_set(s);
    listener_set_codecs(&server_codecs);
    proxy_register();
    struct worker *w = worker_new(0, s);
    ok(w && worker_start(w) == 0, "worker starts");

    pthread_t backend_thread;
    pthread_create(&backend_thread, NULL, backend, &backend_fd);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(gateway_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ok(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connected to the gateway");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bool all_ok = true;
    for (int i = 0; i < WARMUP && all_ok; i++)
        all_ok = one_request(fd);
    atomic_store(&counting, true);
    for (int i = 0; i < REQUESTS && all_ok; i++)
        all_ok = one_request(fd);
    atomic_store(&counting, false);
    ok(all_ok, "every request answered");
    double per_request = (double)atomic_load(&allocations) / REQUESTS;
    printf("allocations per proxied request: %.2f (budget %d)\n", per_request,
           BUDGET + BUDGET_EXTRA);
    ok(per_request <= BUDGET + BUDGET_EXTRA + 0.05,
       "%.2f allocations per request, budget %d: a per-request allocation came back", per_request,
       BUDGET + BUDGET_EXTRA);

    close(fd);
    worker_notify(w, WORKER_STOP);
    worker_join_free(w);
    shutdown(backend_fd, SHUT_RDWR);
    close(backend_fd);
    pthread_join(backend_thread, NULL);
    config_current_set(NULL);
    config_file_remove(dir);
    return test_done();
}
