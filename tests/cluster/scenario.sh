# shellcheck shell=bash
# shellcheck disable=SC2317,SC2329,SC2016
# (SC2317/SC2329: helpers are also invoked indirectly, through `eventually … "$@"`;
#  SC2016: `$x` inside single quotes are jq variables passed to `holds`.)
# (No shebang: tests/cluster.nix wraps this text with pkgs.writeShellApplication, which
# adds its own; run-local runs it with `bash scenario.sh STEP`.)
# The cluster scenario (three to five leaves): ONE source, run by two runners.
#   - the NixOS VM test (lib.mkLeafClusterTest, lib/leaf-cluster-test.nix) installs it as
#     `cluster-scenario`, with the leaves' URLs and credentials, and types
#     `cluster-scenario step_lifecycle` on a leaf;
#   - tests/cluster/run-local runs `bash tests/cluster/scenario.sh step_lifecycle` against
#     three nats-server processes on loopback.
# Only the real `nats` CLI (natscli), `jq` and `curl` (monitoring endpoint) are used.
#
# Parameters (environment):
#   LEAF_COUNT                     number of leaves N, 3 to 5 (default 3); every leaf holds a replica
#   LEAF<n>_URL                    client URL of leaf n = 1..N     (default nats://leaf<n>:4222)
#   LEAF<n>_MONITOR                monitoring URL of leaf n        (default http://leaf<n>:8222)
#   LEAF<n>_NAME                   server_name of leaf n           (default leaf<n>)
#   STREAM_NAME                    (default POLICY_EVENTS)
#   STREAM_REPLICAS                the stream's replicas (default LEAF_COUNT)
#   SERVICE_USER                   the local unit's user, for step_unit_hardening (default policy-service)
#   SCENARIO_WAIT                  seconds a step waits for the cluster to converge (default 60)
#   SYS_NKEY                       the system user's NKey seed file, for step_server_info
# Credentials: `nats` reads its own variables (NATS_USER, NATS_CREDS, NATS_NKEY, NATS_CA,
# NATS_CERT, NATS_KEY, NATS_CONTEXT); a password is read from the file named by
# SCENARIO_NATS_PASSWORD_FILE into NATS_PASSWORD, so it is in no argument list and no
# script. curl (the monitoring endpoints) honours CURL_CA_BUNDLE for https.
# Each step prints `# …` progress lines, exits 0 when every assertion holds and
# non-zero (with `FAILED: <why>` on stderr) on the first one that does not.
set -euo pipefail

LEAF_COUNT="${LEAF_COUNT:-3}"
if ! [[ "$LEAF_COUNT" =~ ^[3-5]$ ]]; then
  printf 'FAILED: LEAF_COUNT=%s: the scenario needs 3 to 5 leaves (a crash must leave a quorum; JetStream has at most 5 replicas)\n' "$LEAF_COUNT" >&2
  exit 2
fi
LEAVES=()
for ((n = 1; n <= LEAF_COUNT; n++)); do
  LEAVES+=("$n")
  url="LEAF${n}_URL" monitor="LEAF${n}_MONITOR" name="LEAF${n}_NAME"
  printf -v "$url" '%s' "${!url:-nats://leaf$n:4222}"
  printf -v "$monitor" '%s' "${!monitor:-http://leaf$n:8222}"
  printf -v "$name" '%s' "${!name:-leaf$n}"
done
unset url monitor name
STREAM_NAME="${STREAM_NAME:-POLICY_EVENTS}"
STREAM_REPLICAS="${STREAM_REPLICAS:-$LEAF_COUNT}"
if [[ "$STREAM_REPLICAS" != "$LEAF_COUNT" ]]; then
  printf 'FAILED: STREAM_REPLICAS=%s but LEAF_COUNT=%s: the scenario checks every leaf'"'"'s own replica, so each leaf must hold one\n' "$STREAM_REPLICAS" "$LEAF_COUNT" >&2
  exit 2
