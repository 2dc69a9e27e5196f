/*
 * log: the error log. One line per event on stderr:
 *   2026-11-21T13:02:03.123Z sluice[worker 1] error: message
 * Lines are written with one write(2) each, so lines from different threads
 * never interleave. The error log is for operators; the access log
 * (accesslog.c) is separate and never blocks.
 *
 * Thread: any.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
};

/* Lines above `level` are dropped. Default LOG_INFO; SLUICE_LOG_LEVEL=debug|info|warn|error. */
void log_set_level(enum log_level level);

/* The calling thread's name in log lines ("main", "worker 1"). */
void log_set_thread_name(const char *name);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
