/*
 * main: the command line (SPEC 1), start-up, signals, reload and drain.
 *
 * The main thread loads the configuration, binds every listener (so a port
 * conflict is an exit 3 before anything runs), starts the workers, then
 * runs its own small loop for signals and the admin listener. SIGHUP loads
 * a new snapshot and publishes it; SIGUSR1 reopens the access log file;
 * SIGTERM/SIGINT drain; a second SIGINT exits at once with 1.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>

#include "ops/accesslog.h"
#include "ops/admin.h"
#include "base/clock.h"
#include "base/cpus.h"
#include "conf/config.h"
#include "base/log.h"
#include "ops/metrics.h"
#include "ops/status.h"
#include "core/proxy.h"
#include "upstream/upstream.h"
#include "core/worker.h"
#include "server/codecs.h"
#include "net/tls.h"
#include "net/probe.h"

enum {
    EXIT_OK = 0,
    EXIT_CONFIG = 1,
    EXIT_USAGE = 2,
    EXIT_STARTUP = 3,
};

/* SPEC 7 "long options": the whole of `--probe URL`, name resolution included. */
enum { PROBE_TIMEOUT_MS = 2000 };

struct gateway {
    struct event_base *base;
    struct worker **workers;
    int num_workers;
    struct admin *admin;
    struct event *poll;
    int drain_timeout_ms;
    int64_t drain_deadline_ms;
    bool draining;
    bool stopping;
    int sigints;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice [-c FILE] [-t] [-V] [-h] | --probe URL\n"
                 "  -c, --config FILE  configuration file (default: $SLUICE_CONFIG, else "
                 "./sluice.json)\n"
                 "  -t, --test         check the configuration and exit\n"
                 "  -V, --version      print the version and library versions\n"
                 "  -h, --help         this help\n"
                 "  --probe URL        GET URL (plain HTTP, 2 s limit, no configuration): exit 0\n"
                 "                     on a 2xx response, else 1 (container health checks)\n");
}

static void print_version(void)
{
    char pcre[64] = "";
    pcre2_config(PCRE2_CONFIG_VERSION, pcre);
    printf("sluice %s\n", SLUICE_VERSION);
    printf("libevent %s\n", event_get_version());
    printf("nghttp2 %s\n", nghttp2_version(0)->version_str);
    printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("jansson %s\n", jansson_version_str());
    printf("PCRE2 %s\n", pcre);
}

static void print_errors(struct config_error *err, bool to_log)
{
    for (size_t i = 0; i < err->count; i++) {
        if (to_log)
            log_error("%s", err->messages[i]);
        else
            fprintf(stderr, "%s\n", err->messages[i]);
    }
}

/* A probe whose name lookup outlasts the limit (getaddrinfo cannot be bounded) still ends. */
static void on_probe_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "sluice: probe: timed out\n";
    ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)n;
    _exit(EXIT_CONFIG);
}

/* `--probe URL`: 0 on a 2xx response, else 1, with one line saying what happened. */
static int run_probe(const char *url)
{
    struct sigaction sa = {.sa_handler = on_probe_alarm};
    sigaction(SIGALRM, &sa, NULL);
    alarm(PROBE_TIMEOUT_MS / 1000 + 1);
    char why[256] = "";
    int64_t start = clock_mono_ms();
    int status = probe_get(url, PROBE_TIMEOUT_MS, why, sizeof why);
    alarm(0);
    if (status < 0) {
        fprintf(stderr, "sluice: probe %s: %s\n", url, why);
        return EXIT_CONFIG;
    }
    printf("sluice: probe %s: %d in %lld ms\n", url, status, (long long)(clock_mono_ms() - start));
    return status >= 200 && status <= 299 ? EXIT_OK : EXIT_CONFIG;
}

static void reload(struct gateway *g, const char *file)
{
    struct config_error err = {0};
    struct snapshot *s = config_load(file, &err);
    if (!s) {
        log_error("reload rejected, the configuration in force stays:");
        print_errors(&err, true);
        config_error_clear(&err);
        metrics_reload(false);
        return;
    }
    config_error_clear(&err);
    struct snapshot *old = config_current_hold();
    if (old && old->workers != s->workers)
        log_warn("workers changed from %d to %d: this takes effect at the next restart",
                 old->workers, s->workers);
    snapshot_release(old);
    g->drain_timeout_ms = s->limits.drain_timeout_ms;
    g->admin = admin_reload(g->admin, g->base, s);
    config_current_set(s);
    for (int i = 0; i < g->num_workers; i++)
        worker_notify(g->workers[i], WORKER_RELOAD);
    metrics_reload(true);
    log_info("configuration reloaded from %s", file);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct gateway *g = arg;
    bool all_done = true;
    for (int i = 0; i < g->num_workers; i++)
        all_done &= atomic_load(&g->workers[i]->exited);
    if (all_done) {
        event_base_loopbreak(g->base);
        return;
    }
    if (!g->stopping && clock_mono_ms() >= g->drain_deadline_ms) {
        log_warn("drain_timeout_ms passed: closing the remaining connections");
        g->stopping = true;
        for (int i = 0; i < g->num_workers; i++)
            worker_notify(g->workers[i], WORKER_STOP);
    }
}

