/*
 * net/loop and the listener's codec handoff: a real listening socket on
 * loopback, a real event_base, and a recording codec table registered the
 * way main() registers the server codecs. Checks that accepted sockets
 * reach the registered codec with the listener's flags (TLS stripped on a
 * cleartext socket), that nothing is served while no codec is registered,
 * and the loop's connection list: detach does not count a closed
 * connection, remove does, and a draining loop exits with its last one.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "net/listener.h"
#include "net/loop.h"
#include "test.h"

/* What the recording codec saw. */
static struct {
    int accepted;
    int fd;
    unsigned flags;
    struct worker *owner;
} seen;

static int record_accept(struct worker *w, int fd, const struct sockaddr_storage *peer,
                         socklen_t peerlen, unsigned flags)
{
    seen.accepted++;
    seen.fd = fd;
    seen.flags = flags;
    seen.owner = w;
    return 0; /* the codec owns fd now */
}

static int record_adopt(struct worker *w, struct conn *c, const struct sockaddr_storage *peer,
                        unsigned flags)
{
    return -1;
}

static const struct listener_codecs recording = {
    .accept = record_accept,
    .adopt_http1 = record_adopt,
    .adopt_http2 = record_adopt,
};

static int closed_calls;

static void count_closed(struct net_loop *l)
{
    closed_calls++;
}

static int drained, stopped;

static void on_drain(struct client_conn *c)
{
    drained++;
}

static void on_stop(struct client_conn *c)
{
    stopped++;
}

/* A bound loopback listener of `loop`; its port in *port. */
static struct listener *open_listener(struct net_loop *loop, unsigned flags, int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char why[128];
    int fd = listener_bind((struct sockaddr *)&a, sizeof a, why, sizeof why);
    ok(fd >= 0, "bind: %s", fd < 0 ? why : "");
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    struct listener *l = listener_new(loop, fd, "127.0.0.1:0");
    ok(l != NULL, "listener_new");
    l->flags = flags;
    l->next = loop->listeners;
    loop->listeners = l;
    return l;
}

static int connect_to(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ok(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect");
    return fd;
}

/* Runs the loop until the codec saw `n` accepts (or a second passes). */
static void run_until_accepted(struct event_base *base, int n)
{
    for (int i = 0; i < 100 && seen.accepted < n; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

static void test_handoff(void)
{
    struct event_base *base = event_base_new();
    struct net_loop loop = {.base = base, .owner = (struct worker *)&loop};
    int port;
    struct listener *l = open_listener(&loop, LISTEN_H2C | LISTEN_TLS, &port);

    /* No codec registered: the socket is accepted and closed at once. */
    listener_set_codecs(NULL);
    int c1 = connect_to(port);
    for (int i = 0; i < 5; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    char byte;
    struct timeval rcv = {1, 0};
    setsockopt(c1, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof rcv);
    is_int(read(c1, &byte, 1), 0, "without codecs the connection is closed");
    is_int(seen.accepted, 0, "nothing reached a codec");
    close(c1);

    /* Registered: the socket reaches the codec, with the loop's owner. */
    listener_set_codecs(&recording);
    ok(listener_codecs() == &recording, "listener_codecs returns the table");
    int c2 = connect_to(port);
    run_until_accepted(base, 1);
    is_int(seen.accepted, 1, "the codec got the socket");
    ok(seen.owner == (struct worker *)&loop, "the codec got the loop's owner");
    is_int(seen.flags, LISTEN_H2C, "cleartext: the listener's flags without LISTEN_TLS");
    ok(seen.fd >= 0, "an accepted socket");
    close(seen.fd);
    close(c2);

    /* Paused listeners accept nothing; resumed ones do. */
    listener_pause_all(&loop, true);
    int c3 = connect_to(port);
    for (int i = 0; i < 5; i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    is_int(seen.accepted, 1, "a paused listener does not accept");
    listener_pause_all(&loop, false);
    run_until_accepted(base, 2);
    is_int(seen.accepted, 2, "a resumed listener accepts the waiting connection");
    close(seen.fd);
    close(c3);

    listener_set_codecs(NULL);
    listener_free(l);
    event_base_free(base);
}

static void test_conn_list(void)
{
    struct event_base *base = event_base_new();
    struct net_loop loop = {.base = base, .conn_closed = count_closed};
    struct client_conn a = {.on_drain = on_drain, .on_stop = on_stop};
    struct client_conn b = a, c = a;
    net_loop_conn_added(&loop, &a);
    net_loop_conn_added(&loop, &b);
    net_loop_conn_added(&loop, &c);
    is_int(loop.num_conns, 3, "three connections");
    ok(loop.conns == &c && c.next == &b && b.next == &a && !a.next, "newest first");

    /* A connection that lives on in another codec is not a closed one. */
    net_loop_conn_detach(&loop, &b);
    is_int(loop.num_conns, 2, "detached");
    is_int(closed_calls, 0, "detach counts no closed connection");
    ok(c.next == &a && a.prev == &c, "the list stays linked");

    net_loop_conn_removed(&loop, &c);
    is_int(closed_calls, 1, "remove counts a closed connection");
    ok(!event_base_got_exit(base), "a loop that is not draining keeps running");

    loop.draining = true;
    for (struct client_conn *x = loop.conns; x; x = x->next)
        x->on_drain(x);
    is_int(drained, 1, "on_drain reached the open connection");
    net_loop_conn_removed(&loop, &a);
    is_int(loop.num_conns, 0, "empty");
    ok(loop.conns == NULL, "no connection linked");
    is_int(closed_calls, 2, "counted");
    event_base_loop(base, EVLOOP_NONBLOCK);
    ok(event_base_got_exit(base), "a draining loop exits with its last connection");
    event_base_free(base);
}

int main(void)
{
    test_handoff();
    test_conn_list();
    return test_done();
}
