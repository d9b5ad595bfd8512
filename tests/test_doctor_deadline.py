"""Everything times out at once: the whole run still ends in under 5 s, with
the default time-outs, and every network check says why."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from qwenhome.doctor import DoctorTimeouts, render_report, run_doctor
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.setup import options_for, settings_for
from tests.doctor_support.sockets import Blackhole

TIMEOUT_CODES = {"dns-resolution-failed", "response-timeout", "connection-timeout", "wsl-resolv-conf"}


def test_whole_run_with_every_check_timing_out_takes_under_5_seconds(tmp_path: Path) -> None:
    proc = tmp_path / "proc_version"
    proc.write_text("Linux version 5.15.153.1-microsoft-standard-WSL2\n")
    with Blackhole() as hole, DnsServer(mode="silent") as silent, DnsServer(mode="silent") as silent2:
        sources = [
            "https://huggingface.co",                   # DNS hangs (also brings the three Xet hosts)
            "http://mirror.qwenhome.test:8080",         # DNS hangs
            f"http://127.0.0.1:{hole.port}",            # HTTP request hangs
            f"https://127.0.0.1:{hole.port}/tls",       # through the proxy: CONNECT hangs
            f"modelscope:http://127.0.0.1:{hole.port}/ms",
        ]
        env = {"HTTPS_PROXY": hole.url, "NO_PROXY": "huggingface.co,.hf.co"}
        settings = settings_for(tmp_path, sources, env)
        opts = replace(options_for(tmp_path, [silent.address], system_dns=[silent2.address],
                                   proc_version=proc, nameserver_port=silent.port),
                       timeouts=DoctorTimeouts())  # the defaults, as users get them
        started = time.monotonic()
        report = run_doctor(settings, options=opts)
        elapsed = time.monotonic() - started
        print(f"\nall-timeouts doctor run: {elapsed:.2f} s, {len(report.checks)} checks")
    assert elapsed < 5.0
    by_id = {c.id: c for c in report.checks}
    for host in ("huggingface.co", "mirror.qwenhome.test", "cas-server.xethub.hf.co",
                 "cas-bridge.xethub.hf.co", "transfer.xethub.hf.co"):
        assert by_id[f"dns:{host}"].code == "dns-resolution-failed", host
    assert by_id["api:hf2"].code == "response-timeout"
    assert by_id["tunnel:127.0.0.1"].code == "response-timeout"
    assert by_id["api:modelscope4"].code == "response-timeout"
    assert by_id["wsl-resolv-conf"].code == "wsl-resolv-conf"
    failing = [c for c in report.checks if c.status == "fail"]
    assert failing and {c.code for c in failing} <= TIMEOUT_CODES
    assert report.exit_code == 1
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False
    assert "FAIL" in render_report(report)


def test_each_step_is_cut_to_what_is_left_of_the_total(tmp_path: Path) -> None:
    with Blackhole() as hole:
        opts = replace(options_for(tmp_path), timeouts=DoctorTimeouts(dns=1.0, connect=1.0, read=30.0, total=1.0))
        started = time.monotonic()
        report = run_doctor(settings_for(tmp_path, [hole.url]), options=opts)
        elapsed = time.monotonic() - started
    assert elapsed < 1.8  # not the 30 s read time-out
    check = next(c for c in report.checks if c.id == "api:hf")
    assert check.code == "response-timeout"
