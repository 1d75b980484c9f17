#!/usr/bin/env bash
# A Cloudsway client in bash + curl. `--no-pause` polls with no pause (the live rules must catch
# it); without it, it waits one provider second between polls (IMAGEGEN_TIME_SCALE faster).
set -euo pipefail
base="$IMAGEGEN_BASE_URL/v2/ai/bash/images"
auth="Authorization: Bearer $IMAGEGEN_API_KEY"
pause=$(awk -v s="${IMAGEGEN_TIME_SCALE:-1}" 'BEGIN { printf "%.3f", 1 / s }')
[[ "${1:-}" == "--no-pause" ]] && pause=0

created=$(curl -sS -X POST "$base/generations" -H "$auth" -H 'Content-Type: application/json' \
  --data-raw '{"prompts": "a fox", "aspect_ratio": "1:1"}')
task_id=$(sed -n 's/.*"taskId" *: *"\([^"]*\)".*/\1/p' <<<"$created")
[[ -n "$task_id" ]] || { echo "no taskId in $created" >&2; exit 1; }

for _ in $(seq 1 200); do
  [[ "$pause" == "0" ]] || sleep "$pause"
  task=$(curl -sS "$base/tasks/$task_id" -H "$auth")
  status=$(sed -n 's/.*"status" *: *"\([^"]*\)".*/\1/p' <<<"$task")
  case "$status" in
    completed)
      # Download every image link the answer carries (they need no key).
      grep -o 'http[^"]*\.png' <<<"$task" | while read -r url; do curl -sS -o /dev/null "$url"; done
      echo '{"images": []}'; exit 0 ;;
    failed) echo '{"error": {"message": "task failed"}}'; exit 1 ;;
  esac
done
exit 1
