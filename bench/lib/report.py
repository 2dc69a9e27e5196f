"""Summarise a bench run (see harness.py) into Markdown and CSV."""

import csv
import os
import platform
import shutil
import statistics
import subprocess
import time

TARGET_NAMES = {"direct": "direct (backend)", "nginx": "nginx", "haproxy": "HAProxy", "sluice": "sluice"}


def _cmd(argv):
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.stdout.decode(errors="replace").strip()
    except Exception:
        return ""


def versions(b):
    a = b.a
    out = {}
    out["nginx"] = _cmd([a.nginx, "-v"]).splitlines()[0] if _cmd([a.nginx, "-v"]) else "?"
    out["haproxy"] = (_cmd([a.haproxy, "-v"]).splitlines() or ["?"])[0]
    out["sluice"] = (_cmd([a.sluice, "-V"]).splitlines() or ["?"])[0]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rev = _cmd(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    out["commit"] = (rev or "?") + (" (dirty tree)" if dirty else "")
    out["wrk"] = (_cmd(["wrk", "-v"]).splitlines() or ["?"])[0].split(" Copyright")[0]
    out["h2load"] = (_cmd(["h2load", "--version"]).splitlines() or ["?"])[0]
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu}, Linux {platform.release()}"
    return out


def median(vals):
    vals = [float(v) for v in vals if v not in ("", None)]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def summarise(b):
    rows = []
    for wl_id in b.a.workloads:
        wl = b.wl_defs[wl_id]
        cells = {}
        for t in b.a.targets:
            rs = [r for r in b.raw if r["workload"] == wl_id and r["target"] == t]
            ok = [r for r in rs if r["status"] == "ok"]
            s = dict(workload=wl_id, label=wl["label"], target=t, rounds_ok=len(ok), rounds=len(rs))
            if ok:
                for k in ("rps", "p50_ms", "p99_ms", "cpu_pct", "cpu_us_per_req"):
                    s[k] = median([r[k] for r in ok])
                s["status"] = "ok" if len(ok) == len(rs) else f"{len(rs) - len(ok)} of {len(rs)} rounds failed"
            else:
                s["status"] = rs[0]["status"] if rs and all(r["status"] == rs[0]["status"] for r in rs) else "error"
            s["instr_per_req"] = b.instr.get((wl_id, t))
            s["syscalls_per_req"] = b.sysc.get((wl_id, t))
            cells[t] = s
        for t, s in cells.items():
            for ref in ("nginx", "haproxy", "direct"):
                r = cells.get(ref)
                if s.get("rps") and r and r.get("rps"):
                    s[f"vs_{ref}"] = s["rps"] / r["rps"]
            rows.append(s)
    return rows


