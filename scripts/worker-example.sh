#!/usr/bin/env bash
# A sidetask external worker in shell, with curl and jq: it claims `countdown` tasks
# (input {"steps": N, "interval": SECONDS}), counts, reporting progress after each step,
# stops when a cancel is requested, and reports the end. Any language that speaks HTTP
# does the same (README, "External workers").
#
#   SIDETASK_URL=http://127.0.0.1:8080 WORKER_NAME=shell-1 scripts/worker-example.sh
#
# The service needs the type declared: external_types = ["countdown"]. Each report must
# come within lease_duration of the previous one, or the task is given back.
set -euo pipefail

url=${SIDETASK_URL:-http://127.0.0.1:8080}
name=${WORKER_NAME:-shell-$(hostname)-$$}
types=${WORKER_TYPES:-countdown}
wait=${WORKER_WAIT:-30}
body=$(mktemp)
trap 'rm -f "$body"' EXIT

# report METHOD PATH JSON: prints the answer; status 1 when the task is no longer ours
# (409: the lease expired or the task moved on; 404: it was deleted), 2 on other errors
report() {
  local code
  code=$(curl -sS -o "$body" -w '%{http_code}' -X "$1" "$url$task_url$2" \
    -H "X-Lease: $lease" -H 'Content-Type: application/json' -d "$3") || return 2
  case $code in
    200) cat "$body" ;;
    404 | 409) echo "task $id: $(jq -r .message "$body")" >&2; return 1 ;;
    *) echo "task $id: HTTP $code" >&2; return 2 ;;
  esac
}

while true; do
  # Long poll: a task and its lease (200), or nothing within $wait seconds (204).
  code=$(curl -sS -o "$body" -w '%{http_code}' -X POST \
    "$url/workers/$name/claim?types=$types&wait=$wait") || { sleep 2; continue; }
  [ "$code" = 204 ] && continue
  [ "$code" = 200 ] || { echo "claim: HTTP $code: $(cat "$body")" >&2; sleep 2; continue; }
  id=$(jq -r .id "$body")
  lease=$(jq -r .lease "$body")
  task_url=$(jq -r .task_url "$body")
  steps=$(jq -r '.input.steps // 10' "$body")
  interval=$(jq -r '.input.interval // 1' "$body")
  echo "task $id: $steps steps" >&2

  outcome=complete
  for ((step = 0; step <= steps; step++)); do
    # The first report starts the task (running); each one extends the lease.
    if answer=$(report PUT /progress "{\"progress\": $step}"); then
      if [ "$(jq -r .cancel <<<"$answer")" = true ]; then outcome=cancelled; break; fi
    elif [ $? = 1 ]; then
      outcome=lost; break
    fi
    if [ "$step" -lt "$steps" ]; then sleep "$interval"; fi
  done
  case $outcome in
    complete) report POST /complete "{\"result\": {\"counted\": $steps}}" >/dev/null || true ;;
    # A requested cancel wins over whatever the worker reports: the task ends cancelled.
    cancelled) report POST /fail '{"error": "cancelled on request"}' >/dev/null || true ;;
    lost) ;;
  esac
  echo "task $id: $outcome" >&2
done
