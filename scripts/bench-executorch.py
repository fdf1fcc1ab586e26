"""Reports the runs of scripts/bench-executorch.sh: medians per row (program,
threads, build, mode), a text table, JSON rows, the ratios, and a markdown
table for docs/BENCHMARKS.md.

usage: bench-executorch.py RUNS_DIR --programs a,b --threads 1,2 --repeat N --runs N
                           [--json FILE] [--markdown FILE]

RUNS_DIR holds PROG.tTHREADS.BUILD.MODE.REP.json (the runner's JSON line) and
.err (its stderr) for each fresh process.
"""
import argparse
import json
import os
import re
import statistics
import sys

BUILDS = ("stock", "xnncache")
# disk: warm from disk, the cache file and the program dropped from the page
# cache before the process starts (scripts/evict.py).
MODES = ("none", "heap", "cold", "warm", "disk")
FILE_MODES = ("cold", "warm", "disk")
# An error or a warning on stderr: ExecuTorch's log lines start with their
# level (E error, F fatal; W for loggers that have warnings), anything else
# says "error:" or "warning:".
PROBLEM = re.compile(r"^[EWF] \d|\b(error|warning)\b:", re.IGNORECASE)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load_runs(folder, prog, threads, build, mode, repeat):
    runs = []
    for rep in range(1, repeat + 1):
        base = os.path.join(folder, f"{prog}.t{threads}.{build}.{mode}.{rep}")
        try:
            with open(base + ".json") as f:
                d = json.loads(f.read().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            d = None
        try:
            with open(base + ".size") as f:
                size = int(f.read().strip())
        except (OSError, ValueError):
            size = None
        if d is not None:
            d["cache_file_bytes_after_exit"] = size if size is not None and size >= 0 else None
            # --phonefs: the block device's counters over the process
            # (/sys/block/DEV/stat differences: reads, merges, sectors, ms,
            # then the same for writes).
            try:
                with open(base + ".blk") as f:
                    d["blk"] = [int(v) for v in f.read().split()]
            except (OSError, ValueError):
                pass
        problem = None
        try:
            with open(base + ".err", errors="replace") as f:
                for line in f:
                    if PROBLEM.search(line):
                        problem = line.strip()
                        break
        except OSError:
            pass
        runs.append((d, problem))
    return runs


def row_of(prog, threads, build, mode, runs):
    ok = [d for d, _ in runs if d is not None]
    problems = [p for _, p in runs if p]
    row = {
        "program": prog, "threads": threads, "build": build, "mode": mode,
        "processes": len(runs), "completed": len(ok),
        "identical": len(ok) == len(runs) and all(d.get("identical") for d in ok),
        "errors_logged": len(problems),
        "error_example": re.sub(r"/tmp/[^ )]*/", "", problems[0]) if problems else None,
    }
    if not ok:
        return row
    m = lambda f: median(f(d) for d in ok)
    kib = 1024.0
    row.update({
        "first_output_ms": m(lambda d: d["first_output_ms"]),
        "first_output_ms_min": min(d["first_output_ms"] for d in ok),
        "first_output_ms_max": max(d["first_output_ms"] for d in ok),
        "load_method_ms": m(lambda d: d["load_method_ms"]),
        "first_execute_ms": m(lambda d: d["first_execute_ms"]),
        "steady_execute_ms": m(lambda d: d["steady_execute_ms"]),
        "peak_rss_mib": m(lambda d: d["peak_rss_kib"] / kib),
        "pss_after_load_mib": m(lambda d: d["after_load"]["pss"] / kib),
        "pss_anon_after_load_mib": m(lambda d: d["after_load"]["pss_anon"] / kib),
        "dirty_after_load_mib": m(lambda d: (d["after_load"]["private_dirty"] + d["after_load"]["shared_dirty"]) / kib),
        "pss_end_mib": m(lambda d: d["end"]["pss"] / kib),
        "dirty_end_mib": m(lambda d: (d["end"]["private_dirty"] + d["end"]["shared_dirty"]) / kib),
        # The worst run, right after load_method and at the end (after the
        # runs and xnncache's background write-back): must be 0.
        "cache_file_dirty_kib": max(max(d["after_load"]["file_dirty"], d["end"]["file_dirty"]) for d in ok)
        if mode in FILE_MODES else None,
        "cache_file_pmd_mib": m(lambda d: d["end"]["file_pmd"] / kib) if mode in FILE_MODES else None,
        # Once the process has exited (the runner's own figure, taken before
        # the cache is closed, is cache_file_bytes_open).
        "cache_file_bytes": m(lambda d: d.get("cache_file_bytes_after_exit")) if mode in FILE_MODES else None,
        "cache_file_bytes_open": m(lambda d: d["cache_file_bytes_while_open"] if d["cache_file_bytes_while_open"] >= 0 else None)
        if mode in FILE_MODES else None,
        "cache_file_maps": ok[0].get("cache_file_maps") or None,
        # Bytes the process made the disk read, by the end of load_method and in all.
        "read_mib_after_load": m(lambda d: d["read_bytes_after_load"] / kib / kib if d.get("read_bytes_after_load", -1) >= 0 else None),
        "read_mib": m(lambda d: d["read_bytes"] / kib / kib if d.get("read_bytes", -1) >= 0 else None),
        # Every execute, position by position (median over the processes):
        # in a cold process the first ones run during the write-back.
        "execute_ms_each": [median(d["execute_ms"][i] for d in ok if len(d.get("execute_ms", [])) > i)
                            for i in range(max(len(d.get("execute_ms", [])) for d in ok))],
        "threads_reported": ok[0].get("threads"),
    })
    blk = [d["blk"] for d in ok if len(d.get("blk", [])) >= 8]
    if blk:
        # Requests the device completed for the process (and whatever else
        # read it meanwhile: nothing else uses a --phonefs device), their
        # bytes and mean size; sectors are 512 bytes.
        row["dev_read_requests"] = median(b[0] for b in blk)
        row["dev_read_mib"] = median(b[2] * 512 / kib / kib for b in blk)
        row["dev_read_kib_per_request"] = median(b[2] * 512 / kib / b[0] if b[0] else None for b in blk)
        row["dev_read_ms"] = median(b[3] for b in blk)
        row["dev_write_mib"] = median(b[6] * 512 / kib / kib for b in blk)
    xs = [d["xnncache"] for d in ok if d.get("xnncache")]
    if xs:
        row["packed_bytes"] = median(x["packed_bytes"] for x in xs)
        row["found_bytes"] = median(x["found_bytes"] for x in xs)
        row["commit_durable_ms"] = median(x.get("commit_durable_ms") for x in xs if x.get("commit_durable_ms", -1) >= 0)
    return row


def fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs_dir")
    ap.add_argument("--programs", required=True)
    ap.add_argument("--threads", required=True)
    ap.add_argument("--repeat", type=int, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    ap.add_argument("--modes", default=",".join(MODES))
    a = ap.parse_args()
    modes = [m for m in MODES if m in a.modes.split(",")]
    programs = a.programs.split(",")
    threads = [int(t) for t in a.threads.split(",")]

    rows = {}
    for prog in programs:
        for t in threads:
            for build in BUILDS:
                for mode in modes:
                    runs = load_runs(a.runs_dir, prog, t, build, mode, a.repeat)
                    rows[(prog, t, build, mode)] = row_of(prog, t, build, mode, runs)

    # --- text table
    out = sys.stdout
    print(f"== ExecuTorch + XNNPACK: stock weights cache vs xnncache; median of {a.repeat} fresh "
          f"process(es) per row; ms; first output = load_method + first execute; steady = median of "
          f"{a.runs} executes after it; memory right after load_method; file dirty = worst run, after "
          f"load and at the end", file=out)
    cols = ("program", "thr", "build", "mode", "1st_output", "[min-max]", "load_method", "1st_exec",
            "steady", "peakRSS_MiB", "PSS_MiB", "dirty_MiB", "file_dirty_KiB", "file_bytes", "read_MiB",
            "commit_ms", "identical", "err_logged", "file_pmd_MiB", "dev_reads", "KiB/read")
    table = [cols]
    for (prog, t, build, mode), r in rows.items():
        table.append((prog, str(t), build, mode, fmt(r.get("first_output_ms")),
                      f"[{fmt(r.get('first_output_ms_min'))}-{fmt(r.get('first_output_ms_max'))}]",
                      fmt(r.get("load_method_ms")), fmt(r.get("first_execute_ms")),
                      fmt(r.get("steady_execute_ms")), fmt(r.get("peak_rss_mib"), 1),
                      fmt(r.get("pss_after_load_mib"), 1), fmt(r.get("dirty_after_load_mib"), 1),
                      fmt(r.get("cache_file_dirty_kib")), fmt(r.get("cache_file_bytes")),
                      fmt(r.get("read_mib"), 1), fmt(r.get("commit_durable_ms"), 0),
                      fmt(r["identical"]), f"{r['errors_logged']}/{r['processes']}",
                      fmt(r.get("cache_file_pmd_mib"), 1), fmt(r.get("dev_read_requests"), 0),
                      fmt(r.get("dev_read_kib_per_request"), 0)))
    w = [max(len(x[i]) for x in table) for i in range(len(cols))]
    for x in table:
        print("  ".join(v.ljust(w[i]) if i < 4 else v.rjust(w[i]) for i, v in enumerate(x)), file=out)

    examples = {}
    for r in rows.values():
        if r["error_example"] and (r["build"], r["mode"]) not in examples:
            examples[(r["build"], r["mode"])] = r["error_example"]
    for (build, mode), line in examples.items():
        print(f"logged by {build} {mode}, e.g.: {line}", file=out)

    # --- ratios
    ratios = []
    for prog in programs:
        for t in threads:
            g = lambda b, m, k="first_output_ms": rows.get((prog, t, b, m), {}).get(k)
            # Every execute of a cold xnncache process against the same
            # execute of a no-cache process: the worst ratio.
            cold_each, none_each = g("xnncache", "cold", "execute_ms_each") or [], g("xnncache", "none", "execute_ms_each") or []
            each = [ratio(c, n) for c, n in zip(cold_each, none_each)]
            ratios.append({
                "disk_xnncache_over_stock": ratio(g("xnncache", "disk"), g("stock", "disk")),
                "worst_cold_execute_over_none_xnncache": max((e for e in each if e is not None), default=None),
                "program": prog, "threads": t,
                "warm_xnncache_over_stock": ratio(g("xnncache", "warm"), g("stock", "warm")),
                "cold_xnncache_over_stock": ratio(g("xnncache", "cold"), g("stock", "cold")),
                "cold_over_none_stock": ratio(g("stock", "cold"), g("stock", "none")),
                "cold_over_none_xnncache": ratio(g("xnncache", "cold"), g("xnncache", "none")),
                "warm_pss_xnncache_over_stock": ratio(g("xnncache", "warm", "pss_after_load_mib"),
                                                      g("stock", "warm", "pss_after_load_mib")),
                "warm_load_method_xnncache_over_stock": ratio(g("xnncache", "warm", "load_method_ms"),
                                                              g("stock", "warm", "load_method_ms")),
                "warm_steady_xnncache_over_stock": ratio(g("xnncache", "warm", "steady_execute_ms"),
                                                         g("stock", "warm", "steady_execute_ms")),
            })
    print("== ratios of time to first output (and of warm PSS after load)", file=out)
    rcols = ("program", "thr", "disk x/s", "warm x/s", "cold x/s", "cold/none stock", "cold/none xnncache",
             "worst cold exec/none", "warm PSS x/s", "warm load_method x/s", "warm steady x/s")
    rt = [rcols] + [(r["program"], str(r["threads"]), fmt(r["disk_xnncache_over_stock"]), fmt(r["warm_xnncache_over_stock"]),
                     fmt(r["cold_xnncache_over_stock"]), fmt(r["cold_over_none_stock"]),
                     fmt(r["cold_over_none_xnncache"]), fmt(r["worst_cold_execute_over_none_xnncache"]),
                     fmt(r["warm_pss_xnncache_over_stock"]),
                     fmt(r["warm_load_method_xnncache_over_stock"]),
                     fmt(r["warm_steady_xnncache_over_stock"])) for r in ratios]
    w = [max(len(x[i]) for x in rt) for i in range(len(rcols))]
    for x in rt:
        print("  ".join(v.ljust(w[i]) if i < 2 else v.rjust(w[i]) for i, v in enumerate(x)), file=out)

    # --- JSON rows
    print("== JSON rows", file=out)
    for r in rows.values():
        print(json.dumps(r, sort_keys=True), file=out)
    for r in ratios:
        print(json.dumps(dict(r, kind="ratios"), sort_keys=True), file=out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"repeat": a.repeat, "runs": a.runs, "rows": list(rows.values()), "ratios": ratios}, f,
                      indent=1, sort_keys=True)

    # --- markdown (for docs/BENCHMARKS.md): stock / xnncache side by side
    md = []
    md.append("| program | threads | mode | first output, ms | load_method, ms | first execute, ms | "
              "steady execute, ms | peak RSS, MiB | PSS after load, MiB | dirty after load, MiB | "
              "dirty in cache file, KiB | cache file, bytes | read from disk, MiB | commit durable, ms | error logged |")
    md.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    pair = lambda s, x, k, d=2: f"{fmt(s.get(k), d)} / {fmt(x.get(k), d)}"
    for prog in programs:
        for t in threads:
            for mode in modes:
                s, x = rows[(prog, t, "stock", mode)], rows[(prog, t, "xnncache", mode)]
                md.append(
                    f"| `{prog}` | {t} | {mode} | {pair(s, x, 'first_output_ms')} | {pair(s, x, 'load_method_ms')} | "
                    f"{pair(s, x, 'first_execute_ms')} | {pair(s, x, 'steady_execute_ms')} | "
                    f"{pair(s, x, 'peak_rss_mib', 1)} | {pair(s, x, 'pss_after_load_mib', 1)} | "
                    f"{pair(s, x, 'dirty_after_load_mib', 1)} | {pair(s, x, 'cache_file_dirty_kib', 0)} | "
                    f"{pair(s, x, 'cache_file_bytes', 0)} | {pair(s, x, 'read_mib', 1)} | "
                    f"{pair(s, x, 'commit_durable_ms', 0)} | "
                    f"{s['errors_logged']}/{s['processes']} / {x['errors_logged']}/{x['processes']} |")
    md.append("")
    md.append("| program | threads | warm from disk: xnncache / stock | warm: xnncache / stock | cold: xnncache / stock | cold / none, stock | "
              "cold / none, xnncache | worst cold execute / none | warm PSS: xnncache / stock |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in ratios:
        md.append(f"| `{r['program']}` | {r['threads']} | {fmt(r['disk_xnncache_over_stock'])} | {fmt(r['warm_xnncache_over_stock'])} | "
                  f"{fmt(r['cold_xnncache_over_stock'])} | {fmt(r['cold_over_none_stock'])} | "
                  f"{fmt(r['cold_over_none_xnncache'])} | {fmt(r['worst_cold_execute_over_none_xnncache'])} | "
                  f"{fmt(r['warm_pss_xnncache_over_stock'])} |")
    if any("dev_read_requests" in r for r in rows.values()):
        md.append("")
        md.append("| program | threads | mode | device reads | read from the device, MiB | KiB per read | "
                  "cache file mapped with 2 MiB entries, MiB |")
        md.append("|---|---:|---|---:|---:|---:|---:|")
        for prog in programs:
            for t in threads:
                for mode in modes:
                    s, x = rows[(prog, t, "stock", mode)], rows[(prog, t, "xnncache", mode)]
                    md.append(f"| `{prog}` | {t} | {mode} | {pair(s, x, 'dev_read_requests', 0)} | "
                              f"{pair(s, x, 'dev_read_mib', 1)} | {pair(s, x, 'dev_read_kib_per_request', 0)} | "
                              f"{pair(s, x, 'cache_file_pmd_mib', 1)} |")
    print("== markdown (stock / xnncache in each cell)", file=out)
    print("\n".join(md), file=out)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
