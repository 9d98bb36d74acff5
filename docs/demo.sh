#!/usr/bin/env bash
# The whole flow in a throwaway directory: sandbox upstream, relay, operator commands, a user's
# calls, routing by model across OpenAI, Azure OpenAI and Gemini (Veo) accounts, a rate limit and
# how the relay rides it out. Run it with `make demo`.
set -euo pipefail

SANDBOX_PORT=${DEMO_SANDBOX_PORT:-8090}
RELAY_PORT=${DEMO_RELAY_PORT:-8080}
SANDBOX=http://127.0.0.1:$SANDBOX_PORT
RELAY=http://127.0.0.1:$RELAY_PORT

# Another server on either port (a `make run` still open, say) would answer in our place: the
# demo would then drive the wrong relay and inject faults into the wrong sandbox. Stop first.
port_taken() { python3 -c 'import socket, sys; s = socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"; }
for port_var in DEMO_SANDBOX_PORT:$SANDBOX_PORT DEMO_RELAY_PORT:$RELAY_PORT; do
    if port_taken "${port_var#*:}"; then
        echo "port ${port_var#*:} on 127.0.0.1 is already in use: stop what listens there, or pick another with ${port_var%%:*}=PORT (e.g. make demo ${port_var%%:*}=18080)" >&2
        exit 1
    fi
done

work=$(mktemp -d)
export RELAY_DATABASE=$work/relay.db
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
# One argument as it would be typed: bare when nothing in it is special to the shell, in double
# quotes with the key as $KEY (it is a secret) when it holds the key, else in single quotes.
quote() {
    local arg=$1
    if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        printf '%s' "$arg"
    elif [[ -n ${KEY:-} && $arg == *"$KEY"* ]]; then
        arg=${arg//\\/\\\\}; arg=${arg//\"/\\\"}; arg=${arg//\$/\\\$}; arg=${arg//\`/\\\`}
        printf '"%s"' "${arg//"$KEY"/\$KEY}"
    else
        printf "'%s'" "${arg//\'/\'\\\'\'}"
    fi
}
quote_all() { local out="" arg; for arg in "$@"; do out+="${out:+ }$(quote "$arg")"; done; printf '%s' "$out"; }
# Print the command so that it can be pasted into a shell, then run it.
show() { printf '$ %s\n' "$(quote_all "$@")"; "$@"; }
# The same for a command that reads INPUT on its standard input.
show_input() { local input=$1; shift; printf '$ echo %s | %s\n' "$(quote "$input")" "$(quote_all "$@")"; echo "$input" | "$@"; }
# Wait until the server we started (pid $2) answers at $1; if it died (its port was taken in the
# meantime), whatever answers there is not ours.
wait_for() {
    for _ in $(seq 100); do
        kill -0 "$2" 2>/dev/null || { echo "the server for $1 exited: is its port taken?" >&2; exit 1; }
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "nothing answers at $1" >&2; exit 1
}

step "Start the sandbox upstream (a local emulator of the Videos API) and the relay"
relayctl sandbox --port "$SANDBOX_PORT" --complete-after 2 & sandbox_pid=$!; pids+=($sandbox_pid)
RELAY_ACCESS_LOG=0 uvicorn relay.app:app --host 127.0.0.1 --port "$RELAY_PORT" --no-access-log --log-level warning & relay_pid=$!; pids+=($relay_pid)
wait_for "$SANDBOX/_sandbox/faults" "$sandbox_pid"
wait_for "$RELAY/healthz" "$relay_pid"

step "Operator: a mixed pool (two OpenAI accounts, an Azure OpenAI resource, a Gemini key for Veo) and a relay key"
show_input sandbox-token-a relayctl accounts add acct-a --type openai-responses --token-stdin --base-api "$SANDBOX/v1" --models sora-2,sora-2-pro
show_input sandbox-token-b relayctl accounts add acct-b --type openai-responses --token-stdin --base-api "$SANDBOX/v1" --models sora-2,sora-2-pro
show_input sandbox-azure-key relayctl accounts add azure --type azure-openai --token-stdin --base-api "$SANDBOX/openai/v1" --models sora-2-pro
show_input AIza-sandbox-key relayctl accounts add veo --type gemini --token-stdin --base-api "$SANDBOX/v1beta"
show relayctl accounts list
KEY=$(relayctl keys issue demo-user --permission openai --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
echo "issued a key for demo-user (shown once): ${KEY:0:22}..."

step "User: create a video (the relay picks an account and forwards the request unchanged)"
show curl -sS "$RELAY/openai/v1/videos" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    -d '{"prompt": "A drone shot of surfers riding sunrise waves", "model": "sora-2", "seconds": "8", "size": "1280x720"}'
echo

step "User: a session id keeps related work on one account"
for i in 1 2 3; do
    curl -sS -o /dev/null "$RELAY/openai/v1/videos" -H "Authorization: Bearer $KEY" -H "Session-Id: storyboard-42" \
        -H "Content-Type: application/json" -d '{"prompt": "scene '"$i"'"}'
done
curl -sS "$SANDBOX/_sandbox/requests" | python3 -c '
import json, sys
print("accounts used, in order:", [r["token"] for r in json.load(sys.stdin)])'

step "User: the model picks the account: Veo to Gemini, sora-2-pro to any of three (here Azure), an unknown model is a 400"
show curl -sS "$RELAY/openai/v1/videos" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    -d '{"prompt": "A lighthouse in a storm", "model": "veo-3.1-fast-generate-preview", "seconds": "8", "size": "1280x720"}'
echo
curl -sS -o /dev/null -w "a sora-2-pro video -> HTTP %{http_code}\n" "$RELAY/openai/v1/videos" -H "Authorization: Bearer $KEY" \
    -H "Content-Type: application/json" -d '{"prompt": "A slow pan over a city", "model": "sora-2-pro", "seconds": "4", "size": "1280x720"}'
show curl -sS "$RELAY/openai/v1/videos" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    -d '{"prompt": "A cat", "model": "sora-9"}'
echo
show relayctl usage --by account --since 1d

step "The upstream rate-limits acct-a once: the relay cools acct-a down and fails over to acct-b"
show curl -sS -X POST "$SANDBOX/_sandbox/faults" -d '{"preset": "rate_limited", "resets_in_seconds": 30, "token": "sandbox-token-a", "times": 1}'
echo
for i in 1 2; do
    curl -sS -o /dev/null -w "create -> HTTP %{http_code}\n" "$RELAY/openai/v1/videos" -H "Authorization: Bearer $KEY" \
        -H "Content-Type: application/json" -d '{"prompt": "after the limit"}'
done
show relayctl cooldowns

step "Operator: a daily budget for demo-user; a create that would break it never reaches an upstream"
show relayctl keys limits demo-user --usd-per-day 6 --max-concurrent-creates 4
# Running relays follow a relayctl change within a second (RELAY_REFRESH_INTERVAL_SECONDS):
# the next request must not race it.
sleep 1
show curl -sS "$RELAY/openai/v1/videos" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    -d '{"prompt": "An epic", "model": "sora-2-pro", "seconds": "12", "size": "1792x1024"}'
echo
show relayctl usage --by key --since 1d

step "Metrics for Prometheus"
curl -sS "$RELAY/metrics" | grep -E '^relay_(upstream_requests_total|account_state|quota_hits_total|key_budget)' | grep -v ' 0.0$'

step "Done: everything ran on 127.0.0.1 with a throwaway database"
