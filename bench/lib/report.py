"""Summarise a bench run (see harness.py) into Markdown and CSV."""

import csv
import os
import platform
import shutil
import statistics
import subprocess
import time

import ws_bench

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
                for k in ("rps", "p50_ms", "p99_ms", "cpu_pct", "cpu_us_per_req", "kernel_pct"):
                    have = [r[k] for r in ok if r.get(k) != ""]
                    s[k] = median(have) if have else None
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


# --------------------------------------------------------------------------
# targets of the performance issue: sluice against the peers
# --------------------------------------------------------------------------

PEERS = ("nginx", "haproxy")
# sluice's HTTP/2 small GET before the second performance round (issue 13's table)
H2_INSTR_BEFORE = 30400


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def targets(b, rows):
    """One dict per target: text, peer (column it belongs to, or None), short,
    sluice/ref values, ratio, op/limit (None = informational), result."""
    cells = {(s["workload"], s["target"]): s for s in rows}

    def val(wl, t, key):
        return _num((cells.get((wl, t)) or {}).get(key))

    out = []

    def add(text, wl, key, peer, op, limit, short, unit="", ref_label=None):
        sv, rv = val(wl, "sluice", key), (val(wl, peer, key) if peer else None)
        ratio = sv / rv if sv is not None and rv else None
        if op is None:
            res = "info"
        elif ratio is None:
            res = "n/a"
        else:
            res = "PASS" if {"<=": ratio <= limit, ">=": ratio >= limit, ">": ratio > limit}[op] else "MISS"
        out.append(dict(text=text, workload=wl, metric=key, peer=peer, short=short, unit=unit,
                        sluice=sv, ref=rv, ref_label=ref_label or TARGET_NAMES.get(peer, "—"),
                        ratio=ratio, op=op, limit=limit, result=res))

    def best(wl, key, lowest):
        have = [(val(wl, p, key), p) for p in PEERS if val(wl, p, key) is not None]
        if not have:
            return None
        return (min if lowest else max)(have)[1]

    wls = set(b.a.workloads)
    if "small" in wls:
        # first round: 0.77x both peers; second round (issue 13): 0.8x HAProxy
        for p, limit in (("nginx", 0.77), ("haproxy", 0.8)):
            add(f"small GET: CPU µs/req vs {TARGET_NAMES[p]}", "small", "cpu_us_per_req", p, "<=", limit, "CPU/req")
        for p in PEERS:
            add(f"small GET: req/s vs {TARGET_NAMES[p]}", "small", "rps", p, None, None, "req/s")
        cpu = val("small", "sluice", "cpu_pct")
        out[-1]["text"] += f" (sluice proxy CPU {fmt(cpu, 1)} %)"
        out[-2]["text"] += f" (sluice proxy CPU {fmt(cpu, 1)} %)"
        add("syscalls per small GET vs nginx", "small", "syscalls_per_req", "nginx", "<=", 0.8, "syscalls")
        p = best("small", "instr_per_req", lowest=True)
        add("instructions per small GET vs the lowest of nginx and HAProxy", "small", "instr_per_req",
            p, "<=", 0.8, "instr", ref_label=f"{TARGET_NAMES.get(p, '—')} (lowest)")
    if "16k" in wls:
        add("16 KiB GET: req/s vs nginx", "16k", "rps", "nginx", ">=", 1.2, "req/s")
        add("16 KiB GET: CPU µs/req vs nginx", "16k", "cpu_us_per_req", "nginx", None, None, "CPU/req")
    if "1m" in wls:
        add("1 MiB GET: CPU µs/req vs nginx", "1m", "cpu_us_per_req", "nginx", "<=", 0.9, "CPU/req")
    if "post1m" in wls:
        add("1 MiB POST: CPU µs/req vs nginx", "post1m", "cpu_us_per_req", "nginx", "<=", 0.9, "CPU/req")
    for proto, idle in (("HTTP/1.1", b.idle), ("HTTP/2 (h2c)", b.idle_h2)):
        if "sluice" not in idle:
            continue
        sv, rv = (None if "error" in idle.get(t, {"error": 1}) else _num(idle[t].get("kib_per_conn"))
                  for t in ("sluice", "nginx"))
        ratio = sv / rv if sv is not None and rv else None
        out.append(dict(text=f"idle keep-alive RSS per connection, {proto}, vs nginx", workload="idle",
                        metric="kib_per_conn", peer="nginx", short="KiB/conn", unit=" KiB", sluice=sv,
                        ref=rv, ref_label="nginx", ratio=ratio, op="<=", limit=0.5,
                        result="n/a" if ratio is None else ("PASS" if ratio <= 0.5 else "MISS")))
    if "jwt" in wls:
        add("JWT chain (jwt RS256 + rate_limit + headers): CPU µs/req vs HAProxy", "jwt",
            "cpu_us_per_req", "haproxy", "<=", 0.7, "CPU/req")
        add("JWT chain: req/s vs HAProxy", "jwt", "rps", "haproxy", None, None, "req/s")
        # the same route without filters: sluice's own small GET of this run
        sv, rv = val("jwt", "sluice", "cpu_us_per_req"), val("small", "sluice", "cpu_us_per_req")
        ratio = sv / rv if sv is not None and rv else None
        out.append(dict(text="JWT chain: CPU µs/req vs the same route without filters", workload="jwt",
                        metric="cpu_us_per_req", peer="sluice-small", short="CPU/req vs no filters",
                        unit="", sluice=sv, ref=rv,
                        ref_label="sluice small GET" if "small" in wls else "sluice small GET (not run)",
                        ratio=ratio, op="<=", limit=1.25,
                        result="n/a" if ratio is None else ("PASS" if ratio <= 1.25 else "MISS")))
    if "basic" in wls:
        for p in PEERS:
            add(f"basic-auth chain (bcrypt cost 10 + rate_limit): req/s vs {TARGET_NAMES[p]}", "basic",
                "rps", p, ">", 100, "req/s")
        for p in PEERS:
            add(f"basic-auth chain: CPU µs/req vs {TARGET_NAMES[p]}", "basic", "cpu_us_per_req", p,
                None, None, "CPU/req")
    if "h2small" in wls:
        p = best("h2small", "rps", lowest=False)
        add("HTTP/2 small GET: req/s vs the best peer", "h2small", "rps", p, ">=", 1.1, "req/s",
            ref_label=f"{TARGET_NAMES.get(p, '—')} (best req/s)")
        p = best("h2small", "instr_per_req", lowest=True)
        add("HTTP/2 small GET: instructions/req vs the best peer", "h2small", "instr_per_req", p,
            "<=", 1.0, "instr", ref_label=f"{TARGET_NAMES.get(p, '—')} (lowest instr/req)")
        # issue 13: half the instructions the issue measured before the work
        sv = val("h2small", "sluice", "instr_per_req")
        ratio = sv / H2_INSTR_BEFORE if sv is not None else None
        out.append(dict(text="HTTP/2 small GET: instructions/req vs before the second round", workload="h2small",
                        metric="instr_per_req", peer="before", short="instr vs before", unit="",
                        sluice=sv, ref=H2_INSTR_BEFORE, ref_label="issue 13's figure", ratio=ratio,
                        op="<=", limit=0.5,
                        result="n/a" if ratio is None else ("PASS" if ratio <= 0.5 else "MISS")))
    # TLS 1.3 (issue 13): CPU per keep-alive request at most 0.8x the better
    # peer's; handshakes at least at parity (CPU per handshake: the rate is
    # bound by the clients' CPU, see bench/README.md)
    for wl, what, limit in (("tls_small", "TLS small GET (HTTP/1.1)", 0.8),
                            ("tls_h2small", "TLS small GET (h2)", 0.8),
                            ("tls_new", "TLS full handshake", 1.0),
                            ("tls_resume", "TLS resumed handshake", 1.0)):
        if wl in wls:
            p = best(wl, "cpu_us_per_req", lowest=True)
            add(f"{what}: CPU µs/req vs the better peer", wl, "cpu_us_per_req", p, "<=", limit,
                "CPU/req", ref_label=f"{TARGET_NAMES.get(p, '—')} (lowest CPU/req)")
    return out


