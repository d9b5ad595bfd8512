"""A Hub endpoint whose file bodies come from nginx, a server this project did
not write: nginx serves the repositories' files itself (sendfile, ranges,
ETag) with ``limit_rate`` per connection, and passes the metadata requests
(revision info, trees, HEAD) to the project's server.

    .venv/bin/python bench/transfer.py --generate-only /dev/shm/bench-repos
    .venv/bin/python bench/nginx_endpoint.py --root /dev/shm/bench-repos --port 18020 --limit-mbps 20 &
    .venv/bin/python bench/transfer.py --endpoint http://127.0.0.1:18020 \\
        --scenario one-big-limited --scenario many-files --tools qwenhome,hf_transfer,aria2c --repeat 3

``--tls`` serves HTTPS with a certificate from a throw-away CA whose file is
printed as ``ca_file`` (give it to qwenhome as ``SSL_CERT_FILE``).

Needs nginx (``apt-get install nginx-light``). Runs until interrupted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _nginx import find_nginx, http_settings, main_settings  # noqa: E402

CONF = """
{main}
http {{
{http}
    upstream meta {{ server 127.0.0.1:{meta_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port}{ssl};
        root {root};
        {limit}
        location ~ ^/([^/]+)/([^/]+)/resolve/[^/]+/(.*)$ {{
            if ($request_method = HEAD) {{ proxy_pass http://meta; }}
            rewrite ^/([^/]+)/([^/]+)/resolve/[^/]+/(.*)$ /$1/$2/$3 break;
        }}
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_pass http://meta;
        }}
    }}
}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="folder holding Org/Name/ repositories")
    ap.add_argument("--port", type=int, default=18020)
    ap.add_argument("--limit-mbps", type=float, default=20.0, help="MB/s per connection (0: no limit)")
    ap.add_argument("--tls", action="store_true", help="serve HTTPS (a throw-away CA; its file is printed)")
    args = ap.parse_args()
    nginx = find_nginx()
    if nginx is None:
        print("nginx not installed (apt-get install nginx-light)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="qwenhome-nginx-"))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir()
    meta = subprocess.Popen([sys.executable, str(ROOT / "bench/_server.py"), "--root", str(args.root)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert meta.stdout is not None
    meta_url = json.loads(meta.stdout.readline())["url"]
    limit = f"limit_rate {int(args.limit_mbps * 1_000_000)};" if args.limit_mbps else ""
    ssl, ca_file = "", None
    if args.tls:
        import trustme  # a dev extra, like the test suite's

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
        ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        ssl = " ssl"
        limit += f"\n        ssl_certificate {tmp / 'server.pem'};\n        ssl_certificate_key {tmp / 'server.pem'};"
    (tmp / "nginx.conf").write_text(CONF.format(main=main_settings(tmp, 1, 4096), http=http_settings(tmp),
                                                root=args.root.resolve(), port=args.port, limit=limit, ssl=ssl,
                                                meta_port=meta_url.rsplit(":", 1)[1]))
    server = subprocess.Popen([nginx, "-c", str(tmp / "nginx.conf")])
    # Blocked only now: the children must not inherit the mask.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # taken by sigwait below
    scheme = "https" if args.tls else "http"
    print(json.dumps({"url": f"{scheme}://127.0.0.1:{args.port}", "metadata": meta_url,
                      "ca_file": str(ca_file) if ca_file else None}), flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.terminate()
        assert meta.stdin is not None
        meta.stdin.close()  # the metadata server stops at the end of its input
        meta.terminate()
        server.wait(10)
        meta.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
