/*
 * cpus: affinity mask and cgroup CPU quota.
 */
#include "base/cpus.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parses a whole decimal integer (surrounding white space allowed); false otherwise. */
static bool parse_ll(const char *s, size_t n, long long *out)
{
    char buf[32];
    while (n && (*s == ' ' || *s == '\t' || *s == '\n')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* ceil(quota / period), at least 1; 0 when either is not positive. */
static int quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = quota / period + (quota % period != 0);
    if (n > INT_MAX)
        return 0;
    return n < 1 ? 1 : (int)n;
}

int cpus_parse_cpu_max(const char *text)
{
    const char *sp = strpbrk(text, " \t");
    if (!sp)
        return 0;
    long long quota, period;
    if (!parse_ll(sp, strlen(sp), &period))
        return 0;
    size_t qlen = (size_t)(sp - text);
    if (qlen == 3 && memcmp(text, "max", 3) == 0)
        return 0;
    if (!parse_ll(text, qlen, &quota))
        return 0;
    return quota_cpus(quota, period);
}

int cpus_parse_cfs(const char *quota, const char *period)
{
    long long q, p;
    if (!parse_ll(quota, strlen(quota), &q) || !parse_ll(period, strlen(period), &p))
        return 0;
    return quota_cpus(q, p);
}

/* Reads a small file into buf; false when it is missing or unreadable. */
static bool read_small(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

/* The tighter of two limits, where 0 is "none". */
static int tighter(int a, int b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* Reads dir/rel/name (a path too long for PATH_MAX counts as missing). */
static bool read_at(const char *dir, const char *rel, const char *name, char *buf, size_t size)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s%s/%s", dir, rel, name);
    return n > 0 && (size_t)n < sizeof path && read_small(path, buf, size);
}

/*
 * Walks `dir` + `cgpath` up to `dir`, reading each level's quota (v2 when
 * `v2`, else v1), and returns the tightest.
 */
static int walk_limit(const char *dir, const char *cgpath, bool v2)
{
    char rel[PATH_MAX], a[64], b[64];
    int limit = 0;
    snprintf(rel, sizeof rel, "%s", cgpath);
    for (;;) {
        size_t n = strlen(rel);
        while (n > 0 && rel[n - 1] == '/')
            rel[--n] = '\0';
        if (v2) {
            if (read_at(dir, rel, "cpu.max", a, sizeof a))
                limit = tighter(limit, cpus_parse_cpu_max(a));
        } else if (read_at(dir, rel, "cpu.cfs_quota_us", a, sizeof a) &&
                   read_at(dir, rel, "cpu.cfs_period_us", b, sizeof b)) {
            limit = tighter(limit, cpus_parse_cfs(a, b));
        }
        if (n == 0)
            return limit;
        char *slash = strrchr(rel, '/');
        if (!slash)
            return limit;
        *slash = '\0';
    }
}

/* True when the comma-separated controller list names `cpu` itself. */
static bool lists_cpu(const char *list, size_t n)
{
    while (n > 0) {
        const char *comma = memchr(list, ',', n);
        size_t len = comma ? (size_t)(comma - list) : n;
        if (len == 3 && memcmp(list, "cpu", 3) == 0)
            return true;
        if (!comma)
            break;
        n -= len + 1;
        list = comma + 1;
    }
    return false;
}

int cpus_cgroup_limit(const char *proc_cgroup, const char *root)
{
    int limit = 0;
    char dir[PATH_MAX], cgpath[PATH_MAX];
    const char *line = proc_cgroup;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        /* "ID:CONTROLLERS:PATH"; cgroup v2 is "0::PATH". */
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
        if (c2) {
            size_t plen = len - (size_t)(c2 + 1 - line);
            snprintf(cgpath, sizeof cgpath, "%.*s", (int)plen, c2 + 1);
            size_t clen = (size_t)(c2 - c1 - 1);
            if (clen == 0) {
                /* v2: mounted at the root itself, or at root/unified beside v1. */
                limit = tighter(limit, walk_limit(root, cgpath, true));
                snprintf(dir, sizeof dir, "%s/unified", root);
                limit = tighter(limit, walk_limit(dir, cgpath, true));
            } else if (lists_cpu(c1 + 1, clen)) {
                /* v1: the cpu controller is mounted as "cpu" or "cpu,cpuacct". */
                snprintf(dir, sizeof dir, "%s/%.*s", root, (int)clen, c1 + 1);
                limit = tighter(limit, walk_limit(dir, cgpath, false));
                snprintf(dir, sizeof dir, "%s/cpu", root);
                limit = tighter(limit, walk_limit(dir, cgpath, false));
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    return limit;
}

int cpus_available(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 && online < INT_MAX ? (int)online : 1;
    }
    char text[4096];
    if (read_small("/proc/self/cgroup", text, sizeof text)) {
        int quota = cpus_cgroup_limit(text, "/sys/fs/cgroup");
        if (quota > 0 && quota < n)
            n = quota;
    }
    return n < 1 ? 1 : n;
}
