#!/usr/bin/env bash
# Warm `clipsearch query` (answered by the background server the first query leaves), two
# checkouts alternated on the demo's 300-image index: median of 5 warm queries per round.
#   git worktree add /tmp/old OLD_COMMIT
#   bash benchmarks/warm_query_old_new.sh /tmp/old "$PWD" 3
set -euo pipefail
old=$1 new=$2 rounds=$3
py=$new/.venv/bin/python
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$work"
PYTHONPATH=$new $py -m clipsearch demo --dir demo > /dev/null 2>&1
for round in $(seq "$rounds"); do
  for code in "$old" "$new"; do
    rm -rf $work/idx && cp -r demo/index $work/idx
    export PYTHONPATH=$code
    $py -m clipsearch query "a photo of a dog" -k 5 --index $work/idx > /dev/null   # cold: leaves the server
    for _ in $(seq 100); do [ -f $work/idx/server.json ] && break; sleep 0.1; done
    sleep 1
    $py - "$code" "$work/idx" <<'PY'
import statistics, subprocess, sys, time
times = []
for _ in range(6):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "clipsearch", "query", "a photo of a cat", "-k", "5",
                    "--index", sys.argv[2]], check=True, capture_output=True)
    times.append(time.perf_counter() - t)
print(f"{sys.argv[1]:12s} warm median {statistics.median(times[1:]):.3f} s  (all: {' '.join(f'{x:.3f}' for x in times)})")
PY
    pid=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['pid'])" "$work/idx/server.json")
    kill "$pid"; sleep 1
  done
done