fi
SERVICE_USER="${SERVICE_USER:-policy-service}"
SCENARIO_WAIT="${SCENARIO_WAIT:-60}"
if [[ -n "${SCENARIO_NATS_PASSWORD_FILE:-}" ]]; then
  [[ -r "$SCENARIO_NATS_PASSWORD_FILE" ]] || { printf 'FAILED: SCENARIO_NATS_PASSWORD_FILE=%s is not readable\n' "$SCENARIO_NATS_PASSWORD_FILE" >&2; exit 2; }
  NATS_PASSWORD=$(<"$SCENARIO_NATS_PASSWORD_FILE")
  export NATS_PASSWORD
fi

# Fixed identities: the seed's policy, plus ids of our own for the rest of the story.
SEED_POLICY_ID="550e8400-e29b-41d4-a716-446655440000"
ENTITY_ID="6f1c2a9e-3b7d-4c55-9e21-0a8b7c6d5e4f"
EXEMPTION_ID="0193a6f0-7c1e-7b2a-8d3e-4f5a6b7c8d90"
# The seed's grant_exemption shape, but expiring far in the future: the seed's own
# 2026-02-08 may already be past, and the expiry sweeper would then race the revoke.
EXEMPTION_EXPIRES_AT="2036-02-08T10:00:00Z"
CRASH_POLICY_ID="0193a6f0-7c1e-7b2a-8d3e-4f5a6b7c8d91"
# Commands sent while leaf1 is down carry a command_id, so retrying one after a
# stream-leader election cannot write it twice (the service deduplicates on it).
CRASH_CREATE_COMMAND_ID="0193a6f0-7c1e-7b2a-8d3e-4f5a6b7c8da1"
CRASH_APPROVE_COMMAND_ID="0193a6f0-7c1e-7b2a-8d3e-4f5a6b7c8da2"
AFTER_RESTART_COMMAND_ID="0193a6f0-7c1e-7b2a-8d3e-4f5a6b7c8da3"

# Stopped by a signal: exit through the EXIT trap, which stops what a step started.
trap 'exit 143' TERM
trap 'exit 130' INT

note() { printf '# %s\n' "$*"; }

# holds JSON FILTER [JQ ARGS…]: FILTER is true of the single JSON value JSON.
# Empty or invalid input is false (jq 1.6's `-e` exits 0 on empty input, which
# would turn a missing reply into a pass).
holds() {
  local json="$1" filter="$2"
  shift 2
  [[ "$json" =~ [^[:space:]] ]] || return 1
  jq -n -e "$@" --argjson value "$json" "\$value | ($filter)" >/dev/null 2>&1
}
fail() {
  printf 'FAILED: %s\n' "$*" >&2
  exit 1
}

leaf_url() { # leaf_url N
  ((${1:-0} >= 1 && ${1:-0} <= LEAF_COUNT)) || fail "no leaf $1"
  local v="LEAF$1_URL"
  printf '%s\n' "${!v}"
}
leaf_monitor() {
  ((${1:-0} >= 1 && ${1:-0} <= LEAF_COUNT)) || fail "no leaf $1"
  local v="LEAF$1_MONITOR"
  printf '%s\n' "${!v}"
}

# nats_on N ARGS…: natscli against leaf N, with a bounded wait.
nats_on() {
  local leaf="$1"
  shift
  nats --server "$(leaf_url "$leaf")" --timeout 5s "$@"
}

# eventually SECONDS DESCRIPTION COMMAND…: retry COMMAND once a second until it
# succeeds or SECONDS pass; its last output is shown on failure.
eventually() {
  local seconds="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + seconds)) out
  while true; do
    if out=$("$@" 2>&1); then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      printf '%s\n' "$out" | tail -n 20 >&2
      fail "$what (still false after ${seconds}s)"
    fi
    sleep 1
  done
}

# command_on N NAME JSON: send a command through leaf N; prints the reply body.
# `nats req` exits 0 even on "no responders", so the body decides.
command_on() {
  local leaf="$1" name="$2" payload="$3"
  nats_on "$leaf" req --raw "policy.commands.$name" "$payload" 2>/dev/null
}