def write(b):
    a = b.a
    rows = summarise(b)
    v = versions(b)
    L = []
    L.append(f"# sluice benchmark — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    L.append("")
    L.append(f"- mode: {'quick' if a.quick else 'full'}; {a.rounds} round(s) per cell (median), "
             f"{a.duration} s measured + {a.warmup} s warm-up per cell, fresh proxy process per cell; "
             f"run took {b.elapsed / 60:.1f} min")
    L.append(f"- pinning: proxy on CPU {a.proxy_cpu}; backend (nginx, 1 worker) and load generator on CPU {a.load_cpu}")
    L.append(f"- {v['sluice']} (commit {v['commit']}); {v['nginx']}; {v['haproxy']}")
    L.append(f"- {v['wrk']}; {v['h2load']}; {v['machine']}")
    L.append("")
    L.append("| workload | target | req/s | p50 ms | p99 ms | ×nginx | ×HAProxy | ×direct "
             "| proxy CPU % | CPU µs/req | instr/req | syscalls/req |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    prev = None
    for s in rows:
        label = s["label"] if s["workload"] != prev else ""
        prev = s["workload"]
        name = TARGET_NAMES[s["target"]]
        if s.get("rps") is None:
            st = s["status"]
            L.append(f"| {label} | {name} | {st} | {st} | {st} | — | — | — | — | — | "
                     f"{fmt(s['instr_per_req'])} | {fmt(s['syscalls_per_req'], 2)} |")
            continue
        ratio = lambda k: f"{s[k]:.2f}" if k in s else "—"
        flag = "" if s["status"] == "ok" else f" ({s['status']})"
        direct = s["target"] == "direct"
        cpu = f"({fmt(s['cpu_pct'], 1)})" if direct else fmt(s["cpu_pct"], 1)
        cpuq = f"({fmt(s['cpu_us_per_req'], 2)})" if direct else fmt(s["cpu_us_per_req"], 2)
        L.append(f"| {label} | {name} | {fmt(s['rps'])}{flag} | {fmt(s['p50_ms'], 3)} | {fmt(s['p99_ms'], 3)} "
                 f"| {ratio('vs_nginx')} | {ratio('vs_haproxy')} | {ratio('vs_direct')} "
                 f"| {cpu} | {cpuq} | {fmt(s['instr_per_req'])} | {fmt(s['syscalls_per_req'], 2)} |")
    L.append("")
    L.append("CPU columns for *direct* (in parentheses) are the backend nginx's, which shares its CPU with the "
             "load generator. instr/req and syscalls/req are measured with a fixed request count over "
             "HTTP/1.1 keep-alive (h2load --h1 -c10); see bench/README.md.")
    if b.idle:
        L.append("")
        L.append(f"### {a.idle_conns} idle keep-alive client connections (each made one request)")
        L.append("")
        L.append("| target | connections | RSS before MiB | RSS after MiB | KiB/conn |")
        L.append("| --- | ---: | ---: | ---: | ---: |")
        for t in a.targets:
            r = b.idle.get(t)
            if r is None:
                continue
            if "rss_before_kib" not in r:
                L.append(f"| {TARGET_NAMES[t]} | error | — | — | — |")
                continue
            L.append(f"| {TARGET_NAMES[t]} | {r['conns']}{' (error)' if 'error' in r else ''} "
                     f"| {r['rss_before_kib'] / 1024:.1f} | {r['rss_after_kib'] / 1024:.1f} "
                     f"| {fmt(r['kib_per_conn'], 2)} |")
        L.append("")
        L.append("*direct* is the backend nginx worker (shared by all cells, so already warm).")
    if b.notes:
        L.append("")
        L.append("### Failures")
        L.append("")
        for n in b.notes:
            L.append(f"- {n}")
    text = "\n".join(L) + "\n"

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(text)
    keys = ["workload", "target", "status", "rounds_ok", "rounds", "rps", "p50_ms", "p99_ms",
            "vs_nginx", "vs_haproxy", "vs_direct", "cpu_pct", "cpu_us_per_req",
            "instr_per_req", "syscalls_per_req"]
    with open(os.path.join(a.out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for s in rows:
            w.writerow({k: ("" if s.get(k) is None else s.get(k)) for k in keys})
    with open(os.path.join(a.out, "raw.csv"), "w", newline="") as f:
        keys = ["round", "workload", "target", "status", "rps", "p50_ms", "p99_ms", "requests",
                "cpu_pct", "cpu_us_per_req", "detail"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(b.raw)
    if b.idle:
        with open(os.path.join(a.out, "idle.csv"), "w", newline="") as f:
            keys = ["target", "conns", "rss_before_kib", "rss_after_kib", "kib_per_conn", "error"]
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for t, r in b.idle.items():
                w.writerow(dict(r, target=t))
    results = os.path.dirname(a.out)
    if os.path.basename(results) == "results":
        shutil.copyfile(os.path.join(a.out, "report.md"), os.path.join(results, "latest.md"))
        shutil.copyfile(os.path.join(a.out, "summary.csv"), os.path.join(results, "latest.csv"))
    print()
    print(text)
    print(f"saved: {os.path.join(a.out, 'report.md')}, summary.csv, raw.csv, logs/")
