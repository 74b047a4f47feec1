#!/usr/bin/env bash
# Take a headless-Chromium screenshot of a study's page in optuna-dashboard.
#
#   scripts/dashboard_screenshot.sh [--study NAME] [--storage URL] [--out PNG] [--port N]
#                                   [--size WxH] [--wait SECONDS]
#
# Starts `optuna-biotune dashboard` on 127.0.0.1 (the study's storage and artifacts), waits
# for it, finds the study's id through the dashboard's HTTP API, and points Debian's chromium
# (`apt-get install -y chromium`) at /dashboard/studies/<id> with a fresh profile and no
# network beyond loopback. Default: the embedded default study, docs/dashboard.png.
set -euo pipefail

study="default"
storage=""
out="docs/dashboard.png"
port=""
size="1400,2000"
wait_s=8
while [[ $# -gt 0 ]]; do
  case "$1" in
    --study) study="$2"; shift 2 ;;
    --storage) storage="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --size) size="${2/x/,}"; shift 2 ;;
    --wait) wait_s="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "dashboard_screenshot.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$storage" ]] || storage="sqlite:///studies/${study}.db"

browser=""
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then browser="$b"; break; fi
done
if [[ -z "$browser" ]]; then
  echo "dashboard_screenshot.sh: no chromium found; install it: apt-get install -y chromium" >&2
  exit 2
fi
if [[ -z "$port" ]]; then
  port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

profile=$(mktemp -d)
log=$(mktemp)
optuna-biotune dashboard --study "$study" --storage "$storage" --host 127.0.0.1 --port "$port" \
  >"$log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$profile" "$log"
}
trap cleanup EXIT

base="http://127.0.0.1:${port}"
for _ in $(seq 1 120); do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "dashboard_screenshot.sh: the dashboard exited: $(tail -n 3 "$log")" >&2
    exit 1
  fi
  if python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "${base}/api/meta" 2>/dev/null; then
    break
  fi
  sleep 0.5
done

study_id=$(python - "$base" "$study" <<'EOF'
import json, sys, urllib.request
data = json.load(urllib.request.urlopen(sys.argv[1] + "/api/studies", timeout=10))
ids = [s["study_id"] for s in data["study_summaries"] if s["study_name"] == sys.argv[2]]
if not ids:
    sys.exit(f"no study {sys.argv[2]!r} in the storage")
print(ids[0])
EOF
)

mkdir -p "$(dirname "$out")"
url="${base}/dashboard/studies/${study_id}"
timeout 120 "$browser" \
  --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars \
  --window-size="$size" --virtual-time-budget=$((wait_s * 1000)) \
  --screenshot="$(realpath -m "$out")" "$url" >/dev/null 2>&1 || true
if [[ ! -s "$out" ]]; then
  echo "dashboard_screenshot.sh: chromium wrote no screenshot of $url" >&2
  exit 1
fi
echo "$out ($url)"