# expect_ok N NAME JSON [VERSION]: the command succeeds (and reaches VERSION).
expect_ok() {
  local leaf="$1" name="$2" payload="$3" version="${4:-}" reply
  reply=$(command_on "$leaf" "$name" "$payload") || true
  if ! holds "$reply" '.ok == true'; then
    fail "$name via leaf$leaf: expected ok, got: ${reply:-<no reply>}"
  fi
  if [[ -n "$version" ]] && ! holds "$reply" '.version == $v' --argjson v "$version"; then
    fail "$name via leaf$leaf: expected version $version, got: $reply"
  fi
  note "$name via leaf$leaf: $(jq -c '{aggregate_id, version, events: [.events[].subject]}' <<<"$reply")"
}

# retry_ok SECONDS N NAME JSON: like expect_ok, but retried while the cluster
# re-elects leaders (503 unavailable / timeouts); the payload carries a command_id.
retry_ok() {
  local seconds="$1" leaf="$2" name="$3" payload="$4"
  local deadline=$((SECONDS + seconds)) reply tries=0
  while true; do
    tries=$((tries + 1))
    reply=$(command_on "$leaf" "$name" "$payload") || true
    if holds "$reply" '.ok == true'; then
      note "$name via leaf$leaf succeeded after $tries attempt(s): $(jq -c '{aggregate_id, version}' <<<"$reply")"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      fail "$name via leaf$leaf: no success within ${seconds}s ($tries attempts); last reply: ${reply:-<no reply>}"
    fi
    note "$name via leaf$leaf, attempt $tries: ${reply:-<no reply within 5s>}; retrying with the same command_id"
    sleep 1
  done
}

# expect_error N NAME JSON CODE: the command is refused with CODE.
expect_error() {
  local leaf="$1" name="$2" payload="$3" code="$4" reply
  reply=$(command_on "$leaf" "$name" "$payload") || true
  if ! holds "$reply" '.ok == false and .error.code == $c' --arg c "$code"; then
    fail "$name via leaf$leaf: expected error $code, got: ${reply:-<no reply>}"
  fi
  note "$name via leaf$leaf refused as expected: $(jq -c .error <<<"$reply")"
}

stream_info_on() { # stream_info_on N → stream info JSON, through leaf N
  nats_on "$1" stream info "$STREAM_NAME" --json
}

# The stream's last sequence as held by the server behind monitor N itself
# (its own replica, not the leader's answer), from /jsz.
local_last_seq() {
  local jsz
  jsz=$(curl -fsS --max-time 5 "$(leaf_monitor "$1")/jsz?streams=true") || return 1
  holds "$jsz" '[.account_details[]?.stream_detail[]? | select(.name == $s)] | length == 1' --arg s "$STREAM_NAME" ||
    { echo "leaf$1 holds no replica of $STREAM_NAME" >&2; return 1; }
  jq -r --arg s "$STREAM_NAME" '.account_details[].stream_detail[]? | select(.name == $s) | .state.last_seq' <<<"$jsz"
}

# Each server's own replica of the stream is at the same, non-zero last sequence.
same_last_seq_everywhere() {
  local n seq first="" same=1 report=()
  for n in "${LEAVES[@]}"; do
    seq=$(local_last_seq "$n") || return 1
    report+=("leaf$n=$seq")
    first=${first:-$seq}
    [[ "$seq" == "$first" ]] || same=0
  done
  echo "last_seq ${report[*]}"
  ((same)) && [[ "$first" -gt 0 ]]
}

# Stored event check: the last message on SUBJECT is an event of TYPE for ID.
expect_stored() {
  local subject="$1" id="$2" type="$3" msg
  msg=$(nats_on "${4:-1}" stream get "$STREAM_NAME" --last-for "$subject" --json) ||
    fail "no message stored on $subject"
  if ! holds "$msg" '(.data | @base64d | fromjson) | .aggregate_id == $id and .event_type == $t' --arg id "$id" --arg t "$type"; then
    fail "message on $subject is not a $type event of $id: $msg"
  fi
  note "stored: $subject (seq $(jq .seq <<<"$msg"))"
}

