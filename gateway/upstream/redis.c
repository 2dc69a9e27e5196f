/*
 * redis: see redis.h for the contract. How it keeps it:
 *
 * hiredis owns an operation while its reply callback is pending
 * (op->in_hiredis); the caller owns it until its result is delivered or it
 * is cancelled (op->where != OP_NONE). It is freed when neither holds it.
 * Results are never handed to the caller from inside hiredis: a finished
 * operation moves to the `done` list and the `deliver` event hands it over
 * from the loop, so the caller may free anything, this client included
 * (`freed` tells the delivery loop to stop touching it).
 *
 * A connection is dropped by us (drop) or by hiredis (connect error, EOF):
 * either way the operations in flight fail at once and a back-off timer
 * reconnects. After a drop the context's `data` is NULL, so its callbacks
 * still to come from hiredis (run with NULL replies while it frees itself)
 * find no client and only release their operations.
 */
#include "upstream/redis.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "base/clock.h"
#include "base/log.h"
#include "conf/config.h"
#include "net/addr.h"

#define MAX_SCRIPTS 8

enum op_where { OP_NONE = 0, OP_PENDING, OP_DONE };

struct redis_op {
    struct redis_client *client; /* NULL once the client is freed */
    redis_done_fn fn;            /* NULL once cancelled */
    void *arg;
    const struct redis_script *script;
    int64_t start_us, deadline_us;
    bool in_hiredis;
    bool unsent;  /* waiting in `pending` for the first connect's name lookup */
    bool retried; /* sent again as EVAL after NOSCRIPT */
    enum op_where where;
    struct redis_op *prev, *next; /* in the pending or the done list */
    struct redis_result result;
    int argc;
    const char **argv; /* "EVALSHA", sha, numkeys, keys and args; in the same block */
    size_t *argvlen;
};

struct op_list {
    struct redis_op *head, *tail;
};

enum client_state { C_CONNECTING = 0, C_READY, C_DOWN };

/* A name lookup in flight; its callback always runs and frees it (see upstream.c). */
struct lookup {
    struct redis_client *client; /* NULL once detached */
};

struct redis_client {
    const struct redis_config *cfg;
    struct event_base *base;
    struct evdns_base *dns;
    char *host; /* NULL for a unix socket */
    uint16_t port;
    const char *unix_path;

    redisAsyncContext *ac;
    enum client_state state;
    bool queue_while_connecting; /* true until the first failure */
    bool down_logged;
    int backoff_ms;
    struct lookup *lookup;
    struct event *conn_timer; /* handshake timeout, or the back-off before reconnecting */
    struct event *op_timer;   /* the oldest pending command's deadline */
    struct event *deliver;
    bool *freed; /* set while delivering: tells the loop the client is gone */

    const struct redis_script *loaded[MAX_SCRIPTS]; /* SCRIPT LOADed on this connection */
    size_t num_loaded;

    struct op_list pending; /* sent, in send order (= deadline order) */
    struct op_list done;    /* finished, not yet delivered */
};

void redis_script_init(struct redis_script *s)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(s->source, strlen(s->source), md, &len, EVP_sha1(), NULL);
    for (unsigned i = 0; i < len && i < 20; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
}

static void list_append(struct op_list *l, struct redis_op *op)
{
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
}

static void list_remove(struct op_list *l, struct redis_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->prev = op->next = NULL;
}

static void op_maybe_free(struct redis_op *op)
{
    if (!op->in_hiredis && op->where == OP_NONE)
        free(op);
}

/* Moves a pending operation to `done` with `status`, for delivery from the loop. */
static void complete(struct redis_client *c, struct redis_op *op, enum redis_status status)
{
    list_remove(&c->pending, op);
    op->result.status = status;
    op->result.latency_us = clock_mono_us() - op->start_us;
    op->where = OP_DONE;
    list_append(&c->done, op);
    event_active(c->deliver, EV_TIMEOUT, 0);
}

static void arm_ms(struct event *ev, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(ev, &tv);
}

static const char *describe(const struct redis_client *c)
{
    return c->cfg->address;
}

