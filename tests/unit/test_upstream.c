/*
 * test_upstream: targets from IP literals, the hosts file and a fake DNS
 * server on loopback (refresh, vanished and returning addresses, failures),
 * passive marks, exclusion, balancing through upstream_pick, and active
 * health checks against a tiny loopback HTTP server. Only 127.0.0.0/8.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "conf/config.h"
#include "upstream/health.h"
#include "test.h"
#include "upstream/upstream.h"

static struct event_base *base;
static struct evdns_base *dns;

static struct upstream_config make_cfg(const char *name, struct target_config *targets, size_t n,
                                       enum balance_kind balance)
{
    struct upstream_config cfg = {0};
    cfg.name = (char *)name;
    cfg.targets = targets;
    cfg.num_targets = n;
    cfg.balance = balance;
    cfg.keepalive = 64;
    cfg.connect_timeout_ms = 2000;
    cfg.timeout_ms = 30000;
    cfg.retries = 1;
    cfg.dns_refresh_ms = 5000;
    return cfg;
}

static struct target *find(struct upstream_rt *u, const char *name)
{
    for (size_t i = 0; i < u->num_targets; i++) {
        if (strcmp(u->targets[i]->name, name) == 0)
            return u->targets[i];
    }
    return NULL;
}

/* Runs the loop until cond(arg) holds or `ms` pass; returns cond(arg). */
struct wait {
    bool (*cond)(void *);
    void *arg;
};

static void on_wait_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wait *w = arg;
    if (w->cond && w->cond(w->arg))
        event_base_loopbreak(base);
}

static void on_wait_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_base_loopbreak(base);
}

/* Not event_base_loopexit: its timer would outlive an early break and cut the next run short. */
static bool run_until(bool (*cond)(void *), void *arg, int ms)
{
    struct wait w = {cond, arg};
    struct event *check = event_new(base, -1, EV_PERSIST, on_wait_check, &w);
    struct event *deadline = evtimer_new(base, on_wait_deadline, NULL);
    struct timeval tick = {0, 5000}, limit = {ms / 1000, (ms % 1000) * 1000};
    event_add(check, &tick);
    event_add(deadline, &limit);
    event_base_dispatch(base);
    event_free(check);
    event_free(deadline);
    return cond ? cond(arg) : true;
}

/* ---- a fake DNS server on 127.0.0.1: answers A queries from a list ---- */

struct fake_dns {
    int fd;
    struct event *ev;
    uint32_t addrs[4]; /* host order */
    int num_addrs;
    bool nxdomain;
    int queries;
};

static void on_dns_query(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct fake_dns *d = arg;
    unsigned char q[512], r[512];
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof(from);
    ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fromlen);
    if (n < 17)
        return;
    d->queries++;
    size_t off = 12;
    while (off < (size_t)n && q[off] != 0)
        off += q[off] + 1u;
    off += 5; /* the root label, QTYPE, QCLASS */
    if (off > (size_t)n)
        return;
    int qtype = q[off - 4] << 8 | q[off - 3];
    memcpy(r, q, off);
    r[2] = 0x80 | (q[2] & 0x01); /* QR, RD copied */
    r[3] = d->nxdomain ? 0x83 : 0x80;
    r[4] = 0;
    r[5] = 1;
    int answers = !d->nxdomain && qtype == 1 ? d->num_addrs : 0;
    memset(r + 6, 0, 6);
    r[7] = (unsigned char)answers;
    for (int i = 0; i < answers; i++) {
        unsigned char rr[16] = {0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4};
        uint32_t a = htonl(d->addrs[i]);
        memcpy(rr + 12, &a, 4);
        memcpy(r + off, rr, sizeof(rr));
        off += sizeof(rr);
    }
    sendto(fd, r, off, 0, (struct sockaddr *)&from, fromlen);
}

