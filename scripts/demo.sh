#!/usr/bin/env bash
# make demo: start the Exchange simulator (cmd/exsim) with a generated
# organization, write an easconnector configuration for it into demo-state/,
# run `easconnector check` against it, and stop the simulator whatever
# happens.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin}
STATE=${STATE:-demo-state}
DEVICES=${DEVICES:-5000}
LISTENERS=${LISTENERS:-2}
PROFILE=${PROFILE:-lab}
START_TIMEOUT=${START_TIMEOUT:-120}

for b in exsim easconnector; do
	[[ -x "$BIN/$b" ]] || { echo "demo: $BIN/$b missing; run make build" >&2; exit 1; }
done

rm -rf "$STATE"
mkdir -p "$STATE"
log="$STATE/exsim.log"
pid=""
stop() {
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "demo: starting exsim ($DEVICES devices, $LISTENERS Client Access servers, profile $PROFILE)"
"$BIN/exsim" -listeners "$LISTENERS" -devices "$DEVICES" -profile "$PROFILE" -port 0 \
	-control 127.0.0.1:0 -quiet >"$log" 2>&1 &
pid=$!

# Wait for the first listener's endpoint line, then for its port to accept.
port=""
for ((i = 0; i < START_TIMEOUT * 10; i++)); do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "demo: exsim exited early:" >&2
		cat "$log" >&2
		exit 1
	fi
	if [[ -z "$port" ]]; then
		port=$(sed -n 's|.*WS-Management http://127\.0\.0\.1:\([0-9]*\)/wsman.*|\1|p' "$log" | head -n 1)
	fi
	if [[ -n "$port" ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		break
	fi
	sleep 0.1
done
if [[ -z "$port" ]] || ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
	echo "demo: exsim did not open its port within ${START_TIMEOUT}s:" >&2
	cat "$log" >&2
	exit 1
fi
cat "$log"

user=$(sed -n 's|^exsim: credentials \(.*\) / \(.*\) (Basic)$|\1|p' "$log")
(umask 077 && sed -n 's|^exsim: credentials \(.*\) / \(.*\) (Basic)$|\2|p' "$log" >"$STATE/exchange.password")

cat >"$STATE/easconnector.toml" <<TOML
# Written by scripts/demo.sh for the simulator; see easconnector.example.toml.
[exchange]
servers = ["127.0.0.1"]
port = $port
https = false
auth = "basic"
user = "$user"
password_file = "exchange.password"
cas_failover = true
enable_parallel_command_support = true
runspaces = 4

[mdm]
source = "file"
file = "mdm.json"

[sync]
state_dir = "."
TOML

echo
echo "demo: easconnector check --config $STATE/easconnector.toml"
"$BIN/easconnector" check --config "$STATE/easconnector.toml"