def _ratio(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"


def target_lines(tg):
    L = ["### Targets (sluice, from the performance issue)", "",
         "| target | sluice | reference | ratio | goal | result |",
         "| --- | ---: | ---: | ---: | ---: | --- |"]
    for t in tg:
        digits = 2 if t["metric"] in ("cpu_us_per_req", "syscalls_per_req", "kib_per_conn") else 0
        sv = "—" if t["sluice"] is None else fmt(t["sluice"], digits) + t["unit"]
        if t["peer"] is None:
            ref, ratio = "—", "—"
        else:
            ref = f"{t['ref_label']} {fmt(t['ref'], digits)}" if t["ref"] is not None else f"{t['ref_label']} —"
            ratio = _ratio(t["ratio"], 3)
        if t["op"] is None:
            goal = "—"
        elif t["peer"] is None:
            goal = f"{'≤' if t['op'] == '<=' else '≥'} {t['limit']}{t['unit']}"
        else:
            sign = {"<=": "≤", ">=": "≥", ">": ">"}[t["op"]]
            goal = f"{sign} {t['limit']:.2f}×"
        L.append(f"| {t['text']} | {sv} | {ref} | {ratio} | {goal} | {t['result']} |")
    graded = [t for t in tg if t["op"] is not None]
    npass = sum(t["result"] == "PASS" for t in graded)
    L.append("")
    L.append(f"{npass} of {len(graded)} targets PASS"
             + (f"; {sum(t['result'] == 'n/a' for t in graded)} not measured (n/a)"
                if any(t["result"] == "n/a" for t in graded) else "")
             + ". Ratios are sluice ÷ reference, from the medians above; PASS/MISS is decided on the "
               "unrounded ratio.")
    return L


def write(b):
    a = b.a
    rows = summarise(b)
    tg = targets(b, rows) + ws_bench.targets(b)
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
             "| proxy CPU % | CPU µs/req | kernel % | instr/req | syscalls/req |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    prev = None
    for s in rows:
        label = s["label"] if s["workload"] != prev else ""
        prev = s["workload"]
        name = TARGET_NAMES[s["target"]]
        if s.get("rps") is None:
            st = s["status"]
            L.append(f"| {label} | {name} | {st} | {st} | {st} | — | — | — | — | — | — | "
                     f"{fmt(s['instr_per_req'])} | {fmt(s['syscalls_per_req'], 2)} |")
            continue
        def ratio(k):
            txt = f"{s[k]:.2f}" if k in s else "—"
            if s["target"] == "sluice":  # the targets against this peer
                for t in tg:
                    if t["workload"] == s["workload"] and t["op"] and f"vs_{t['peer']}" == k:
                        txt += f" · {t['short']} {_ratio(t['ratio'])} {t['result']}"
            return txt
        flag = "" if s["status"] == "ok" else f" ({s['status']})"
        direct = s["target"] == "direct"
        cpu = f"({fmt(s['cpu_pct'], 1)})" if direct else fmt(s["cpu_pct"], 1)
        cpuq = f"({fmt(s['cpu_us_per_req'], 2)})" if direct else fmt(s["cpu_us_per_req"], 2)
        kern = f"({fmt(s.get('kernel_pct'), 1)})" if direct else fmt(s.get("kernel_pct"), 1)
        if s["target"] == "sluice":  # a target against sluice's own no-filter row
            for t in tg:
                if t["workload"] == s["workload"] and t["peer"] == "sluice-small":
                    cpuq += f" · {_ratio(t['ratio'])}× small {t['result']}"
        L.append(f"| {label} | {name} | {fmt(s['rps'])}{flag} | {fmt(s['p50_ms'], 3)} | {fmt(s['p99_ms'], 3)} "
                 f"| {ratio('vs_nginx')} | {ratio('vs_haproxy')} | {ratio('vs_direct')} "
                 f"| {cpu} | {cpuq} | {kern} | {fmt(s['instr_per_req'])} | {fmt(s['syscalls_per_req'], 2)} |")
    L.append("")
    L.append("×nginx and ×HAProxy are req/s ratios. On the sluice rows they are followed by the issue's "
             "targets against that peer: the sluice ÷ peer ratio of the named metric and PASS/MISS "
             "(see Targets below). CPU columns for *direct* (in parentheses) are the backend nginx's, "
             "which shares its CPU with the load generator. *kernel %* is the kernel's share of the proxy's "
             "CPU (stime ÷ (utime + stime) from /proc): what the proxy's own code cannot cut. instr/req and syscalls/req are measured with "
             "a fixed request count: HTTP/1.1 keep-alive (h2load --h1 -c10) for the HTTP/1 rows, h2c "
             "(h2load -c10 -m5) for the HTTP/2 row, the same over TLS 1.3 for the keep-alive TLS rows; "
             "the handshake rows are not counted; see bench/README.md.")
    if b.idle or b.idle_h2:
        L.append("")
        L.append(f"### {a.idle_conns} idle keep-alive client connections (each made one request)")
        L.append("")
        L.append("| protocol | target | connections | RSS before MiB | RSS after MiB | KiB/conn | ×nginx |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for proto, idle in (("HTTP/1.1", b.idle), ("h2c", b.idle_h2)):
            ng = _num((idle.get("nginx") or {}).get("kib_per_conn"))
            for t in a.targets:
                r = idle.get(t)
                if r is None:
                    continue
                if "rss_before_kib" not in r:
                    L.append(f"| {proto} | {TARGET_NAMES[t]} | {r.get('error', 'error')} | — | — | — | — |")
                    continue
                v = _num(r["kib_per_conn"])
                L.append(f"| {proto} | {TARGET_NAMES[t]} | {r['conns']}{' (error)' if 'error' in r else ''} "
                         f"| {r['rss_before_kib'] / 1024:.1f} | {r['rss_after_kib'] / 1024:.1f} "
                         f"| {fmt(r['kib_per_conn'], 2)} | {_ratio(v / ng if v is not None and ng else None)} |")
        L.append("")
        L.append("*direct* is the backend nginx worker (shared by all cells, so already warm). "
                 "h2c: prior knowledge, one GET on stream 1, then idle.")
    L += ws_bench.report_lines(b)
    if b.enforce:
        L.append("")
        L.append("### Filter chains: enforcement probes (before each measured cell)")
        L.append("")
        L.append("Each chain cell first sends a request without credentials and one with bad "
                 "credentials (401 expected from every target; anything else stops the cell as a "
                 "setup error), then one with the bench's credentials (200 expected).")
        L.append("")
        L.append("| workload | target | probes |")
        L.append("| --- | --- | --- |")
        for (wl_id, t), txt in b.enforce.items():
            L.append(f"| {b.wl_defs[wl_id]['label']} | {TARGET_NAMES[t]} | {txt} |")
    if b.skipped:
        L.append("")
        L.append("### Cells not run (n/a)")
        L.append("")
        for label, t, why in b.skipped:
            L.append(f"- {label} / {TARGET_NAMES[t]}: {why}")
    if tg:
        L.append("")
        L += target_lines(tg)
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
            "kernel_pct", "instr_per_req", "syscalls_per_req"]
    with open(os.path.join(a.out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for s in rows:
            w.writerow({k: ("" if s.get(k) is None else s.get(k)) for k in keys})
    with open(os.path.join(a.out, "raw.csv"), "w", newline="") as f:
        keys = ["round", "workload", "target", "status", "rps", "p50_ms", "p99_ms", "requests",
                "cpu_pct", "cpu_us_per_req", "kernel_pct", "detail"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(b.raw)
    with open(os.path.join(a.out, "targets.csv"), "w", newline="") as f:
        keys = ["text", "workload", "metric", "peer", "sluice", "ref", "ratio", "op", "limit", "result"]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for t in tg:
            w.writerow({k: ("" if t.get(k) is None else t.get(k)) for k in keys})
    if b.idle or b.idle_h2:
        with open(os.path.join(a.out, "idle.csv"), "w", newline="") as f:
            keys = ["protocol", "target", "conns", "rss_before_kib", "rss_after_kib", "kib_per_conn", "error"]
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for proto, idle in (("h1", b.idle), ("h2c", b.idle_h2)):
                for t, r in idle.items():
                    w.writerow(dict(r, target=t, protocol=proto))
    results = os.path.dirname(a.out)
    if os.path.basename(results) == "results":
        shutil.copyfile(os.path.join(a.out, "report.md"), os.path.join(results, "latest.md"))
        shutil.copyfile(os.path.join(a.out, "summary.csv"), os.path.join(results, "latest.csv"))
    print()
    print(text)
    print(f"saved: {os.path.join(a.out, 'report.md')}, summary.csv, raw.csv, logs/")