static int fake_dns_start(struct fake_dns *d)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0 || bind(d->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(d->fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    d->ev = event_new(base, d->fd, EV_READ | EV_PERSIST, on_dns_query, d);
    event_add(d->ev, NULL);
    return ntohs(sin.sin_port);
}

static void fake_dns_stop(struct fake_dns *d)
{
    event_free(d->ev);
    close(d->fd);
}

/* ---- tests ---- */

static void test_ip_literals(void)
{
    struct target_config tc[] = {{"127.0.0.1", 8081, 1}, {"::1", 8082, 2}, {"127.0.0.2", 80, 0}};
    struct upstream_config cfg = make_cfg("literals", tc, 3, BALANCE_ROUND_ROBIN);
    struct upstream_rt *u = upstream_rt_new(&cfg, base, dns, false);
    ok(u != NULL, "upstream_rt_new");
    is_int(u->num_targets, 3);
    is_str(u->targets[0]->name, "127.0.0.1:8081");
    is_str(u->targets[1]->name, "[::1]:8082");
    is_int(u->targets[1]->weight, 2);
    is_int(u->targets[2]->weight, 1);
    ok(u->targets[0]->active && target_is_healthy(u->targets[0]), "active and healthy");
    ok(u->targets[0]->config == &tc[0], "config link");
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&u->targets[0]->addr;
    is_int(ntohs(sin->sin_port), 8081);
    is_int(upstream_healthy_count(u), 3);
    upstream_rt_free(u);
}

static bool has_targets(void *arg)
{
    return ((struct upstream_rt *)arg)->num_targets > 0;
}

static void test_localhost(void)
{
    struct target_config tc[] = {{"localhost", 9, 1}};
    struct upstream_config cfg = make_cfg("hosts", tc, 1, BALANCE_ROUND_ROBIN);
    struct upstream_rt *u = upstream_rt_new(&cfg, base, dns, false);
    ok(run_until(has_targets, u, 2000), "localhost resolves");
    ok(find(u, "127.0.0.1:9") != NULL, "localhost is 127.0.0.1:9");
    struct target *t = upstream_pick(u, NULL, NULL, 0);
    ok(t && strncmp(t->name, "127.0.0.1", 9) + strncmp(t->name, "[::1]", 5) != 0, "pick");
    upstream_rt_free(u);
}

static void test_unresolvable(void)
{
    /* No nameserver but the fake one, which says NXDOMAIN. */
    struct fake_dns d = {0};
    int port = fake_dns_start(&d);
    ok(port > 0, "fake dns");
    struct evdns_base *dns2 = evdns_base_new(base, 0);
    char ns[32];
    snprintf(ns, sizeof(ns), "127.0.0.1:%d", port);
    is_int(evdns_base_nameserver_ip_add(dns2, ns), 0);
    d.nxdomain = true;

    struct target_config tc[] = {{"no-such-host.invalid", 80, 1}};
    struct upstream_config cfg = make_cfg("nxdomain", tc, 1, BALANCE_ROUND_ROBIN);
    struct upstream_rt *u = upstream_rt_new(&cfg, base, dns2, false);
    run_until(NULL, NULL, 200);
    ok(d.queries > 0, "the name was looked up");
    is_int(u->num_targets, 0);
    ok(upstream_pick(u, NULL, NULL, 0) == NULL, "no target to pick");
    is_int(upstream_healthy_count(u), 0);
    upstream_rt_free(u);

    /* A lookup still in flight when the upstream goes: nobody answers. */
    event_del(d.ev);
    u = upstream_rt_new(&cfg, base, dns2, false);
    run_until(NULL, NULL, 20);
    upstream_rt_free(u);
    /* The cancelled lookup calls back from the loop, after the free. */
    run_until(NULL, NULL, 20);

    /* Without any evdns_base names never resolve, and nothing breaks. */
    u = upstream_rt_new(&cfg, base, NULL, false);
    ok(u && u->num_targets == 0, "no dns base");
    upstream_rt_free(u);

    evdns_base_free(dns2, 1);
    fake_dns_stop(&d);
}

static bool count_is_3(void *arg)
{
    return ((struct upstream_rt *)arg)->num_targets == 3;
}

static void test_refresh(void)
{
    struct fake_dns d = {0};
    int port = fake_dns_start(&d);
    struct evdns_base *dns2 = evdns_base_new(base, 0);
    char ns[32];
    snprintf(ns, sizeof(ns), "127.0.0.1:%d", port);
    evdns_base_nameserver_ip_add(dns2, ns);
    d.addrs[0] = 0x7f000002;
    d.addrs[1] = 0x7f000003;
    d.num_addrs = 2;

    struct target_config tc[] = {{"svc.test", 8080, 2}, {"127.0.0.1", 8080, 1}};
    struct upstream_config cfg = make_cfg("refresh", tc, 2, BALANCE_ROUND_ROBIN);
    cfg.dns_refresh_ms = 30;
    struct upstream_rt *u = upstream_rt_new(&cfg, base, dns2, false);
    is_int(u->num_targets, 1); /* the literal, at once */
    ok(run_until(count_is_3, u, 2000), "two addresses resolved");
    struct target *a2 = find(u, "127.0.0.2:8080");
    struct target *a3 = find(u, "127.0.0.3:8080");
    ok(a2 && a3 && a2->active && a3->active, "both active");
    is_int(a2 ? a2->weight : 0, 2);
    is_int(upstream_healthy_count(u), 3);

    /* 127.0.0.2 goes, 127.0.0.4 comes. */
    d.addrs[0] = 0x7f000004;
    for (int i = 0; i < 200 && !find(u, "127.0.0.4:8080"); i++)
        run_until(NULL, NULL, 10);
    struct target *a4 = find(u, "127.0.0.4:8080");
    ok(a4 && a4->active, "new address added");
    ok(find(u, "127.0.0.2:8080") == a2 && !a2->active, "vanished address kept, inactive");
    ok(a3->active, "remaining address active");
    is_int(u->num_targets, 4);
    for (int i = 0; i < 20; i++)
        ok(upstream_pick(u, NULL, NULL, 0) != a2, "inactive target never picked");

    /* 127.0.0.2 returns: the same target object. */
    d.addrs[0] = 0x7f000002;
    d.num_addrs = 1;
    for (int i = 0; i < 200 && !(a2->active && !a3->active); i++)
        run_until(NULL, NULL, 10);
    ok(a2->active && !a3->active && !a4->active, "returning address reuses its target");
    is_int(u->num_targets, 4);

    /* The name stops resolving: targets stay as they were. */
    d.nxdomain = true;
    int before = d.queries;
    for (int i = 0; i < 200 && d.queries < before + 4; i++)
        run_until(NULL, NULL, 10);
    ok(d.queries >= before + 4, "refreshed while failing");
    ok(a2->active && !a3->active, "failure keeps targets");
    is_int(u->num_targets, 4);

    upstream_rt_free(u);
    run_until(NULL, NULL, 10);
    evdns_base_free(dns2, 1);
    fake_dns_stop(&d);
}

static void test_mark_and_exclude(void)
{
    struct target_config tc[] = {{"127.0.0.1", 9001, 1}, {"127.0.0.1", 9002, 1}};
    struct upstream_config cfg = make_cfg("marks", tc, 2, BALANCE_ROUND_ROBIN);
    struct upstream_rt *u = upstream_rt_new(&cfg, base, dns, false);
    struct target *a = u->targets[0], *b = u->targets[1];

    upstream_mark_failed(a);
    ok(!target_is_healthy(a), "marked target is unhealthy");
    int64_t left = atomic_load(&a->health->down_until_ms) - upstream_now_ms();
    ok(left > 4900 && left <= 5000, "5000 ms without health_check: %lld", (long long)left);
    is_int(upstream_healthy_count(u), 1);
    for (int i = 0; i < 10; i++)
        ok(upstream_pick(u, NULL, NULL, 0) == b, "pick skips the marked target");

    /* Excluding the only healthy one leaves nothing. */
    struct target *ex[] = {b};
    ok(upstream_pick(u, NULL, ex, 1) == NULL, "exclusion");

    /* Health is shared by upstream name and address: another worker's rt sees it. */
    struct upstream_rt *u2 = upstream_rt_new(&cfg, base, dns, false);
    ok(u2->targets[0]->health == a->health && !target_is_healthy(u2->targets[0]),
       "health shared across upstream_rt");
    upstream_rt_free(u2);

    atomic_store(&a->health->down_until_ms, 0);
    ok(target_is_healthy(a), "mark expires");
    ok(upstream_pick(u, NULL, ex, 1) == a, "exclusion leaves the other");
    atomic_store(&a->health->active_down, true);
    ok(!target_is_healthy(a), "active_down");
    atomic_store(&a->health->active_down, false);

    cfg.health.enabled = true;
    cfg.health.interval_ms = 700;
    upstream_mark_failed(a);
    left = atomic_load(&a->health->down_until_ms) - upstream_now_ms();
    ok(left > 600 && left <= 700, "interval_ms with health_check: %lld", (long long)left);
    atomic_store(&a->health->down_until_ms, 0);
    upstream_rt_free(u);
}

static void test_pick_balance(void)
{
    struct target_config tc[] = {{"127.0.0.1", 9101, 1}, {"127.0.0.1", 9102, 3}};
    struct upstream_config cfg = make_cfg("balance", tc, 2, BALANCE_ROUND_ROBIN);
    struct upstream_rt *u = upstream_rt_new(&cfg, base, dns, false);
    int counts[2] = {0, 0};
    for (int i = 0; i < 400; i++)
        counts[upstream_pick(u, NULL, NULL, 0) == u->targets[1]]++;
    is_int(counts[0], 100);
    is_int(counts[1], 300);

    cfg.balance = BALANCE_LEAST_CONN;
    u->targets[1]->in_flight = 5;
    ok(upstream_pick(u, NULL, NULL, 0) == u->targets[0], "least_conn");
    u->targets[1]->in_flight = 0;

    cfg.balance = BALANCE_RANDOM;
    counts[0] = counts[1] = 0;
    for (int i = 0; i < 400; i++)
        counts[upstream_pick(u, NULL, NULL, 0) == u->targets[1]]++;
    ok(counts[1] > 240 && counts[1] < 360, "random weighted: %d / 400", counts[1]);

    cfg.balance = BALANCE_IP_HASH;
    struct balance_key key = {SLICE_LIT("192.0.2.7"), {NULL, 0}};
    struct target *first = upstream_pick(u, &key, NULL, 0);
    bool same = true;
    for (int i = 0; i < 20; i++)
        same &= upstream_pick(u, &key, NULL, 0) == first;
    ok(first && same, "ip_hash is sticky");
    struct target *ex[] = {first};
    struct target *other = upstream_pick(u, &key, ex, 1);
    ok(other && other != first, "ip_hash moves an excluded key");

    cfg.balance = BALANCE_HEADER;
    struct balance_key empty = {SLICE_LIT("192.0.2.7"), {NULL, 0}};
    counts[0] = counts[1] = 0;
    for (int i = 0; i < 40; i++)
        counts[upstream_pick(u, &empty, NULL, 0) == u->targets[1]]++;
    is_int(counts[1], 30); /* no header value: weighted round robin */
    upstream_rt_free(u);
}

/* ---- active health checks against a loopback HTTP server ---- */

struct http_server {
    int fd;
    struct event *ev;
    int status;
    char last_request[512];
    int requests;
};

struct http_conn {
    struct http_server *server;
    struct event *ev;
    char buf[512];
    size_t len;
};

static void on_http_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct http_conn *c = arg;
    ssize_t n = recv(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n > 0) {
        c->len += (size_t)n;
        c->buf[c->len] = 0;
        if (!strstr(c->buf, "\r\n\r\n") && c->len < sizeof(c->buf) - 1)
            return;
        struct http_server *s = c->server;
        snprintf(s->last_request, sizeof(s->last_request), "%s", c->buf);
        s->requests++;
        char resp[128];
        int len =
            snprintf(resp, sizeof(resp), "HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n", s->status);
        send(fd, resp, (size_t)len, MSG_NOSIGNAL);
    }
    event_free(c->ev);
    close(fd);
    free(c);
}

