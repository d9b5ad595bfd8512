"""Everything times out at once: the whole run still ends within its total
deadline (4 s by default, the goal is under 5 s), and every network check says
why. The bounds add what the same run costs here and now when everything fails
at once instead (measured in the same test), so a loaded machine does not fail
them and a missing deadline still does."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from qwenhome.doctor import DoctorReport, DoctorTimeouts, render_report, run_doctor
from tests.doctor_support.dns_server import DnsServer
from tests.doctor_support.setup import options_for, settings_for
from tests.doctor_support.sockets import Blackhole, closed_port

MARGIN = 0.5  # seconds; a step that ignored the deadline would cost 1.5 s or more
TIMEOUT_CODES = {"dns-resolution-failed", "response-timeout", "connection-timeout", "wsl-resolv-conf"}


def every_check_run(tmp_path: Path, port: int, dns_mode: str) -> tuple[float, DoctorReport]:
    """The doctor over sources that all touch ``port`` or names the DNS servers
    (in ``dns_mode``) are asked about, with the default time-outs; its duration."""
    proc = tmp_path / "proc_version"
    proc.write_text("Linux version 5.15.153.1-microsoft-standard-WSL2\n")
    with DnsServer(mode=dns_mode) as dns, DnsServer(mode=dns_mode) as dns2:
        sources = [
            "https://huggingface.co",                   # DNS (also brings the three Xet hosts)
            "http://mirror.qwenhome.test:8080",         # DNS
            f"http://127.0.0.1:{port}",                 # HTTP request
            f"https://127.0.0.1:{port}/tls",            # through the proxy: CONNECT
            f"modelscope:http://127.0.0.1:{port}/ms",
        ]
        env = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": "huggingface.co,.hf.co"}
        settings = settings_for(tmp_path, sources, env)
        opts = replace(options_for(tmp_path, [dns.address], system_dns=[dns2.address],
                                   proc_version=proc, nameserver_port=dns.port),
                       timeouts=DoctorTimeouts())  # the defaults, as users get them
        started = time.monotonic()
        report = run_doctor(settings, options=opts)
        return time.monotonic() - started, report


def test_whole_run_with_every_check_timing_out_ends_within_its_deadline(tmp_path: Path) -> None:
    baseline, fast = every_check_run(tmp_path, closed_port(), "servfail")  # everything fails at once
    assert not fast.ok
    with Blackhole() as hole:
        elapsed, report = every_check_run(tmp_path, hole.port, "silent")  # everything hangs
    print(f"\nall-timeouts doctor run: {elapsed:.2f} s ({baseline:.2f} s failing at once), "
          f"{len(report.checks)} checks")
    assert elapsed < DoctorTimeouts().total + baseline + MARGIN, (elapsed, baseline)
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
    opts = replace(options_for(tmp_path), timeouts=DoctorTimeouts(dns=1.0, connect=1.0, read=30.0, total=1.0))
    started = time.monotonic()
    run_doctor(settings_for(tmp_path, [f"http://127.0.0.1:{closed_port()}"]), options=opts)
    baseline = time.monotonic() - started  # refused at once: what the run costs without waiting
    with Blackhole() as hole:
        started = time.monotonic()
        report = run_doctor(settings_for(tmp_path, [hole.url]), options=opts)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + baseline + MARGIN, (elapsed, baseline)  # not the 30 s read time-out
    check = next(c for c in report.checks if c.id == "api:hf")
    assert check.code == "response-timeout"
