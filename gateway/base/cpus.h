/*
 * cpus: how many CPUs this process may use, for `workers: 0` (SPEC 2.1).
 *
 * Promises: the count is the smaller of the CPUs in the affinity mask
 * (sched_getaffinity: taskset, cpusets, `docker run --cpuset-cpus`) and the
 * CPU quota of the process's cgroup, rounded up (cgroup v2 `cpu.max`,
 * cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`: `docker run --cpus`,
 * Kubernetes CPU limits), and at least 1. The quota of every cgroup from
 * the process's own up to the root counts (the tightest wins). Files that
 * are missing or unreadable mean "no limit", never an error.
 *
 * Thread: any; reads /proc and /sys each call, keeps no state.
 */
#ifndef SLUICE_CPUS_H
#define SLUICE_CPUS_H

/* The CPUs this process may use (at least 1). */
int cpus_available(void);

/*
 * The CPU limit of a cgroup v2 `cpu.max` text ("QUOTA PERIOD" or
 * "max PERIOD"): ceil(QUOTA / PERIOD), at least 1; 0 for no limit or text
 * that is not a valid cpu.max.
 */
int cpus_parse_cpu_max(const char *text);

/*
 * The CPU limit of cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`
 * texts: ceil(quota / period), at least 1; 0 for no limit (quota -1) or
 * invalid text.
 */
int cpus_parse_cfs(const char *quota, const char *period);

/*
 * The CPU quota limit for a process whose /proc/self/cgroup reads
 * `proc_cgroup`, with the cgroup file systems mounted under `root`
 * (normally "/sys/fs/cgroup"): the tightest limit along the path from the
 * process's cgroup up to the root, in the v2 hierarchy and in the v1 `cpu`
 * controller's; 0 when nothing limits it.
 */
int cpus_cgroup_limit(const char *proc_cgroup, const char *root);

#endif
