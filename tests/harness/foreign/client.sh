#!/usr/bin/env bash
# An image client written the way an ops team writes one: bash, curl and jq.
#
# It knows nothing of the conformance harness but where to go: IMAGEGEN_BASE_URL,
# IMAGEGEN_API_KEY, IMAGEGEN_REQUEST (the body to send) and IMAGEGEN_OUTPUT_DIR. Its waits
# are real seconds (1.5 s between polls, Retry-After in seconds), its deadline is minutes,
# and nothing in it divides by a time scale.
#
#   bash client.sh cloudsway|fal|yunyx [--fault FAULT]
#
# --fault switches on one deliberate mistake (the same names as client.py) for the harness to find.
set -uo pipefail

POLL_SECONDS=1.5
DEADLINE_SECONDS=300 # five minutes for a task, then give up
ATTEMPTS=5

provider=${1:?usage: client.sh cloudsway|fal|yunyx [--fault FAULT]}
fault=none
[[ ${2-} == --fault ]] && fault=${3:?--fault needs a name}
base=${IMAGEGEN_BASE_URL%/}
scheme=Bearer
[[ $provider == fal ]] && scheme=Key
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { # fail MESSAGE [STATUS]: the error as JSON on stdout, exit 1
  jq -cn --arg message "$1" --arg status "${2-}" \
    '{error: {message: $message, status: ($status | tonumber? // null)}}'
  exit 1
}

# call METHOD URL IDEMPOTENT [BODY]: the answer's body in $work/body, its status in $status.
# 429 (or a 5xx with Retry-After) waits Retry-After seconds; a transient 5xx is resent with
# backoff when IDEMPOTENT is yes (or "5xx": not processed, safe to resend); other errors fail.
# Polls go through here, so it starts no process but curl (jq costs ~40 ms a start).
call() {
  local method=$1 url=$2 idempotent=$3 body=${4-} attempt backoff=1 retry_after
  local args=(-sS -X "$method" -o "$work/body" -D "$work/headers" -w '%{http_code}'
              --connect-timeout 10 -m 120)
  [[ $fault != no-auth ]] && args+=(-H "Authorization: $scheme $IMAGEGEN_API_KEY")
  [[ -n $body ]] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
    curl "${args[@]}" "$url" >"$work/status" || echo 000 >"$work/status"
    read -r status <"$work/status"
    if ((attempt < ATTEMPTS)); then
      retry_after=
      [[ $status =~ ^(429|50[0234])$ ]] && retry_after=$(header Retry-After)
      if [[ $status == 429 || ( -n $retry_after && $status =~ ^50[0234]$ ) ]]; then
        [[ $fault != ignore-retry-after ]] && sleep "${retry_after:-1}"
        continue
      fi
      if [[ $status =~ ^(000|50[0234])$ && $idempotent != no && $fault != give-up-on-503 ]]; then
        sleep "$backoff"
        backoff=$((backoff * 2))
        continue
      fi
      if [[ $status == 4* && $fault == retry-4xx && $attempt -lt 3 ]]; then
        sleep 1
        continue
      fi
    fi
    if [[ $status == 000 || $status -ge 400 ]]; then
      fail "$method $url answered HTTP $status: $(head -c 200 "$work/body" 2>/dev/null)" "$status"
    fi
    return 0
  done
  fail "$method $url: still failing after $ATTEMPTS attempts" "$status"
}

header() { # header NAME: the last answer's header NAME
  local name value
  while IFS=': ' read -r name value; do
    [[ ${name,,} == "${1,,}" ]] && echo "${value%$'\r'}"
  done <"$work/headers"
}

field() { # field NAME: $value, a top-level string field of the last answer (no jq, no fork)
  local body
  value=
  IFS= read -r -d '' body <"$work/body"
  [[ $body =~ \"$1\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]] && value=${BASH_REMATCH[1]}
}

poll_pause() {
  case $fault in
    no-pause) ;;
    poll-10ms) sleep 0.01 ;;
    *) sleep "$POLL_SECONDS" ;;
  esac
}

images=()
save_images() { # save_images URL...: download (or decode) each into IMAGEGEN_OUTPUT_DIR
  local index=0 url path
  for url in "$@"; do
    path=$IMAGEGEN_OUTPUT_DIR/image-$index
    if [[ $url == data:* ]]; then # fal sync_mode answers the image inline
      base64 -d <<<"${url#*,}" >"$path" || fail "image $index: not base64"
    else
      call GET "$url" yes
      mv "$work/body" "$path"
    fi
    images+=("$path")
    index=$((index + 1))
  done
}

cloudsway() {
  local api=$base/v2/ai/my-endpoint/images task_id started=$SECONDS
  call POST "$api/generations" no "$IMAGEGEN_REQUEST"
  task_id=$(jq -er .taskId "$work/body") || fail "create answered no taskId"
  while true; do
    poll_pause
    call GET "$api/tasks/$task_id" yes
    field status
    if [[ $value == completed ]]; then
      local urls
      mapfile -t urls < <(jq -r '.imageUrls[]' "$work/body")
      if [[ $fault == poll-after-done ]]; then
        for _ in 1 2 3; do poll_pause; call GET "$api/tasks/$task_id" yes; done
      fi
      save_images "${urls[@]}"
      return
    fi
    if [[ $value == failed ]]; then
      [[ $fault == failed-as-success ]] && return
      fail "task $task_id failed: $(jq -r '.message // "no reason"' "$work/body")"
    fi
    ((SECONDS - started > DEADLINE_SECONDS)) && fail "task $task_id not done after $DEADLINE_SECONDS s; giving up"
  done
}

fal() {
  local status_url response_url cancel_url request_id started=$SECONDS
  call POST "$base/fal-ai/flux-1/dev" no "$IMAGEGEN_REQUEST"
  { read -r request_id; read -r status_url; read -r response_url; read -r cancel_url; } < <(
    jq -r '.request_id, .status_url, .response_url, (.cancel_url // "")' "$work/body")
  if [[ $fault == rebuild-urls ]]; then
    response_url=$base/fal-ai/flux-1/dev/requests/$request_id
    status_url=$response_url/status
  fi
  while call GET "$status_url" yes; field status; [[ $value != COMPLETED ]]; do
    if ((SECONDS - started > DEADLINE_SECONDS)); then
      (call PUT "${cancel_url:-$response_url/cancel}" yes >/dev/null) # free the runner; given up anyway
      fail "request $request_id not done after $DEADLINE_SECONDS s; cancelled"
    fi
    poll_pause
  done
  if [[ $fault == poll-after-done ]]; then
    for _ in 1 2 3; do poll_pause; call GET "$status_url" yes; done
  fi
  if [[ $fault == failed-as-success ]]; then
    (call GET "$response_url" yes >/dev/null) || return 0
  fi
  call GET "$response_url" yes
  local urls
  mapfile -t urls < <(jq -r '.images[].url' "$work/body")
  save_images "${urls[@]}"
}

yunyx() {
  # 503 "overloaded" means the request was not processed: safe to send again.
  call POST "$base/v1/images/generations" 5xx "$IMAGEGEN_REQUEST"
  local urls
  mapfile -t urls < <(jq -r '.images[].url' "$work/body")
  save_images "${urls[@]}" # the links expire in an hour: download now
}

case $provider in
  cloudsway | fal | yunyx) "$provider" ;;
  *) fail "unknown provider $provider" ;;
esac
jq -cn '{images: [$ARGS.positional[] | {path: .}]}' --args "${images[@]}"