# Predicates polled by `eventually` (functions, so pipefail and `holds` apply).
meta_leader_known() { # N: leaf N's server knows the meta leader of a LEAF_COUNT-server meta group
  local jsz
  jsz=$(curl -fsS --max-time 5 "$(leaf_monitor "$1")/jsz") || return 1
  echo "leaf$1 /jsz meta_cluster: $(jq -c .meta_cluster <<<"$jsz")"
  holds "$jsz" '(.meta_cluster.leader // "") != "" and .meta_cluster.cluster_size == $n' --argjson n "$LEAF_COUNT"
}
replicas_current() { # N: through leaf N, the stream has a leader and STREAM_REPLICAS - 1 current, online followers
  local info
  info=$(stream_info_on "$1") || return 1
  echo "cluster: $(jq -c .cluster <<<"$info")"
  holds "$info" '(.cluster.leader // "") != "" and ([.cluster.replicas[]? | select(.current and (.offline | not))] | length) == $f' --argjson f "$((STREAM_REPLICAS - 1))"
}
all_instances_listed() { # N: `nats micro ls` through leaf N lists LEAF_COUNT policy-service instances
  local list
  list=$(nats_on "$1" micro ls --json) || return 1
  echo "instances via leaf$1: $(jq -c '[.[] | {name, id}]' <<<"$list")"
  holds "$list" '[.[] | select(.name == "policy-service") | .id] | unique | length == $n' --argjson n "$LEAF_COUNT"
}

# --- steps -------------------------------------------------------------------

# 1. Every server answers, all of them see the same JetStream meta leader and a
#    meta group of LEAF_COUNT.
step_cluster_up() {
  local n leader leaders=()
  for n in "${LEAVES[@]}"; do
    eventually "$SCENARIO_WAIT" "leaf$n healthz ok (JetStream current)" \
      curl -fsS --max-time 5 "$(leaf_monitor "$n")/healthz"
    eventually "$SCENARIO_WAIT" "leaf$n knows a JetStream meta leader of a $LEAF_COUNT-node meta group" meta_leader_known "$n"
    leader=$(curl -fsS --max-time 5 "$(leaf_monitor "$n")/jsz" | jq -r .meta_cluster.leader)
    leaders+=("$leader")
  done
  for leader in "${leaders[@]}"; do
    [[ "$leader" == "${leaders[0]}" ]] || fail "leaves disagree on the meta leader: ${leaders[*]}"
  done
  note "JetStream meta leader: ${leaders[0]} (agreed by all $LEAF_COUNT)"
}

# 2. The service created POLICY_EVENTS: events.policy.>, file storage, ~1 year, R<STREAM_REPLICAS>.
step_stream_info() {
  eventually "$SCENARIO_WAIT" "stream $STREAM_NAME exists" stream_info_on 2
  local info
  info=$(stream_info_on 2)
  holds "$info" '.config.subjects == ["events.policy.>"]' ||
    fail "subjects are $(jq -c .config.subjects <<<"$info"), want [\"events.policy.>\"]"
  holds "$info" '.config.storage == "file"' ||
    fail "storage is $(jq -c .config.storage <<<"$info"), want file"
  # max_age is in nanoseconds; "about one year" = 360..366 days
  holds "$info" '.config.max_age >= 360*86400*1e9 and .config.max_age <= 366*86400*1e9' ||
    fail "max_age is $(jq .config.max_age <<<"$info") ns, want about one year"
  holds "$info" '.config.num_replicas == $r' --argjson r "$STREAM_REPLICAS" ||
    fail "num_replicas is $(jq .config.num_replicas <<<"$info"), want $STREAM_REPLICAS"
  eventually "$SCENARIO_WAIT" "stream has a leader and $((STREAM_REPLICAS - 1)) current replicas" replicas_current 2
  note "stream $STREAM_NAME: $(stream_info_on 2 | jq -c '{subjects: .config.subjects, storage: .config.storage, max_age_days: (.config.max_age / 86400e9), replicas: .config.num_replicas, leader: .cluster.leader, duplicate_window_s: (.config.duplicate_window / 1e9)}')"
}

