#!/usr/bin/env bash
# Prepares this host for Enclave's Docker backend, with no container registry:
#   1. installs Debian's docker.io and runsc (gVisor) if they are missing;
#   2. registers Enclave's gVisor runtimes in /etc/docker/daemon.json, keeping any
#      existing configuration;
#   3. starts dockerd (or makes a running one reload its configuration);
#   4. builds the base image enclave/base:latest from busybox-static with `docker import`;
#   5. builds the clone image enclave/git:latest (busybox plus Debian's git and its libraries).
# Safe to run again: each step checks first. Run as root.
set -euo pipefail

IMAGE="${ENCLAVE_BASE_IMAGE:-enclave/base:latest}"
DAEMON_JSON=/etc/docker/daemon.json
RUNSC=/usr/bin/runsc

say() { echo "setup-docker: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-docker: run as root (it installs packages and configures dockerd)" >&2
    exit 1
fi

# 1. Packages. busybox-static gives the base image a shell and coreutils in one static
#    binary; python3 merges daemon.json without clobbering other settings.
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x "$RUNSC" ] || need+=(runsc)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || need+=(busybox-static)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Debian's git (not whatever git is first on PATH): the clone image copies it with
# its libraries; iptables guards the per-session networks of allowlist sessions.
[ -x /usr/bin/git ] && [ -x /usr/lib/git-core/git-remote-https ] || need+=(git)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. Runtimes. runsc's default netstack fails under this Docker version ("cannot run
#    with network enabled in root network namespace"), so each runtime pins a network
#    mode: none for deny-mode sessions, host (the container's own netns) for sessions
#    that reach the egress proxy.
mkdir -p "$(dirname "$DAEMON_JSON")"
changed=$(python3 - "$DAEMON_JSON" "$RUNSC" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
config = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        config = json.load(f)
runtimes = config.setdefault("runtimes", {})
wanted = {
    "enclave-runsc": {"path": runsc, "runtimeArgs": ["--network=none"]},
    "enclave-runsc-netns": {"path": runsc, "runtimeArgs": ["--network=host"]},
}
changed = any(runtimes.get(k) != v for k, v in wanted.items())
runtimes.update(wanted)
if changed:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
print("yes" if changed else "no")
PY
)
[ "$changed" = yes ] && say "registered runtimes enclave-runsc, enclave-runsc-netns in $DAEMON_JSON"

# 3. dockerd. Under systemd use the unit; otherwise (containers, CI sandboxes) start
#    the daemon directly. A running daemon reloads runtimes on SIGHUP.
if docker info >/dev/null 2>&1; then
    if [ "$changed" = yes ]; then
        say "reloading dockerd configuration"
        pkill -HUP -x dockerd || true
        sleep 2
    fi
else
    if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
        say "starting docker.service"
        systemctl start docker
    else
        # A daemon killed without cleanup (e.g. when a CI job ends) leaves pid files that
        # make the next start fail ("pid file found"); drop them unless the pid is alive.
        for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
            if [ -f "$pidfile" ] && ! ps -p "$(cat "$pidfile")" -o comm= 2>/dev/null | grep -qE '^(dockerd|containerd)$'; then
                say "removing stale $pidfile"
                rm -f "$pidfile"
            fi
        done
        say "starting dockerd (log: /var/log/enclave-dockerd.log)"
        nohup dockerd >/var/log/enclave-dockerd.log 2>&1 &
    fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
fi
if ! docker info >/dev/null 2>&1; then
    echo "setup-docker: dockerd did not come up; its log ends with:" >&2
    tail -n 20 /var/log/enclave-dockerd.log >&2 2>/dev/null || true
    exit 1
fi
docker info --format '{{json .Runtimes}}' | grep -q enclave-runsc \
    || { echo "setup-docker: dockerd does not list the enclave-runsc runtime" >&2; exit 1; }

# 4. Base image, built locally: no registry is needed or used.
# A minimal root filesystem in $1: busybox and its applets, users root and nobody,
# a world-writable /tmp and a /workspace owned by the workload user.
busybox_root() {
    mkdir -p "$1"/{bin,tmp,workspace,etc,proc,dev,sys}
    cp /bin/busybox "$1/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$1/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$1/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$1/etc/group"
    chmod 1777 "$1/tmp"
    chown 65534:65534 "$1/workspace"
}

build_dirs=()
trap 'rm -rf "${build_dirs[@]}"' EXIT

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "building $IMAGE from busybox-static"
    root=$(mktemp -d)
    build_dirs+=("$root")
    busybox_root "$root"
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/bin' -c 'WORKDIR /workspace' -c 'LABEL dev.enclave.image=base' \
        - "$IMAGE" >/dev/null
fi

# 5. The clone image: busybox plus Debian's git and the shared libraries it links,
#    copied from this host. Only the clone step uses it; workloads never do.
GIT_IMAGE=enclave/git:latest
if ! docker image inspect "$GIT_IMAGE" >/dev/null 2>&1; then
    say "building $GIT_IMAGE from busybox-static and Debian's git"
    groot=$(mktemp -d)
    build_dirs+=("$groot")
    busybox_root "$groot"
    mkdir -p "$groot"/{etc/ssl/certs,usr/bin,usr/lib/git-core,usr/share/git-core}
    cp /usr/bin/git "$groot/usr/bin/git"
    for helper in git-remote-http git-remote-https; do
        cp /usr/lib/git-core/$helper "$groot/usr/lib/git-core/$helper"
    done
    ln -s ../../bin/git "$groot/usr/lib/git-core/git"
    # Every library the binaries link, with the loader, at the same paths.
    for lib in $(ldd /usr/bin/git /usr/lib/git-core/git-remote-https | grep -o '/[^ ]*' | grep -v ':$' | sort -u); do
        mkdir -p "$groot$(dirname "$lib")"
        cp -L "$lib" "$groot$lib"
    done
    cp /etc/ssl/certs/ca-certificates.crt "$groot/etc/ssl/certs/ca-certificates.crt"
    tar -C "$groot" -c . | docker import \
        -c 'ENV PATH=/usr/bin:/bin' -c 'WORKDIR /workspace' -c 'LABEL dev.enclave.image=git' \
        - "$GIT_IMAGE" >/dev/null
fi
docker run --rm --pull never --runtime=enclave-runsc --network=none "$GIT_IMAGE" git --version >/dev/null \
    || { echo "setup-docker: $GIT_IMAGE does not run git under gVisor" >&2; exit 1; }

# Prove gVisor actually runs: its kernel reports itself in dmesg.
if docker run --rm --pull never --runtime=enclave-runsc --network=none "$IMAGE" dmesg 2>/dev/null | grep -q gVisor; then
    say "ok: docker $(docker version --format '{{.Server.Version}}'), gVisor runtime works, image $IMAGE present"
else
    echo "setup-docker: a probe container under enclave-runsc did not see gVisor's kernel" >&2
    exit 1
fi
