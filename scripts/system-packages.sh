#!/usr/bin/env bash
# The Debian packages rollguard's tests run against for real: Prometheus (a real scraper and
# promtool for the alert rules) and headless Chromium with its driver (the dashboard's browser
# test). Installs only what is missing; needs root (or sudo) and apt-get. Safe to run again.
set -euo pipefail

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "rollguard's tests need: ${need[*]}; install them with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
echo "installing ${need[*]} (Debian packages the tests use)…"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
