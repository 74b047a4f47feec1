#!/usr/bin/env bash
# Open a study in optuna-dashboard with headless Chromium: a screenshot, and the rendered pages.
#
#   scripts/dashboard_screenshot.sh [--study NAME] [--storage URL] [--out PNG] [--dom DIR]
#                                   [--port N] [--size WxH] [--wait SECONDS]
#   scripts/dashboard_screenshot.sh --browser    # print the Chromium it would use, or exit 2
#
# Starts `optuna-biotune dashboard` on 127.0.0.1 (the study's storage and artifacts; as
# `$PYTHON -m optuna_biotune.cli`, PYTHON defaults to `python`), waits for it, finds the study's
# id through the dashboard's HTTP API, and points Debian's chromium (`apt-get install -y
# chromium`; `$CHROMIUM` overrides) at /dashboard/studies/<id> with a fresh profile and no
# network beyond loopback. The page renders for --wait seconds of virtual time (pending
# requests finish first), then the screenshot is taken. With --dom DIR, the DOM as rendered is
# written too: DIR/study.html (the screenshotted page), DIR/trials.html (the trial list) and
# DIR/note.html (the study note). tests/test_dashboard_browser.py runs this script, so the
# screenshot and the test see the dashboard the same way. Default: the embedded default
# study, docs/dashboard.png.
set -euo pipefail

study="default"
storage=""
out="docs/dashboard.png"
dom=""
port=""
size="1400,2000"
wait_s=8
only_browser=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --study) study="$2"; shift 2 ;;
    --storage) storage="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --dom) dom="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --size) size="${2/x/,}"; shift 2 ;;
    --wait) wait_s="$2"; shift 2 ;;
    --browser) only_browser=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "dashboard_screenshot.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$storage" ]] || storage="sqlite:///studies/${study}.db"
python="${PYTHON:-python}"

browser=""
for b in ${CHROMIUM:-} chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
done
if [[ -z "$browser" ]]; then
  echo "dashboard_screenshot.sh: no chromium found; install it: apt-get install -y chromium" >&2
  exit 2
fi
if [[ "$only_browser" == 1 ]]; then
  echo "$browser"
  exit 0
fi
if [[ -z "$port" ]]; then
  port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

work=$(mktemp -d)
"$python" -m optuna_biotune.cli dashboard --study "$study" --storage "$storage" \
  --host 127.0.0.1 --port "$port" >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

base="http://127.0.0.1:${port}"
up=0
for _ in $(seq 1 240); do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "dashboard_screenshot.sh: the dashboard exited: $(tail -n 3 "$work/server.log")" >&2
    exit 1
  fi
  if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "${base}/api/meta" 2>/dev/null; then
    up=1
    break
  fi
  sleep 0.5
done
if [[ "$up" != 1 ]]; then
  echo "dashboard_screenshot.sh: the dashboard did not answer ${base}/api/meta in 2 minutes" >&2
  exit 1
fi

study_id=$("$python" - "$base" "$study" <<'EOF'
import json, sys, urllib.request
data = json.load(urllib.request.urlopen(sys.argv[1] + "/api/studies", timeout=10))
ids = [s["study_id"] for s in data["study_summaries"] if s["study_name"] == sys.argv[2]]
if not ids:
    sys.exit(f"dashboard_screenshot.sh: no study {sys.argv[2]!r} in the storage")
print(ids[0])
EOF
)

# One headless Chromium run on one dashboard page: a fresh profile each time, no GPU, no
# sandbox (CI runs as root), and nothing that phones home. Extra arguments say what to write.
render() {
  local page="$1"
  shift
  local profile
  profile=$(mktemp -d "$work/profile.XXXXXX")
  timeout 120 "$browser" \
    --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars \
    --window-size="$size" --virtual-time-budget=$((wait_s * 1000)) \
    "$@" "${base}/dashboard/studies/${study_id}${page}" 2>>"$work/chromium.log"
}

url="${base}/dashboard/studies/${study_id}"
mkdir -p "$(dirname "$out")"
rm -f "$out"
if [[ -n "$dom" ]]; then
  mkdir -p "$dom"
  render "" --screenshot="$(realpath -m "$out")" --dump-dom >"$dom/study.html" || true
  render "/trials" --dump-dom >"$dom/trials.html" || true
  render "/note" --dump-dom >"$dom/note.html" || true
  for page in study trials note; do
    if [[ ! -s "$dom/$page.html" ]]; then
      echo "dashboard_screenshot.sh: chromium rendered no DOM of the $page page of $url:" \
        "$(tail -n 3 "$work/chromium.log")" >&2
      exit 1
    fi
  done
else
  render "" --screenshot="$(realpath -m "$out")" >/dev/null || true
fi
if [[ ! -s "$out" ]]; then
  echo "dashboard_screenshot.sh: chromium wrote no screenshot of $url:" \
    "$(tail -n 3 "$work/chromium.log")" >&2
  exit 1
fi
echo "$out ($url)"
