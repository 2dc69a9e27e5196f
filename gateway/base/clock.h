/*
 * clock: the one clock of the gateway, read through the vDSO (no syscall).
 *
 * Monotonic time for durations, timeouts and deadlines, never the wall
 * clock, which may jump; real time only for timestamps people read (the
 * error log, the access log). The coarse clock costs less and moves once
 * per scheduler tick (a few ms): right for timeouts and rate windows, wrong
 * for latencies that are logged.
 *
 * Thread: any; all inline, no state.
 */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic microseconds, for durations that are measured and reported. */
static inline int64_t clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Monotonic milliseconds. */
static inline int64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Coarse monotonic milliseconds (one tick of resolution): timeouts, deadlines, rate windows. */
static inline int64_t clock_coarse_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The wall clock (UTC), for timestamps in logs. */
static inline struct timespec clock_real(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

#endif
