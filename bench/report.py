"""Markdown tables from benchmark result files, as bench/README.md shows them.

    .venv/bin/python bench/report.py bench/results/transfer-20261130-101500.json [...]

Each table is headed by the file it comes from and the command that wrote it,
so every figure in the README can be traced to its run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _head(path: Path, doc: dict[str, Any]) -> list[str]:
    m = doc.get("machine", {})
    return [f"`{path.as_posix()}`: `{doc.get('command', '?')}` at {doc.get('source', {}).get('commit', '?')[:10]}, "
            f"{m.get('cpus', '?')} cores, load average {doc.get('loadavg_before', ['?'])[0]} before, "
            f"{doc.get('loadavg_after', ['?'])[0]} after.", ""]


def transfer(path: Path, doc: dict[str, Any]) -> list[str]:
    lines = _head(path, doc)
    repeat = doc.get("repeat", 1)
    for name, sc in doc["scenarios"].items():
        link = sc.get("link") is not None
        lines += [f"**{name}**: {sc['about']}; medians of {repeat}, load average {sc['loadavg_before'][0]} → "
                  f"{sc['loadavg_after'][0]}.", ""]
        idle = link and any(r.get("idle_ms") for r in sc["results"])
        cols = ["tool", "wall s", "MB/s", *(["link share"] if link else []),
                *(["idle ms: start, under way, end", "CPU busy"] if idle else []), "CPU s/GB", "peak RSS MB",
                "MB/s ÷ qwenhome", "conns", "reqs"]
        lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        for r in sc["results"]:
            srv = r.get("server") or {}
            status = "" if r["status"] == "ok" else f" ({r['status']})"
            cells = [f"{r['tool']}{status}", _f(r["wall_s"], ".2f"), _f(r["mbps"], ".0f"),
                     *([_f(r.get("link_share"), ".2f")] if link else []), *(_idle(r) if idle else []),
                     _f(r.get("cpu_s_per_gb"), ".2f"),
                     _f(r["rss_mb"], ".0f"), _f(r["ratios"].get("mbps"), ".2f"),
                     _f(srv.get("connections"), "d"), _f(srv.get("requests"), "d")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _idle(r: dict[str, Any]) -> list[str]:
    """The link's idle time (medians, ms) and the machine's CPU busy share."""
    i = r.get("idle_ms")
    cells = "-" if not i else f"{i['start']:.0f}, {i['under']:.0f}, {i['end']:.0f}"
    busy = r.get("busy")
    return [cells, "-" if busy is None else f"{busy:.0%}"]


def offline(path: Path, doc: dict[str, Any]) -> list[str]:
    s = doc["startup"]
    lines = _head(path, doc)
    lines += [f"Python start-up: `import qwenhome.cli` {s['qh_wall_s']:.2f} s, `import huggingface_hub` "
              f"{s['stock_wall_s']:.2f} s (medians).", "",
              "| state | qwenhome | wall s | CPU s | stock huggingface_hub | wall s | CPU s | stock ÷ qwenhome |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["rows"]:
        stock = f"{r['stock_wall_s']:.2f}" + ("" if r["stock_ok"] else f" ({r['stock_outcome']})")
        lines.append(f"| {r['state']} | `{r['qwenhome']}` | {r['qh_wall_s']:.2f} | {r['qh_cpu_s']:.2f} | "
                     f"`{r['stock']}` | {stock} | {r['stock_cpu_s']:.2f} | {r['stock_over_qh']} |")
    if "adopt" in doc:
        a = doc["adopt"]
        lines += ["", f"`qwenhome adopt` of a {a['bytes'] / 1e9:.2f} GB hub cache: {a['verify']['wall_s']:.2f} s "
                  f"({a['verify']['cpu_s']:.2f} s CPU) checking every byte's sha256, {a['no_verify']['wall_s']:.2f} s "
                  f"with `--no-verify`; extra disk {a['extra_disk_bytes']} bytes."]
    return [*lines, ""]


def mirror(path: Path, doc: dict[str, Any]) -> list[str]:
    lines = [*_head(path, doc)]
    if doc.get("table"):
        lines += ["| server | clients | MB/s | ÷ nginx | server CPU s/GB | curl CPU s/GB | TTFB p50 ms | TTFB p99 ms |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in doc["table"]:
            lines.append(f"| {r['server']} | {r['clients']} | {r['mbps']:.0f} | {_f(r['ratio'], '.2f')} | "
                         f"{r['server_cpu_s_per_gb']:.2f} | {r['client_cpu_s_per_gb']:.2f} | "
                         f"{r['ttfb_p50_ms']:.1f} | {r['ttfb_p99_ms']:.1f} |")
    if doc.get("stock_table"):
        lines += ["", "| stock client -> server | clients | MB/s | ÷ plain -> mirror | mirror CPU s/GB | "
                  "client CPU s/GB | plain's CPU s/GB ÷ this | link share |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in doc["stock_table"]:
            lines.append(f"| {r['client']} | {r['clients']} | {r['mbps']:.0f} | {_f(r['vs_plain'], '.2f')} | "
                         f"{r['server_cpu_s_per_gb']:.2f} | {r['client_cpu_s_per_gb']:.2f} | "
                         f"{_f(r.get('cpu_vs_plain'), '.2f')} | {_f(r.get('link_share'), '.2f')} |")
    return [*lines, ""]


def serve(path: Path, doc: dict[str, Any]) -> list[str]:
    lines = [*_head(path, doc), "| chat | TTFT ms (median) | tokens/s (median) | best TTFT ms | best tokens/s |",
             "| --- | --- | --- | --- | --- |"]
    chat = doc["chat"]
    for name, side in (("direct `generate()`", chat["direct"]), ("API (worker, SSE over HTTP)", chat["api"])):
        lines.append(f"| {name} | {side['ttft_ms']:.1f} | {side['tokens_per_s']:.1f} | "
                     f"{_f(side.get('best_ttft_ms'), '.1f')} | {_f(side.get('best_tokens_per_s'), '.1f')} |")
    d, a = chat["direct"], chat["api"]
    best = (f"{a['best_ttft_ms'] / d['best_ttft_ms']:.3f} | {a['best_tokens_per_s'] / d['best_tokens_per_s']:.3f}"
            if "best_ttft_ms" in d and "best_ttft_ms" in a else "- | -")
    lines += [f"| API ÷ direct | {chat['ttft_ratio']:.3f} | {chat['tps_ratio']:.3f} | {best} |", "",
              "| `/health` while | n | p50 ms | p99 ms | max ms | event loop on CPU | event loop waiting for a CPU "
              "| load average |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    seconds = float(doc.get("seconds") or 15.0)
    for h in doc["health"]:
        cpu = _f(h["loop_cpu_s"] / seconds * 100, ".1f") + " %" if "loop_cpu_s" in h else "-"
        wait = _f(h["loop_runqueue_wait_s"] / seconds * 100, ".1f") + " %" if "loop_runqueue_wait_s" in h else "-"
        lines.append(f"| {h['while']} | {h['n']} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} | {h['max_ms']:.1f} | "
                     f"{cpu} | {wait} | {_f(h.get('loadavg'), '.1f')} |")
    return [*lines, ""]


def xet_format(path: Path, doc: dict[str, Any]) -> list[str]:
    lines = [*_head(path, doc), f"{doc['size'] / 2**20:.0f} MiB, medians of {doc['repeat']}.", "",
             "| row | wall s | CPU s | MB/s | CPU s/GB | CPU ÷ hf_xet |", "| --- | --- | --- | --- | --- | --- |"]
    for r in doc["table"]:
        lines.append(f"| {r['row']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['mbps']:.0f} | "
                     f"{r['cpu_s_per_gb']:.2f} | {r['cpu_vs_hf_xet']:.2f} |")
    return [*lines, ""]


def xet(path: Path, doc: dict[str, Any]) -> list[str]:
    lines = [*_head(path, doc), "| scenario | tool | MB/s | ÷ hf_xet | CPU s/GB | sent MB | runs ok |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for sc, tools in doc["throughput"].items():
        ref = tools.get("hf_xet", {}).get("mbps") or 0
        for tool, s in tools.items():
            lines.append(f"| {sc} | {tool} | {s['mbps']:.1f} | {_f(s['mbps'] / ref if ref else None, '.2f')} | "
                         f"{_f(s['cpu_s_per_gb'], '.2f')} | {sum(s['sent'].values()) / 1e6:.1f} | "
                         f"{s['ok']}/{s['runs']} |")
    up = doc.get("update")
    if up:
        lines += ["", f"Updated revision: {up['new_revision_bytes'] / 1e6:.1f} MB, of which "
                      f"{up['new_chunk_bytes'] / 1e6:.1f} MB in chunks the old revision lacks.", "",
                  "| tool | fetched MB | ÷ new chunk data | wall s | disk MB |", "| --- | --- | --- | --- | --- |"]
        for tool in ("qwenhome", "hf_xet", "hf plain"):
            u = up.get(tool)
            if u and u.get("ok"):
                lines.append(f"| {tool} | {u['fetched'] / 1e6:.1f} | {u['fetched_vs_new_chunks']:.2f} | "
                             f"{u['wall_s']:.2f} | {u['disk_bytes'] / 1e6:.1f} |")
    return [*lines, ""]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for name in argv:
        path = Path(name)
        doc = json.loads(path.read_text())
        kind = doc.get("kind")
        makers = {"transfer": transfer, "offline": offline, "mirror": mirror, "xet_format": xet_format, "xet": xet,
                  "serve": serve}
        if kind not in makers:
            print(f"{path}: not a result file of transfer.py, offline.py, mirror.py, xet_format.py, xet.py "
                  "or serve.py",
                  file=sys.stderr)
            return 1
        print("\n".join(makers[kind](path, doc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
