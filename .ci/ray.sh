# Sourced by .ci/run once the venv exists: a real Ray head on loopback (2 CPUs, no dashboard), for
# the tests that train experiments as Ray tasks on a cluster and kill a Ray worker mid-experiment.
# Exports NNRECIPE_TEST_RAY (the cluster's client address); stopped when the sourcing shell exits.
RAY="$PWD/.venv/bin/ray"
RAY_PORT="${NNRECIPE_RAY_PORT:-56379}"
CLIENT_PORT="${NNRECIPE_RAY_CLIENT_PORT:-50051}"
"$RAY" stop --force >/dev/null 2>&1 || true  # a head left by an earlier run on this machine
# Token authentication, as Ray now defaults to for new clusters: a token of this run's own, in
# the environment of the head and of the tests (never in a file).
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
export RAY_AUTH_TOKEN
"$RAY" start --head --node-ip-address 127.0.0.1 --port "$RAY_PORT" --ray-client-server-port "$CLIENT_PORT" \
    --num-cpus 2 --include-dashboard=false --disable-usage-stats >/dev/null
export NNRECIPE_TEST_RAY="ray://127.0.0.1:$CLIENT_PORT"
previous="$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")"  # keep PostgreSQL's
trap "$previous; \"$RAY\" stop --force >/dev/null 2>&1" EXIT
echo "ci: Ray $("$RAY" --version | awk '{print $NF}') head on 127.0.0.1:$RAY_PORT, client $NNRECIPE_TEST_RAY"