static void begin_drain(struct gateway *g)
{
    if (g->draining)
        return;
    g->draining = true;
    admin_set_draining(true);
    log_info("draining: no new connections, up to %d ms for requests in flight",
             g->drain_timeout_ms);
    g->drain_deadline_ms = clock_mono_ms() + g->drain_timeout_ms;
    for (int i = 0; i < g->num_workers; i++)
        worker_notify(g->workers[i], WORKER_DRAIN);
    g->poll = event_new(g->base, -1, EV_PERSIST, on_poll, g);
    struct timeval tv = {0, 20 * 1000};
    event_add(g->poll, &tv);
}

/* The descriptors limits.max_connections needs: a client and an upstream socket each, plus
 * the loops, listeners, pools and logs. */
static rlim_t files_needed(const struct snapshot *s)
{
    return (rlim_t)s->limits.max_connections * 2 + 256;
}

/*
 * Raises the soft descriptor limit towards the hard one, to what
 * limits.max_connections needs. Done before the listeners are bound, so
 * whoever sees the port open sees the raised limit.
 */
static void raise_file_limit(const struct snapshot *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t need = files_needed(s);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        struct rlimit raised = {want, rl.rlim_max};
        if (want > rl.rlim_cur)
            setrlimit(RLIMIT_NOFILE, &raised);
    }
}

/* Warns with the numbers when the hard limit kept the soft one below the need. */
static void warn_file_limit(const struct snapshot *s)
{
    struct rlimit rl;
    rlim_t need = files_needed(s);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        log_warn("limits.max_connections %d needs about %llu file descriptors but the limit "
                 "(RLIMIT_NOFILE) is %llu: raise the hard limit (ulimit -Hn) or lower "
                 "limits.max_connections",
                 s->limits.max_connections, (unsigned long long)need,
                 (unsigned long long)rl.rlim_cur);
}