# 3. The seed's command, typed as the seed prints it, through leaf1; a subscriber
#    on events.policy.> (started first, as the seed's "other terminal") sees the event.
step_seed_create() {
  local dir sub_pid reply
  # The units are Type=exec: "active" once the process runs, before its instance has provisioned the stream and
  # buckets; until then a command is answered `unavailable` with a retry hint (docs/operations.md, "Start-up: what
  # clients see"), which happened here when one instance's provisioning took 1.5 s longer than its peers'. An
  # instance is listed by `nats micro ls` once it serves commands: wait for all of them, as the guide (docs/leaf-node-
  # deployment.md, "Test NATS Communication") says.
  eventually "$SCENARIO_WAIT" "nats micro ls via leaf1 lists $LEAF_COUNT policy-service instances (each serves commands)" \
    all_instances_listed 1
  dir=$(mktemp -d)
  # The subscriber is on leaf1 too: the request is answered by leaf1's service
  # instance (NATS prefers local queue subscribers), so its publish meets a
  # subscription the server already holds, with no route-propagation race.
  NATS_URL="$LEAF1_URL" nats sub "events.policy.>" --count 1 >"$dir/sub.out" 2>"$dir/sub.err" &
  sub_pid=$!
  # shellcheck disable=SC2064 # expand now: the values are local to this step
  trap "kill $sub_pid 2>/dev/null || true; rm -rf '$dir'" EXIT
  eventually 10 "subscriber on events.policy.> is ready" grep -q 'Subscribing on' "$dir/sub.err"

  export NATS_URL="$LEAF1_URL"
  reply=$(nats req policy.commands.create '{
  "policy_id": "550e8400-e29b-41d4-a716-446655440000",
  "name": "Data Retention Policy",
  "description": "All customer data must be retained for 7 years",
  "policy_type": "Retention",
  "enforcement": "Mandatory",
  "scope": "Organization"
}' 2>"$dir/req.err") || fail "nats req failed: $(cat "$dir/req.err")"
  note "reply: $reply"
  holds "$reply" '.ok == true and .aggregate_id == $id and .version == 1' --arg id "$SEED_POLICY_ID" ||
    fail "the seed's create did not succeed: ${reply:-<no reply>} $(cat "$dir/req.err")"
  holds "$reply" 'any(.events[]; .subject == $s and .seq > 0)' --arg s "events.policy.$SEED_POLICY_ID.created" ||
    fail "reply does not name the stored event events.policy.$SEED_POLICY_ID.created: $reply"

  expect_stored "events.policy.$SEED_POLICY_ID.created" "$SEED_POLICY_ID" created 1

  eventually 10 "the subscriber received events.policy.$SEED_POLICY_ID.created" \
    grep -qF "Received on \"events.policy.$SEED_POLICY_ID.created\"" "$dir/sub.out"
  grep -F '"event_type":"created"' "$dir/sub.out" >/dev/null ||
    fail "the subscriber's message is not the created event: $(cat "$dir/sub.out")"
  note "subscriber on events.policy.> received events.policy.$SEED_POLICY_ID.created"
}

# 4. One instance of the micro service `policy-service` per leaf, seen from every leaf.
step_discovery() {
  local n
  for n in "${LEAVES[@]}"; do
    eventually "$SCENARIO_WAIT" "nats micro ls via leaf$n lists $LEAF_COUNT policy-service instances" \
      all_instances_listed "$n"
  done
  local info
  info=$(nats_on 2 micro ls --json)
  holds "$info" '[.[] | select(.name == "policy-service") | .endpoints[] | select(.subject == "policy.commands.create") | .queue_group] | length == $n and all(. == "q")' --argjson n "$LEAF_COUNT" ||
    fail "not every instance serves policy.commands.create in queue group q: $(jq -c '[.[] | {name, id, endpoints: [.endpoints[]? | .subject]}]' <<<"$info")"
  local pings
  pings=$(nats_on 3 req --raw --replies 0 --reply-timeout 1s '$SRV.PING.policy-service' '' 2>/dev/null || true)
  holds "$(jq -s -c . <<<"$pings" 2>/dev/null)" '[.[] | select(.type == "io.nats.micro.v1.ping_response" and .name == "policy-service") | .id] | unique | length == $n' --argjson n "$LEAF_COUNT" ||
    fail "\$SRV.PING.policy-service did not get $LEAF_COUNT distinct replies: $pings"
  note "discovery: $(jq -c '[.[] | select(.name == "policy-service") | {id, version}]' <<<"$info")"
}

