# Sourced by .ci/run once the venv exists: a real Ray cluster on loopback (a head and a second node,
# one CPU each, no dashboard), for the tests that train experiments as Ray tasks on a cluster and
# kill a Ray worker mid-experiment. Exports NNRECIPE_TEST_RAY (the cluster's client address) and
# NNRECIPE_TEST_RAY_NODES; stopped when the sourcing shell exits.
RAY="$PWD/.venv/bin/ray"
RAY_PORT="${NNRECIPE_RAY_PORT:-56379}"
CLIENT_PORT="${NNRECIPE_RAY_CLIENT_PORT:-50051}"
"$RAY" stop --force >/dev/null 2>&1 || true  # a head left by an earlier run on this machine
# Token authentication, as Ray now defaults to for new clusters: a token of this run's own, in
# the environment of the head and of the tests (never in a file).
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export RAY_AUTH_TOKEN
# Two nodes, as a cluster of two machines has: the head and a node that joins it (`ray start
# --address`), each with one CPU, so that two experiments at once run one on each node and their
# results cross between the nodes' object stores, as between machines (on one host: loopback).
"$RAY" start --head --node-ip-address 127.0.0.1 --port "$RAY_PORT" --ray-client-server-port "$CLIENT_PORT" \
    --num-cpus 1 --object-store-memory 500000000 --include-dashboard=false --disable-usage-stats >/dev/null
"$RAY" start --address "127.0.0.1:$RAY_PORT" --node-ip-address 127.0.0.1 \
    --num-cpus 1 --object-store-memory 500000000 --disable-usage-stats >/dev/null
export NNRECIPE_TEST_RAY_NODES=2
export NNRECIPE_TEST_RAY="ray://127.0.0.1:$CLIENT_PORT"
previous="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"  # keep PostgreSQL's
trap "$previous; \"$RAY\" stop --force >/dev/null 2>&1" EXIT
echo "ci: Ray $("$RAY" --version | awk '{print $NF}') head on 127.0.0.1:$RAY_PORT and a second node, client $NNRECIPE_TEST_RAY"
