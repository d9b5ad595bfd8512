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
        cols = ["tool", "wall s", "MB/s", *(["link share"] if link else []), "CPU s/GB", "peak RSS MB",
                "MB/s ÷ qwenhome", "conns", "reqs"]
        lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
        for r in sc["results"]:
            srv = r.get("server") or {}
            status = "" if r["status"] == "ok" else f" ({r['status']})"
            cells = [f"{r['tool']}{status}", _f(r["wall_s"], ".2f"), _f(r["mbps"], ".0f"),
                     *([_f(r.get("link_share"), ".2f")] if link else []), _f(r.get("cpu_s_per_gb"), ".2f"),
                     _f(r["rss_mb"], ".0f"), _f(r["ratios"].get("mbps"), ".2f"),
                     _f(srv.get("connections"), "d"), _f(srv.get("requests"), "d")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


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
    lines = [*_head(path, doc),
             "| server | clients | MB/s | ÷ nginx | server CPU s/GB | curl CPU s/GB | TTFB p50 ms | TTFB p99 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["table"]:
        lines.append(f"| {r['server']} | {r['clients']} | {r['mbps']:.0f} | {_f(r['ratio'], '.2f')} | "
                     f"{r['server_cpu_s_per_gb']:.2f} | {r['client_cpu_s_per_gb']:.2f} | {r['ttfb_p50_ms']:.1f} | "
                     f"{r['ttfb_p99_ms']:.1f} |")
    return [*lines, ""]


def xet_format(path: Path, doc: dict[str, Any]) -> list[str]:
    lines = [*_head(path, doc), f"{doc['size'] / 2**20:.0f} MiB, medians of {doc['repeat']}.", "",
             "| row | wall s | CPU s | MB/s | CPU s/GB | CPU ÷ hf_xet |", "| --- | --- | --- | --- | --- | --- |"]
    for r in doc["table"]:
        lines.append(f"| {r['row']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['mbps']:.0f} | "
                     f"{r['cpu_s_per_gb']:.2f} | {r['cpu_vs_hf_xet']:.2f} |")
    return [*lines, ""]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for name in argv:
        path = Path(name)
        doc = json.loads(path.read_text())
        kind = doc.get("kind")
        makers = {"transfer": transfer, "offline": offline, "mirror": mirror, "xet_format": xet_format}
        if kind not in makers:
            print(f"{path}: not a result file of transfer.py, offline.py, mirror.py or xet_format.py",
                  file=sys.stderr)
            return 1
        print("\n".join(makers[kind](path, doc)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