/* The connection is gone (or never came): fail what is in flight, reconnect after a back-off. */
static void connection_failed(struct redis_client *c, const char *why)
{
    if (c->lookup) {
        c->lookup->client = NULL; /* its callback frees it */
        c->lookup = NULL;
    }
    while (c->pending.head)
        complete(c, c->pending.head, REDIS_CALL_LOST);
    c->num_loaded = 0;
    c->state = C_DOWN;
    c->queue_while_connecting = false;
    event_del(c->op_timer);
    if (!c->down_logged) {
        log_warn("redis %s: unavailable (%s); rate limits use on_store_error until it is back",
                 describe(c), why);
        c->down_logged = true;
    }
    arm_ms(c->conn_timer, c->backoff_ms);
    c->backoff_ms =
        c->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* Closes the connection on our initiative (timeout, handshake error). */
static void drop(struct redis_client *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (ac)
        ac->data = NULL;
    connection_failed(c, why);
    if (ac)
        redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_client *c = ac->data;
    if (!c || status == REDIS_OK)
        return; /* ready once the handshake's PING is answered */
    /* hiredis frees the context after this callback; its later callbacks find no client. */
    ((redisAsyncContext *)ac)->data = NULL;
    c->ac = NULL;
    connection_failed(c, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis_client *c = ac->data;
    if (!c)
        return;
    c->ac = NULL;
    connection_failed(c, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* Replies to AUTH, SELECT and the closing PING; privdata is the command's name. */
static void on_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_client *c = ac->data;
    const redisReply *reply = r;
    if (!c || !reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[300];
        snprintf(why, sizeof why, "%s failed: %.*s", (const char *)privdata, (int)reply->len,
                 reply->str);
        drop(c, why);
        return;
    }
    if (strcmp(privdata, "PING") != 0)
        return;
    c->state = C_READY;
    c->backoff_ms = REDIS_BACKOFF_MIN_MS;
    event_del(c->conn_timer);
    if (c->down_logged) {
        log_info("redis %s: connected again", describe(c));
        c->down_logged = false;
    }
}

static void on_script_load(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    struct redis_client *c = ac->data;
    const redisReply *reply = r;
    if (c && reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("redis %s: SCRIPT LOAD failed: %.*s", describe(c), (int)reply->len, reply->str);
}

static void send_handshake(struct redis_client *c)
{
    const struct redis_config *cfg = c->cfg;
    if (cfg->password) {
        if (cfg->username) {
            const char *argv[] = {"AUTH", cfg->username, cfg->password};
            redisAsyncCommandArgv(c->ac, on_handshake, "AUTH", 3, argv, NULL);
        } else {
            const char *argv[] = {"AUTH", cfg->password};
            redisAsyncCommandArgv(c->ac, on_handshake, "AUTH", 2, argv, NULL);
        }
    }
    if (cfg->database) {
        char db[16];
        snprintf(db, sizeof db, "%d", cfg->database);
        const char *argv[] = {"SELECT", db};
        redisAsyncCommandArgv(c->ac, on_handshake, "SELECT", 2, argv, NULL);
    }
    const char *argv[] = {"PING"};
    redisAsyncCommandArgv(c->ac, on_handshake, "PING", 1, argv, NULL);
}

static bool script_loaded(const struct redis_client *c, const struct redis_script *s)
{
    for (size_t i = 0; i < c->num_loaded; i++)
        if (c->loaded[i] == s)
            return true;
    return false;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Writes `op` on the connection (after its script's SCRIPT LOAD, once per connection). */
static bool send_op(struct redis_client *c, struct redis_op *op)
{
    if (!script_loaded(c, op->script) && c->num_loaded < MAX_SCRIPTS) {
        const char *load[] = {"SCRIPT", "LOAD", op->script->source};
        if (redisAsyncCommandArgv(c->ac, on_script_load, NULL, 3, load, NULL) == REDIS_OK)
            c->loaded[c->num_loaded++] = op->script;
    }
    if (redisAsyncCommandArgv(c->ac, on_reply, op, op->argc, op->argv, op->argvlen) != REDIS_OK)
        return false;
    op->in_hiredis = true;
    op->unsent = false;
    return true;
}

/* Starts a connection to `ip` (or the unix socket when ip is NULL). */
static void connect_to(struct redis_client *c, const char *ip)
{
    redisAsyncContext *ac =
        ip ? redisAsyncConnect(ip, c->port) : redisAsyncConnectUnix(c->unix_path);
    if (!ac) {
        connection_failed(c, "out of memory");
        return;
    }
    if (ac->err) {
        char why[200];
        snprintf(why, sizeof why, "%s", ac->errstr);
        redisAsyncFree(ac);
        connection_failed(c, why);
        return;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, c->base) != REDIS_OK) {
        redisAsyncFree(ac);
        connection_failed(c, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    send_handshake(c);
    /* Calls made while the first connect's name was being resolved go out now, in order. */
    for (struct redis_op *op = c->pending.head, *next; op; op = next) {
        next = op->next;
        if (op->unsent && !send_op(c, op))
            complete(c, op, REDIS_CALL_LOST);
    }
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct lookup *l = arg;
    struct redis_client *c = l->client;
    free(l);
    if (!c) {
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    c->lookup = NULL;
    if (result != 0 || !res) {
        char why[200];
        snprintf(why, sizeof why, "cannot resolve \"%s\": %s", c->host,
                 evutil_gai_strerror(result));
        if (res)
            evutil_freeaddrinfo(res);
        connection_failed(c, why);
        return;
    }
    char ip[INET6_ADDRSTRLEN] = "";
    addr_ip_text(res->ai_addr, ip);
    evutil_freeaddrinfo(res);
    connect_to(c, ip);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void start_connect(struct redis_client *c)
{
    c->state = C_CONNECTING;
    arm_ms(c->conn_timer, c->cfg->timeout_ms);
    if (!c->host) {
        connect_to(c, NULL);
    } else if (is_ip_literal(c->host)) {
        connect_to(c, c->host);
    } else if (!c->dns) {
        connection_failed(c, "no DNS resolver");
    } else {
        struct lookup *l = calloc(1, sizeof *l);
        if (!l) {
            connection_failed(c, "out of memory");
            return;
        }
        l->client = c;
        c->lookup = l;
        struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        /* The callback may run before this returns (a name from the hosts file). */
        evdns_getaddrinfo(c->dns, c->host, NULL, &hints, on_resolved, l);
    }
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis_client *c = arg;
    if (c->state == C_DOWN) {
        start_connect(c);
        return;
    }
    if (c->state != C_CONNECTING)
        return;
    drop(c, "no answer to the handshake within timeout_ms");
}

static void on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis_client *c = arg;
    int64_t now = clock_mono_us();
    if (!c->pending.head)
        return;
    if (c->pending.head->deadline_us > now) {
        arm_ms(c->op_timer, (c->pending.head->deadline_us - now + 999) / 1000);
        return;
    }
    while (c->pending.head && c->pending.head->deadline_us <= now)
        complete(c, c->pending.head, REDIS_CALL_TIMEOUT);
    /* A server that does not answer in time is treated as away until a reconnect succeeds. */
    drop(c, "no reply within timeout_ms");
}

static void on_deliver(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct redis_client *c = arg;
    bool freed = false;
    c->freed = &freed;
    while (c->done.head) {
        struct redis_op *op = c->done.head;
        list_remove(&c->done, op);
        op->where = OP_NONE;
        redis_done_fn fn = op->fn;
        void *fn_arg = op->arg;
        struct redis_result result = op->result;
        op_maybe_free(op);
        if (fn) {
            fn(fn_arg, &result);
            if (freed)
                return;
        }
    }
    c->freed = NULL;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct redis_op *op = privdata;
    const redisReply *reply = r;
    op->in_hiredis = false;
    if (op->where != OP_PENDING || !op->client || op->client->ac != ac) {
        op_maybe_free(op);
        return;
    }
    struct redis_client *c = op->client;
    if (!reply) {
        complete(c, op, REDIS_CALL_LOST);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && !op->retried && reply->len >= 8 &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* The server's script cache was flushed: send the source once (EVAL caches it again). */
        for (size_t i = 0; i < c->num_loaded; i++)
            if (c->loaded[i] == op->script)
                c->loaded[i] = c->loaded[--c->num_loaded];
        op->retried = true;
        op->argv[0] = "EVAL";
        op->argvlen[0] = 4;
        op->argv[1] = op->script->source;
        op->argvlen[1] = strlen(op->script->source);
        if (redisAsyncCommandArgv(ac, on_reply, op, op->argc, op->argv, op->argvlen) == REDIS_OK) {
            op->in_hiredis = true;
            return;
        }
        complete(c, op, REDIS_CALL_ERROR);
        return;
    }
    enum redis_status status = REDIS_CALL_OK;
    op->result.num_ints = 0;
    if (reply->type == REDIS_REPLY_INTEGER) {
        op->result.ints[0] = reply->integer;
        op->result.num_ints = 1;
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements <= REDIS_MAX_INTS) {
        for (size_t i = 0; i < reply->elements; i++) {
            if (reply->element[i]->type != REDIS_REPLY_INTEGER) {
                status = REDIS_CALL_ERROR;
                break;
            }
            op->result.ints[i] = reply->element[i]->integer;
        }
        op->result.num_ints = reply->elements;
    } else {
        if (reply->type == REDIS_REPLY_ERROR)
            log_debug("redis %s: %.*s", describe(c), (int)reply->len, reply->str);
        status = REDIS_CALL_ERROR;
    }
    complete(c, op, status);
}

struct redis_client *redis_client_new(const struct redis_config *cfg, struct event_base *base,
                                      struct evdns_base *dns)
{
    struct redis_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cfg = cfg;
    c->base = base;
    c->dns = dns;
    c->backoff_ms = REDIS_BACKOFF_MIN_MS;
    c->queue_while_connecting = true;
    if (strncmp(cfg->address, "unix:", 5) == 0) {
        c->unix_path = cfg->address + 5;
    } else {
        char why[200];
        if (!addr_parse_target(cfg->address, &c->host, &c->port, why, sizeof why)) {
            free(c);
            return NULL;
        }
    }
    c->conn_timer = evtimer_new(base, on_conn_timer, c);
    c->op_timer = evtimer_new(base, on_op_timer, c);
    c->deliver = event_new(base, -1, 0, on_deliver, c);
    if (!c->conn_timer || !c->op_timer || !c->deliver) {
        redis_client_free(c);
        return NULL;
    }
    start_connect(c);
    return c;
}

void redis_client_free(struct redis_client *c)
{
    if (!c)
        return;
    if (c->freed)
        *c->freed = true;
    if (c->lookup)
        c->lookup->client = NULL;
    for (struct redis_op *op = c->pending.head, *next; op; op = next) {
        next = op->next;
        op->client = NULL;
        op->where = OP_NONE;
        op_maybe_free(op);
    }
    for (struct redis_op *op = c->done.head, *next; op; op = next) {
        next = op->next;
        op->client = NULL;
        op->where = OP_NONE;
        op_maybe_free(op);
    }
    if (c->ac) {
        c->ac->data = NULL;
        redisAsyncFree(c->ac); /* runs the ops' callbacks with NULL: they free the ops */
    }
    if (c->conn_timer)
        event_free(c->conn_timer);
    if (c->op_timer)
        event_free(c->op_timer);
    if (c->deliver)
        event_free(c->deliver);
    free(c->host);
    free(c);
}

bool redis_client_ready(const struct redis_client *c)
{
    return c && c->state == C_READY;
}

struct redis_op *redis_eval(struct redis_client *c, const struct redis_script *script,
                            size_t num_keys, size_t argc, const char *const *argv,
                            const size_t *argvlen, redis_done_fn fn, void *arg,
                            enum redis_status *status)
{
    *status = REDIS_CALL_DOWN;
    if (!c || !(c->state == C_READY || (c->state == C_CONNECTING && c->queue_while_connecting)))
        return NULL;
    int total = (int)argc + 3;
    size_t bytes = sizeof(struct redis_op) + (size_t)total * (sizeof(char *) + sizeof(size_t));
    for (size_t i = 0; i < argc; i++)
        bytes += argvlen[i];
    bytes += 24;
    struct redis_op *op = calloc(1, bytes);
    if (!op)
        return NULL;
    op->argv = (const char **)(op + 1);
    op->argvlen = (size_t *)(op->argv + total);
    char *p = (char *)(op->argvlen + total);
    op->argc = total;
    op->argv[0] = "EVALSHA";
    op->argvlen[0] = 7;
    op->argv[1] = script->sha;
    op->argvlen[1] = 40;
    int n = snprintf(p, 24, "%zu", num_keys);
    op->argv[2] = p;
    op->argvlen[2] = (size_t)n;
    p += 24;
    for (size_t i = 0; i < argc; i++) {
        memcpy(p, argv[i], argvlen[i]);
        op->argv[3 + i] = p;
        op->argvlen[3 + i] = argvlen[i];
        p += argvlen[i];
    }
    op->client = c;
    op->fn = fn;
    op->arg = arg;
    op->script = script;
    op->start_us = clock_mono_us();
    op->deadline_us = op->start_us + (int64_t)c->cfg->timeout_ms * 1000;

    if (c->ac) {
        if (!send_op(c, op)) {
            free(op);
            return NULL;
        }
    } else {
        op->unsent = true; /* the first connect is resolving the server's name */
    }
    op->where = OP_PENDING;
    list_append(&c->pending, op);
    if (!evtimer_pending(c->op_timer, NULL))
        arm_ms(c->op_timer, c->cfg->timeout_ms);
    return op;
}

void redis_op_cancel(struct redis_op *op)
{
    op->fn = NULL;
    if (op->where == OP_DONE && op->client) {
        list_remove(&op->client->done, op);
        op->where = OP_NONE;
    }
    op_maybe_free(op);
}
