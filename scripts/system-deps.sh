#!/usr/bin/env bash
# Debian packages that some tests and benchmarks use. Installs only what is
# missing (each is skipped when its command is already there); needs root (CI
# and the dev machines run as root) or sudo. Without them the tests that need
# them skip, each naming the missing command.
#   chromium     headless browser for the web page tests (test_browser_chat, test_images_browser)
#   nginx-light  caching proxy in front of the mirror, and the static server the benchmarks race (test_mirror_nginx, test_bench_nginx)
#   aria2        aria2c, a peer downloader the benchmarks compare against (test_bench_nginx, test_bench_smoke)
#   curl         a single-connection peer in the benchmarks (test_bench_smoke, test_bench_nginx)
#   iproute2     ip, to give the offline tests a network namespace that counts every packet (test_offline_packets)
#   strace       names the calls that tried to reach the network when an offline test fails (test_offline_packets)
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v aria2c >/dev/null 2>&1 || need+=(aria2)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
command -v strace >/dev/null 2>&1 || need+=(strace)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || true
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
