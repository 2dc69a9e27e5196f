/*
 * test_cpus: the CPU quota parsing behind `workers: 0` (base/cpus.h), on
 * cgroup trees written into a temporary folder the way the kernel lays
 * them out (v2, v1 with cpu,cpuacct, nested limits).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/cpus.h"
#include "test.h"

static char root[64];

/* Writes `text` to root/rel, making the folders on the way. */
static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    ok(f != NULL, "create %s", path);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Writes a v1 quota pair into root/dir: cpu.cfs_quota_us and cpu.cfs_period_us. */
static void put_cfs(const char *dir, const char *quota, const char *period)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/cpu.cfs_quota_us", dir);
    put(rel, quota);
    snprintf(rel, sizeof rel, "%s/cpu.cfs_period_us", dir);
    put(rel, period);
}

static void clear(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ok(system(cmd) == 0, "remove %s", root);
    ok(mkdir(root, 0755) == 0, "mkdir %s", root);
}

int main(void)
{
    /* cgroup v2 cpu.max */
    is_int(cpus_parse_cpu_max("max 100000\n"), 0);
    is_int(cpus_parse_cpu_max("200000 100000\n"), 2);
    is_int(cpus_parse_cpu_max("150000 100000\n"), 2); /* 1.5 CPUs round up */
    is_int(cpus_parse_cpu_max("100000 100000"), 1);
    is_int(cpus_parse_cpu_max("50000 100000\n"), 1); /* half a CPU is still one worker */
    is_int(cpus_parse_cpu_max("1000 1000000\n"), 1);
    is_int(cpus_parse_cpu_max("400000 100000\n"), 4);
    is_int(cpus_parse_cpu_max(""), 0);
    is_int(cpus_parse_cpu_max("garbage"), 0);
    is_int(cpus_parse_cpu_max("12x 100000"), 0);
    is_int(cpus_parse_cpu_max("100000 0"), 0);
    is_int(cpus_parse_cpu_max("-5 100000"), 0);

    /* cgroup v1 cfs */
    is_int(cpus_parse_cfs("-1\n", "100000\n"), 0);
    is_int(cpus_parse_cfs("300000\n", "100000\n"), 3);
    is_int(cpus_parse_cfs("250000\n", "100000\n"), 3);
    is_int(cpus_parse_cfs("20000\n", "100000\n"), 1);
    is_int(cpus_parse_cfs("x", "100000"), 0);
    is_int(cpus_parse_cfs("100000", ""), 0);

    snprintf(root, sizeof root, "/tmp/sluice-test-cpus.%d", (int)getpid());
    mkdir(root, 0755);

    /* v2 inside a container: the namespaced root holds the container's limit. */
    clear();
    put("cpu.max", "150000 100000\n");
    is_int(cpus_cgroup_limit("0::/\n", root), 2);

    /* v2 on a host: the process's own cgroup and its parents; the tightest wins. */
    clear();
    put("system.slice/cpu.max", "300000 100000\n");
    put("system.slice/app.service/cpu.max", "max 100000\n");
    is_int(cpus_cgroup_limit("0::/system.slice/app.service\n", root), 3);
    put("system.slice/app.service/cpu.max", "100000 100000\n");
    is_int(cpus_cgroup_limit("0::/system.slice/app.service\n", root), 1);

    /* v2 without any limit, and missing files: none. */
    clear();
    put("cpu.max", "max 100000\n");
    is_int(cpus_cgroup_limit("0::/\n", root), 0);
    is_int(cpus_cgroup_limit("0::/not/there\n", root), 0);
    is_int(cpus_cgroup_limit("", root), 0);

    /* v1 with the cpu controller mounted as cpu,cpuacct (Docker on cgroup v1). */
    clear();
    put_cfs("cpu,cpuacct", "200000\n", "100000\n");
    put("memory/memory.limit_in_bytes", "1073741824\n");
    is_int(cpus_cgroup_limit("12:memory:/docker/abc\n"
                             "4:cpu,cpuacct:/docker/abc\n"
                             "1:name=systemd:/docker/abc\n",
                             root),
           2);

    /* v1 mounted as plain cpu, nested, with the unlimited level in between. */
    clear();
    put_cfs("cpu", "-1\n", "100000\n");
    put_cfs("cpu/kube", "350000\n", "100000\n");
    put_cfs("cpu/kube/pod", "-1\n", "100000\n");
    is_int(cpus_cgroup_limit("3:cpu:/kube/pod\n", root), 4);

    /* cpuacct alone is not the cpu controller. */
    clear();
    put_cfs("cpuacct", "100000\n", "100000\n");
    is_int(cpus_cgroup_limit("3:cpuacct:/\n", root), 0);

    /* v2 beside v1 (hybrid: cgroup2 at root/unified). */
    clear();
    put("unified/app/cpu.max", "100000 100000\n");
    is_int(cpus_cgroup_limit("0::/app\n", root), 1);

    /* This process: at least one, at most the online CPUs. */
    int n = cpus_available();
    ok(n >= 1 && n <= sysconf(_SC_NPROCESSORS_ONLN), "cpus_available() = %d", n);

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ok(system(cmd) == 0, "cleanup");
    return test_done();
}
