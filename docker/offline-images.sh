#!/usr/bin/env bash
# Stand-ins for the two public images docker-compose.yml starts from, built where no image
# registry is reachable (only Debian's archive and Maven Central are):
#
#   rollguard-offline/python:3.11-bookworm  for python:3.11-slim    (ROLLGUARD_PYTHON_IMAGE)
#   rollguard-offline/kafka:4.1.1           for apache/kafka:4.1.1  (ROLLGUARD_KAFKA_IMAGE)
#
# The first is Debian bookworm bootstrapped with debootstrap (its python3 is 3.11) and
# imported with `docker import`; the second adds Debian's JRE 17 and the Kafka jars that
# `rollguard kafka start` resolves with Maven (rollguard/kafka/pom.xml), started by
# docker/kafka/run, which reads the same KAFKA_* variables as apache/kafka.
#
# The bootstrapped tree is cached as a tarball in /var/cache/rollguard (ROLLGUARD_IMAGE_CACHE),
# its packages too; an image already built from the same inputs is kept. Needs root,
# debootstrap and a Docker engine. Progress goes to stderr; stdout gets the variables to use:
#
#   eval "$(bash docker/offline-images.sh)" && docker compose up
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache="${ROLLGUARD_IMAGE_CACHE:-/var/cache/rollguard}"
suite=bookworm
mirror="${ROLLGUARD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=ca-certificates,python3,python3-venv
python_image="${ROLLGUARD_OFFLINE_PYTHON_IMAGE:-rollguard-offline/python:3.11-bookworm}"
kafka_image="${ROLLGUARD_OFFLINE_KAFKA_IMAGE:-rollguard-offline/kafka:4.1.1}"

say() { echo "offline-images: $*" >&2; }
die() { echo "offline-images: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "debootstrap needs root: run this script as root (or with sudo)."
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap."
docker info >/dev/null 2>&1 || die "no Docker engine answers: start dockerd first."

# -- the base: Debian bookworm with Python 3.11 ----------------------------------------------
# what the tree is made of; a change makes a new tarball and a new image
# this machine's own certificate authorities (/usr/local/share/ca-certificates), so that pip
# and apt in the images trust what the machine trusts (a proxy that inspects TLS, say)
local_cas=/usr/local/share/ca-certificates
key="$(printf '%s\n' "$suite" "$mirror" "$packages" "$(sed -n '/^# -- the base/,/^# -- the Kafka/p' "$0")" \
       "$(cat "$local_cas"/* 2>/dev/null || true)" | sha256sum | cut -c1-12)"
tarball="$cache/$suite-python3-$key.tar"
mkdir -p "$cache/debs"

if [ "$(docker image inspect -f '{{.Comment}}' "$python_image" 2>/dev/null)" = "rollguard-base $key" ]; then
  say "$python_image is up to date (base $key)."
else
  if [ ! -s "$tarball" ]; then
    tree="$(mktemp -d "$cache/tree.XXXXXX")"
    trap 'rm -rf "$tree"' EXIT
    say "bootstrapping Debian $suite with $packages (packages cached in $cache/debs)…"
    began=$SECONDS
    if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
        "$suite" "$tree" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      tail -n 15 "$cache/debootstrap.log" >&2
      die "debootstrap of Debian $suite failed: check that $mirror answers (its log: $cache/debootstrap.log)."
    fi
    if compgen -G "$local_cas/*" >/dev/null; then
      cp -r "$local_cas"/. "$tree$local_cas/"
      chroot "$tree" update-ca-certificates >/dev/null 2>&1 \
        || die "update-ca-certificates failed in the bootstrapped tree."
    fi
    # what Debian's own container images do: apt sources with updates, no docs, no caches
    cat >"$tree/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
    cat >"$tree/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
      >"$tree/etc/apt/apt.conf.d/docker-no-recommends"
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* \
           "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/var/log/*.log \
           "$tree"/debootstrap
    mkdir -p "$tree/usr/share/man/man1"  # update-alternatives (the JRE's) links pages there
    : >"$tree/etc/resolv.conf"
    tar -C "$tree" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$tree"
    trap - EXIT
    say "bootstrapped in $((SECONDS - began)) s: $tarball ($(du -h "$tarball" | cut -f1))."
  fi
  say "importing $tarball as $python_image…"
  docker import --message "rollguard-base $key" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    "$tarball" "$python_image" >/dev/null
  # older tarballs of the base are of no use any more
  find "$cache" -maxdepth 1 -name "$suite-python3-*.tar" ! -name "$(basename "$tarball")" -delete
fi

# -- the Kafka image: Debian's JRE and the jars of `rollguard kafka start` --------------------
# rollguard's own code resolves the jars (Maven, once) into its cache, as `rollguard kafka start`
python=python3
if [ -x "$root/.venv/bin/python" ]; then
  python="$root/.venv/bin/python"
fi
command -v "$python" >/dev/null || die "python3 is needed to resolve Kafka's jars: install it."
jars="$(cd "$root" && PYTHONPATH="$root" "$python" -c '
import sys
from rollguard.kafka.local import BrokerError, LocalBroker
try:
    print(LocalBroker().ensure_jars(progress=lambda line: print(line, file=sys.stderr)))
except BrokerError as exc:
    sys.exit(f"offline-images: {exc}")
')"
version="$(cd "$root" && PYTHONPATH="$root" "$python" -c \
  'from rollguard.kafka.local import KAFKA_VERSION; print(KAFKA_VERSION)')"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$here/kafka/Dockerfile" "$here/kafka/run" "$context/"
cp -rl "$jars" "$context/libs" 2>/dev/null || { rm -rf "$context/libs"; cp -r "$jars" "$context/libs"; }
rm -f "$context/libs/.complete"
say "building $kafka_image (Kafka $version, $(ls "$context/libs" | wc -l) jars from $jars)…"
if ! DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE_IMAGE=$python_image" \
    --build-arg "KAFKA_VERSION=$version" -t "$kafka_image" "$context" \
    >"$cache/kafka-build.log" 2>&1; then
  tail -n 15 "$cache/kafka-build.log" >&2
  die "building $kafka_image failed: read $cache/kafka-build.log."
fi
say "$kafka_image is ready."

echo "export ROLLGUARD_PYTHON_IMAGE=$python_image"
echo "export ROLLGUARD_KAFKA_IMAGE=$kafka_image"
