#!/usr/bin/env bash
# Bring up a local Docker engine for the container suite: install docker.io if missing, start dockerd
# when none answers, and wait until it does. Idempotent; CI runs it as root on a fresh machine where
# no init system starts dockerd for us, so the script starts it itself.
#
# The bridge and every address pool stay in 198.19.0.0/16: the PA test networks use 198.18.0.0/16 and
# the project uses no other private range.
set -euo pipefail

cd "$(dirname "$0")/.."
state_dir="${OVERLAND_STATE_DIR:-.overland}"
log_file="$state_dir/dockerd.log"
bridge_ip="198.19.0.1/24"
address_pool="base=198.19.0.0/16,size=24"
ready_timeout="${DOCKERD_READY_TIMEOUT:-60}"

engine_answers() {
  timeout 10 docker info >/dev/null 2>&1
}

install_engine() {
  if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; then
    return
  fi
  echo "docker-up: installing docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
}

# overlay2 needs a kernel overlay filesystem and a backing filesystem that supports it; vfs always works
# but copies every layer, so it is only the fallback.
pick_storage_driver() {
  if grep -qw overlay /proc/filesystems; then
    echo overlay2
  else
    echo vfs
  fi
}

start_engine() {
  local driver=$1
  mkdir -p "$state_dir"
  echo "docker-up: starting dockerd (storage driver $driver), log in $log_file"
  # setsid: dockerd must outlive the make/pytest process group that started it.
  setsid dockerd \
    --bip "$bridge_ip" \
    --default-address-pool "$address_pool" \
    --storage-driver "$driver" \
    --log-level warn \
    >>"$log_file" 2>&1 </dev/null &
  echo $! >"$state_dir/dockerd.pid"
}

wait_ready() {
  local pid=$1 deadline=$((SECONDS + ready_timeout))
  while ((SECONDS < deadline)); do
    if engine_answers; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.5
  done
  return 1
}

check_bridge() {
  local subnet
  subnet=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}')
  case "$subnet" in
    198.19.*) ;;
    *)
      echo "docker-up: the running engine's bridge is $subnet, outside 198.19.0.0/16;" \
        "stop it and rerun (this script starts it with --bip $bridge_ip)" >&2
      exit 1
      ;;
  esac
}

install_engine
if ! engine_answers; then
  driver=$(pick_storage_driver)
  start_engine "$driver"
  if ! wait_ready "$(cat "$state_dir/dockerd.pid")"; then
    if [[ $driver == overlay2 ]]; then
      echo "docker-up: dockerd did not come up with overlay2, retrying with vfs" >&2
      kill "$(cat "$state_dir/dockerd.pid")" 2>/dev/null || true
      sleep 1
      start_engine vfs
      wait_ready "$(cat "$state_dir/dockerd.pid")" || {
        tail -20 "$log_file" >&2
        exit 1
      }
    else
      tail -20 "$log_file" >&2
      exit 1
    fi
  fi
fi
check_bridge
echo "docker-up: engine ready ($(docker info --format '{{.ServerVersion}} {{.Driver}}'))"
