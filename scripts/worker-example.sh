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
#
# SIGTERM or Ctrl-C: a claim waiting for work is dropped at once (the service gives a claim
# whose worker hung up to the next one, no retry spent); a task at hand is handed back
# after the step in progress (`fail` with "retry": true: it runs again while retries are
# left). Either way the worker exits within about a second, leaving no curl behind.
# A 4xx other than 408 and 429 on a claim (a type the service does not serve, missing or
# wrong credentials) is a configuration error: the worker prints it and exits 3.
set -euo pipefail

url=${SIDETASK_URL:-http://127.0.0.1:8080}
name=${WORKER_NAME:-shell-$(hostname)-$$}
types=${WORKER_TYPES:-countdown}
wait=${WORKER_WAIT:-30}
body=$(mktemp)
code_file=$(mktemp)
trap 'rm -f "$body" "$code_file"' EXIT

stopping=
child=
on_signal() {
  stopping=1
  if [ -n "$child" ]; then kill "$child" 2>/dev/null || true; fi
}
trap on_signal TERM INT

# interruptible COMMAND...: runs it in the background and waits for it, so that a signal is
# acted on at once (bash runs a trap only between commands, never during a foreground one),
# and the command is stopped with the worker; its exit status, or 143 when it was stopped.
interruptible() {
  "$@" &
  child=$!
  [ -z "$stopping" ] || kill "$child" 2>/dev/null || true  # a signal before $! was known
  local status=0
  wait "$child" || status=$?
  if [ -n "$stopping" ]; then
    # the trap cut the wait short: the command may still be running
    kill "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
    status=143
  fi
  child=
  return "$status"
}

# report METHOD PATH JSON: prints the answer; status 1 when the task is no longer ours
# (409: the lease expired or the task moved on; 404: it was deleted), 2 on other errors.
# Not interruptible: a report takes well under a second, and is worth finishing.
report() {
  local code
  code=$(curl -sS --max-time 10 -o "$body" -w '%{http_code}' -X "$1" "$url$task_url$2" \
    -H "X-Lease: $lease" -H 'Content-Type: application/json' -d "$3") || return 2
  case $code in
    200) cat "$body" ;;
    404 | 409) echo "task $id: $(jq -r .message "$body")" >&2; return 1 ;;
    *) echo "task $id: HTTP $code" >&2; return 2 ;;
  esac
}

while [ -z "$stopping" ]; do
  # Long poll: a task and its lease (200), or nothing within $wait seconds (204).
  if ! interruptible curl -sS -o "$body" -w '%{http_code}' -X POST \
    "$url/workers/$name/claim?types=$types&wait=$wait" >"$code_file"; then
    [ -z "$stopping" ] || break
    interruptible sleep 2 || true
    continue
  fi
  code=$(cat "$code_file")
  [ "$code" = 204 ] && continue
  if [ "$code" != 200 ]; then
    echo "claim: HTTP $code: $(jq -r '.message // empty' "$body" 2>/dev/null || cat "$body")" >&2
    case $code in
      408 | 429 | 5??) interruptible sleep 2 || true; continue ;;
      *) exit 3 ;;  # retrying cannot mend it
    esac
  fi
  id=$(jq -r .id "$body")
  lease=$(jq -r .lease "$body")
  task_url=$(jq -r .task_url "$body")
  steps=$(jq -r '.input.steps // 10' "$body")
  interval=$(jq -r '.input.interval // 1' "$body")
  echo "task $id: $steps steps" >&2

  outcome=complete
  for ((step = 0; step <= steps; step++)); do
    if [ -n "$stopping" ]; then outcome=stopped; break; fi
    # The first report starts the task (running); each one extends the lease.
    if answer=$(report PUT /progress "{\"progress\": $step}"); then
      if [ "$(jq -r .cancel <<<"$answer")" = true ]; then outcome=cancelled; break; fi
    elif [ $? = 1 ]; then
      outcome=lost; break
    fi
    if [ "$step" -lt "$steps" ]; then interruptible sleep "$interval" || true; fi
  done
  case $outcome in
    complete) report POST /complete "{\"result\": {\"counted\": $steps}}" >/dev/null || true ;;
    # A requested cancel wins over whatever the worker reports: the task ends cancelled.
    cancelled) report POST /fail '{"error": "cancelled on request"}' >/dev/null || true ;;
    # Handed back: run again (by this worker or another) while retries are left.
    stopped)
      report POST /fail "{\"error\": \"worker $name stopped before the end\", \"retry\": true}" \
        >/dev/null || true ;;
    lost) ;;
  esac
  echo "task $id: $outcome" >&2
done
echo "worker $name stopped" >&2