# 4b. The guide's troubleshooting commands `nats server ping` / `nats server info`, with the
# system account of docs/leaf-node-deployment.md ("System account"): every server answers, and
# each reports JetStream enabled (natscli prints a JetStream section only then).
step_server_info() {
  [[ -r "${SYS_NKEY:-}" ]] || fail "SYS_NKEY (the system user's NKey seed file) is not set or not readable: '${SYS_NKEY:-}'"
  local pings n info names=()
  pings=$(nats_on 2 --nkey "$SYS_NKEY" server ping "$LEAF_COUNT" 2>&1) || fail "nats server ping failed: $pings"
  [[ $(grep -c 'rtt=' <<<"$pings") -eq "$LEAF_COUNT" ]] || fail "nats server ping: expected $LEAF_COUNT servers, got: $pings"
  for n in "${LEAVES[@]}"; do
    local name_var="LEAF${n}_NAME"
    info=$(nats_on "$n" --nkey "$SYS_NKEY" server info "${!name_var}" 2>&1) || fail "nats server info ${!name_var} failed: $info"
    if ! grep -q '^JetStream:' <<<"$info" || ! grep -q 'Storage Directory:' <<<"$info"; then
      fail "nats server info ${!name_var}: no JetStream section (JetStream not enabled?): $info"
    fi
    names+=("${!name_var}")
  done
  note "nats server ping: $LEAF_COUNT servers; nats server info: JetStream enabled on ${names[*]}"
}

# 5. Full lifecycle, each command through a different leaf than the one before.
step_lifecycle() {
  expect_ok 2 approve '{"policy_id":"'"$SEED_POLICY_ID"'","approved_by":"compliance-officer","approval_date":"2025-11-08T10:00:00Z"}' 2
  expect_ok 3 activate '{"policy_id":"'"$SEED_POLICY_ID"'","activated_by":"compliance-officer"}' 3
  expect_error 1 approve '{"policy_id":"'"$SEED_POLICY_ID"'","approved_by":"compliance-officer","approval_date":"2025-11-08T10:00:00Z"}' invalid_transition
  expect_ok 1 grant_exemption '{"exemption_id":"'"$EXEMPTION_ID"'","policy_id":"'"$SEED_POLICY_ID"'","entity_id":"'"$ENTITY_ID"'","reason":"Legacy system migration","granted_by":"data-officer","expires_at":"'"$EXEMPTION_EXPIRES_AT"'"}' 1
  expect_ok 2 revoke_exemption '{"exemption_id":"'"$EXEMPTION_ID"'","revoked_by":"data-officer","reason":"Migration finished"}' 2
  expect_error 3 revoke_exemption '{"exemption_id":"'"$EXEMPTION_ID"'","revoked_by":"data-officer","reason":"Twice"}' invalid_transition
  expect_stored "events.policy.$SEED_POLICY_ID.approved" "$SEED_POLICY_ID" approved 3
  expect_stored "events.policy.$SEED_POLICY_ID.activated" "$SEED_POLICY_ID" activated 1
  expect_stored "events.policy.$EXEMPTION_ID.exemption_granted" "$EXEMPTION_ID" exemption_granted 2
  expect_stored "events.policy.$EXEMPTION_ID.exemption_revoked" "$EXEMPTION_ID" exemption_revoked 3
}