static void on_http_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0)
        return;
    struct http_conn *c = calloc(1, sizeof(*c));
    c->server = arg;
    c->ev = event_new(base, cfd, EV_READ | EV_PERSIST, on_http_read, c);
    event_add(c->ev, NULL);
}

static int http_server_start(struct http_server *s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        listen(s->fd, 16) < 0 || getsockname(s->fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    s->ev = event_new(base, s->fd, EV_READ | EV_PERSIST, on_http_accept, s);
    event_add(s->ev, NULL);
    return ntohs(sin.sin_port);
}

static bool is_down(void *arg)
{
    return atomic_load(&((struct target *)arg)->health->active_down);
}

static bool is_up(void *arg)
{
    return !is_down(arg);
}

static void test_health_checks(void)
{
    struct http_server s = {.status = 200};
    int port = http_server_start(&s);
    ok(port > 0, "http server");

    /* A port nobody listens on: bind, learn it, close. */
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sin);
    int tmp = socket(AF_INET, SOCK_STREAM, 0);
    bind(tmp, (struct sockaddr *)&sin, sizeof(sin));
    getsockname(tmp, (struct sockaddr *)&sin, &len);
    close(tmp);

    struct target_config tc[] = {{"127.0.0.1", (uint16_t)port, 1},
                                 {"127.0.0.1", ntohs(sin.sin_port), 1}};
    struct upstream_config cfg = make_cfg("checked", tc, 2, BALANCE_ROUND_ROBIN);
    cfg.health = (struct health_config){true, "/healthz", 30, 200, 2, 2};
    struct upstream_rt *u = upstream_rt_new(&cfg, base, dns, true);
    struct target *good = u->targets[0], *closed = u->targets[1];

    ok(run_until(is_down, closed, 2000), "refused target goes down");
    ok(!is_down(good), "answering target stays up");
    ok(s.requests >= 1, "server saw probes");
    char host[64];
    snprintf(host, sizeof(host), "Host: 127.0.0.1:%d\r\n", port);
    ok(strncmp(s.last_request, "GET /healthz HTTP/1.1\r\n", 23) == 0, "request line: %s",
       s.last_request);
    ok(strstr(s.last_request, host) != NULL, "Host header");
    ok(strstr(s.last_request, "Connection: close\r\n") != NULL, "Connection: close");
    ok(strstr(s.last_request, "User-Agent: sluice-health\r\n") != NULL, "User-Agent");
    ok(upstream_pick(u, NULL, NULL, 0) == good, "pick avoids the actively-down target");

    s.status = 503;
    ok(run_until(is_down, good, 2000), "5xx makes it go down");
    s.status = 301;
    ok(run_until(is_up, good, 2000), "3xx brings it back");

    /* Stop with probes possibly in flight: ASan checks nothing leaks. */
    upstream_rt_free(u);
    event_free(s.ev);
    close(s.fd);
    run_until(NULL, NULL, 20);
}

int main(void)
{
    base = event_base_new();
    /* No nameservers: only the hosts file. */
    dns = evdns_base_new(base, 0);
    evdns_base_load_hosts(dns, NULL);

    test_ip_literals();
    test_localhost();
    test_unresolvable();
    test_refresh();
    test_mark_and_exclude();
    test_pick_balance();
    test_health_checks();

    evdns_base_free(dns, 1);
    event_base_free(base);
    upstream_health_table_free();
    return test_done();
}