struct signal_context {
    struct gateway *g;
    const char *file;
};

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct signal_context *sc = arg;
    struct gateway *g = sc->g;
    switch (sig) {
    case SIGHUP:
        if (!g->draining)
            reload(g, sc->file);
        break;
    case SIGINT:
        if (++g->sigints > 1) {
            fprintf(stderr, "sluice: second SIGINT, exiting now\n");
            _exit(EXIT_CONFIG);
        }
        begin_drain(g);
        break;
    case SIGTERM:
        begin_drain(g);
        break;
    case SIGUSR1:
        log_info("SIGUSR1: reopening the access log");
        accesslog_reopen();
        break;
    }
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    bool check_only = false;
    const char *probe_url = NULL;
    /* SPEC 7 "long options": the long forms of -c -t -V -h. */
    static const struct option long_options[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
        {"probe", required_argument, NULL, 'P'},  {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:tVh", long_options, NULL)) != -1) {
        /* The word getopt stopped at, to name a long option in messages. */
        const char *word = argv[optind - 1];
        bool is_long = strncmp(word, "--", 2) == 0;
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case 't':
            check_only = true;
            break;
        case 'P':
            probe_url = optarg;
            break;
        case 'V':
            print_version();
            return EXIT_OK;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case ':':
            if (is_long)
                fprintf(stderr, "sluice: option %s needs an argument\n", word);
            else
                fprintf(stderr, "sluice: option -%c needs an argument\n", optopt);
            usage(stderr);
            return EXIT_USAGE;
        default:
            if (is_long && optopt)
                fprintf(stderr, "sluice: option %.*s takes no argument\n", (int)strcspn(word, "="),
                        word);
            else if (is_long)
                fprintf(stderr, "sluice: unknown option %.*s\n", (int)strcspn(word, "="), word);
            else
                fprintf(stderr, "sluice: unknown option -%c\n", optopt);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sluice: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (probe_url)
        return run_probe(probe_url);
    if (!file)
        file = getenv("SLUICE_CONFIG");
    if (!file || !*file)
        file = "./sluice.json";

    const char *level = getenv("SLUICE_LOG_LEVEL");
    if (level && strcmp(level, "debug") == 0)
        log_set_level(LOG_DEBUG);
    else if (level && strcmp(level, "warn") == 0)
        log_set_level(LOG_WARN);
    else if (level && strcmp(level, "error") == 0)
        log_set_level(LOG_ERROR);

    struct config_error err = {0};
    struct snapshot *s = config_load(file, &err);
    if (!s) {
        print_errors(&err, false);
        config_error_clear(&err);
        return EXIT_CONFIG;
    }
    config_error_clear(&err);
    if (check_only) {
        printf("configuration ok\n");
        snapshot_release(s);
        return EXIT_OK;
    }

    signal(SIGPIPE, SIG_IGN);
    /* No evthread_use_pthreads(): every event_base is used by one thread only (worker.c). */
    struct gateway g = {0};
    g.drain_timeout_ms = s->limits.drain_timeout_ms;
    /* workers: 0 is one per CPU this process may use (affinity and cgroup quota). */
    int n = s->workers > 0 ? s->workers : cpus_available();
    config_current_set(s); /* the current config owns the load's reference */
    int status = EXIT_OK;
    g.base = event_base_new();
    g.workers = calloc((size_t)n, sizeof *g.workers);
    if (!g.base || !g.workers) {
        fprintf(stderr, "sluice: cannot start: out of memory\n");
        return EXIT_STARTUP;
    }
    /*
     * SIGHUP, SIGTERM, SIGINT and SIGUSR1 are held until their handlers are in place
     * (below): once worker_new() has bound the listeners, a client (or a
     * script waiting for the port) may already send one, and the default
     * action would kill the process instead of draining it. Threads started
     * meanwhile inherit the mask, so the signals reach this thread.
     */
    sigset_t held;
    sigemptyset(&held);
    sigaddset(&held, SIGHUP);
    sigaddset(&held, SIGTERM);
    sigaddset(&held, SIGINT);
    sigaddset(&held, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &held, NULL);
    /* The listeners hand accepted connections to the codecs through this table. */
    listener_set_codecs(&server_codecs);
    proxy_register(); /* the exchange's upstream side, before any worker serves */
    /* What /metrics shows from layers above ops: TLS failures, target health. */
    tls_set_failure_hook(metrics_tls_handshake_failed);
    metrics_set_health_source(upstream_health_each);
    struct snapshot *cur = config_current_hold();
    raise_file_limit(cur); /* before any socket: the warning waits for a successful start */
    for (int i = 0; i < n; i++) {
        g.workers[i] = worker_new(i, cur);
        if (!g.workers[i]) {
            status = EXIT_STARTUP;
            break;
        }
        g.num_workers++;
    }
    status_process_started(g.num_workers);
    bool admin_failed = false;
    if (status == EXIT_OK)
        g.admin = admin_start(g.base, cur, &admin_failed);
    if (admin_failed)
        status = EXIT_STARTUP;
    if (status == EXIT_OK && accesslog_start() < 0) {
        fprintf(stderr, "sluice: cannot start the access log writer\n");
        status = EXIT_STARTUP;
    }
    if (status == EXIT_OK)
        warn_file_limit(cur); /* only now: a failed start-up says nothing more */
    snapshot_release(cur);

    struct signal_context sc = {&g, file};
    struct event *sigs[4] = {0};
    if (status == EXIT_OK) {
        int which[4] = {SIGHUP, SIGTERM, SIGINT, SIGUSR1};
        for (int i = 0; i < 4; i++) {
            sigs[i] = evsignal_new(g.base, which[i], on_signal, &sc);
            event_add(sigs[i], NULL);
        }
        pthread_sigmask(SIG_UNBLOCK, &held, NULL); /* a signal held so far is handled now */
        for (int i = 0; i < g.num_workers; i++) {
            if (worker_start(g.workers[i]) < 0) {
                fprintf(stderr, "sluice: cannot start worker thread %d\n", i);
                status = EXIT_STARTUP;
                for (int j = 0; j < i; j++)
                    worker_notify(g.workers[j], WORKER_STOP);
                break;
            }
        }
    }
    if (status == EXIT_OK) {
        log_info("sluice %s started: %d worker%s, configuration %s", SLUICE_VERSION, g.num_workers,
                 g.num_workers == 1 ? "" : "s", file);
        event_base_dispatch(g.base);
        log_info("stopped");
    }

    for (int i = 0; i < g.num_workers; i++)
        worker_join_free(g.workers[i]);
    free(g.workers);
    for (int i = 0; i < 4; i++)
        if (sigs[i])
            event_free(sigs[i]);
    if (g.poll)
        event_free(g.poll);
    admin_free(g.admin);
    accesslog_stop();
    config_current_set(NULL);
    upstream_health_table_free();
    status_free();
    metrics_free();
    event_base_free(g.base);
    libevent_global_shutdown();
    return status;
}