# 6. Before the crash: move the stream's leader to leaf1, so that crashing leaf1 costs
#    a leader election and the commands in step_after_crash have to ride it out.
stream_leader_is() { # N NAME: through leaf N, the stream's leader is NAME and every follower is current
  local info
  info=$(stream_info_on "$1") || return 1
  echo "cluster: $(jq -c .cluster <<<"$info")"
  holds "$info" '.cluster.leader == $l and ([.cluster.replicas[]? | select(.current)] | length) == $f' --arg l "$2" --argjson f "$((STREAM_REPLICAS - 1))"
}
step_leader_to_leaf1() {
  local info leader="" first="" attempt
  for attempt in 1 2 3 4 5 6 7 8; do
    info=$(stream_info_on 2) || fail "no stream info for $STREAM_NAME"
    leader=$(jq -r '.cluster.leader // ""' <<<"$info")
    first=${first:-$leader}
    [[ "$leader" == "$LEAF1_NAME" ]] && break
    # --preferred needs nats-server >= 2.11 and a natscli that knows it; without it a
    # plain step-down elects a random follower, so repeat until leaf1 wins.
    nats_on 2 stream cluster step-down "$STREAM_NAME" --preferred "$LEAF1_NAME" >/dev/null 2>&1 ||
      nats_on 2 stream cluster step-down "$STREAM_NAME" >/dev/null 2>&1 ||
      note "step-down attempt $attempt was refused; retrying"
    sleep 2
  done
  eventually "$SCENARIO_WAIT" "stream leader is $LEAF1_NAME (was $first)" stream_leader_is 2 "$LEAF1_NAME"
  note "stream $STREAM_NAME leader: $LEAF1_NAME (was ${first:-none})"
}

# 6a. Run right after leaf1 died: commands through leaf2 and leaf3 still succeed.
step_after_crash() {
  if curl -fsS --max-time 2 "$LEAF1_MONITOR/healthz" >/dev/null 2>&1; then
    fail "leaf1 still answers on $LEAF1_MONITOR: it was supposed to be down"
  fi
  note "leaf1 is down (its monitor does not answer)"
  retry_ok "$SCENARIO_WAIT" 2 create '{"policy_id":"'"$CRASH_POLICY_ID"'","name":"Written while leaf1 is down","description":"Created through leaf2 during the crash","policy_type":"Security","enforcement":"Advisory","scope":"System","command_id":"'"$CRASH_CREATE_COMMAND_ID"'"}'
  retry_ok "$SCENARIO_WAIT" 3 approve '{"policy_id":"'"$CRASH_POLICY_ID"'","approved_by":"compliance-officer","approval_date":"2025-11-08T10:00:00Z","command_id":"'"$CRASH_APPROVE_COMMAND_ID"'"}'
  expect_ok 2 suspend '{"policy_id":"'"$SEED_POLICY_ID"'","suspended_by":"compliance-officer","reason":"Audit while leaf1 is down"}' 4
  expect_ok 3 activate '{"policy_id":"'"$SEED_POLICY_ID"'","activated_by":"compliance-officer"}' 5
  expect_stored "events.policy.$CRASH_POLICY_ID.approved" "$CRASH_POLICY_ID" approved 3
  # Retries through the election wrote each event once.
  local counts
  counts=$(nats_on 3 stream subjects "$STREAM_NAME" "events.policy.$CRASH_POLICY_ID.>" --json) ||
    fail "nats stream subjects failed"
  holds "$counts" '. == {($p + ".created"): 1, ($p + ".approved"): 1}' --arg p "events.policy.$CRASH_POLICY_ID" ||
    fail "events of $CRASH_POLICY_ID after retries: $counts (want exactly one created and one approved)"
  note "exactly one created and one approved event for $CRASH_POLICY_ID: $(jq -c . <<<"$counts")"
}

# 6b. After leaf1 restarted: its replica catches up to the same last sequence as
#     the others, every replica is current, and commands through leaf1 work again.
step_caught_up() {
  eventually "$SCENARIO_WAIT" "leaf1 healthz ok again" curl -fsS --max-time 5 "$LEAF1_MONITOR/healthz"
  local expected
  eventually "$SCENARIO_WAIT" "all $LEAF_COUNT replicas hold the same last sequence" same_last_seq_everywhere
  eventually "$SCENARIO_WAIT" "stream leader sees both followers current" replicas_current 1
  expected=$(stream_info_on 3 | jq .state.last_seq)
  note "every leaf's replica is at last_seq $(local_last_seq 1) (stream: $expected)"
  [[ "$(local_last_seq 1)" == "$expected" ]] || fail "leaf1 holds $(local_last_seq 1), the stream is at $expected"
  retry_ok "$SCENARIO_WAIT" 1 activate '{"policy_id":"'"$CRASH_POLICY_ID"'","activated_by":"compliance-officer","command_id":"'"$AFTER_RESTART_COMMAND_ID"'"}'
  expect_stored "events.policy.$CRASH_POLICY_ID.activated" "$CRASH_POLICY_ID" activated 1
  eventually "$SCENARIO_WAIT" "replicas agree again after a write through leaf1" same_last_seq_everywhere
  note "$(same_last_seq_everywhere)"
}

# 7. VM only: systemd hardening, own user, pino JSON in the journal (run on each leaf).
step_unit_hardening() {
  local unit=policy-service.service exposure user main_pid process_user
  exposure=$(systemd-analyze security "$unit" --no-pager 2>/dev/null | sed -nE 's/.*Overall exposure level for [^:]+: ([0-9.]+).*/\1/p')
  [[ -n "$exposure" ]] || fail "systemd-analyze security $unit printed no overall exposure level"
  awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure level of $unit is $exposure, want <= 2.0"
  note "systemd-analyze security $unit: exposure $exposure"
  systemd-analyze security --threshold=20 "$unit" --no-pager >/dev/null 2>&1 ||
    fail "systemd-analyze security --threshold=20 $unit rejects the unit"

  user=$(systemctl show -p User --value "$unit")
  [[ "$user" == "$SERVICE_USER" ]] || fail "$unit runs as User='$user', want $SERVICE_USER"
  main_pid=$(systemctl show -p MainPID --value "$unit")
  [[ "$main_pid" =~ ^[1-9][0-9]*$ ]] || fail "$unit has no main process (MainPID=$main_pid)"
  process_user=$(ps -o user:64= -p "$main_pid" | tr -d ' ')  # wide column: a name over 8 characters would print as a number
  [[ "$process_user" == "$SERVICE_USER" ]] || fail "$unit's process $main_pid runs as '$process_user'"
  note "$unit runs as $process_user (pid $main_pid); systemd restarted it $(systemctl show -p NRestarts --value "$unit") time(s) this boot"

  local pino_lines
  pino_lines=$(journalctl -u "$unit" -o cat --no-pager | jq -R -c 'fromjson? | select(type == "object" and (.level | type) == "number" and has("time") and has("msg"))' | wc -l)
  ((pino_lines > 0)) || fail "journalctl -u $unit shows no pino JSON lines: $(journalctl -u "$unit" -o cat --no-pager | tail -n 5)"
  note "journal of $unit: $pino_lines pino JSON lines, e.g. $(journalctl -u "$unit" -o cat --no-pager | jq -R -c 'fromjson? | select(type == "object" and has("msg"))' | head -n 1)"
}

case "${1:-}" in
  step_cluster_up) step_cluster_up ;;
  step_stream_info) step_stream_info ;;
  step_seed_create) step_seed_create ;;
  step_discovery) step_discovery ;;
  step_server_info) step_server_info ;;
  step_lifecycle) step_lifecycle ;;
  step_leader_to_leaf1) step_leader_to_leaf1 ;;
  step_after_crash) step_after_crash ;;
  step_caught_up) step_caught_up ;;
  step_unit_hardening) step_unit_hardening ;;
  *)
    echo "usage: cluster-scenario step_cluster_up|step_stream_info|step_seed_create|step_discovery|step_server_info|step_lifecycle|step_leader_to_leaf1|step_after_crash|step_caught_up|step_unit_hardening" >&2
    exit 2
    ;;
esac
