#!/bin/bash
# usage: run.sh LABEL TREE(before|after) SUITE MODE(quiet|load|partial) OUTDIR [WAIT]
# quiet: first waits (up to WAIT s, default 45) for both CPUs to be >= 90% idle for 3 s
# load: pins a busy loop to CPU 1 beside the run, ended by its pid afterwards
# partial: runs a process that spins 40 ms and sleeps 60 ms beside it (unpinned), ended likewise
label=$1; tree=$2; suite=$3; mode=$4; out=$5; wait=${6:-45}
. /work/venv/bin/activate
export PYTHONPATH=/tmp/$tree; cd /tmp
log=$out/$label.txt
{
echo "# $label: tree=$tree suite=$suite mode=$mode"
echo "# gpugrad from: $(python -c 'import gpugrad.benchmarks as b; print(b.__file__)')"
if [ "$mode" = quiet ]; then echo "# $(python /tmp/benchruns/idle.py $wait)"; fi
echo "# start $(date -u +%FT%TZ) loadavg $(cat /proc/loadavg)"
if [ "$mode" = load ]; then taskset -c 1 python -c "while True: pass" & busy=$!; echo "# busy loop pid $busy pinned to CPU 1 (counted below among the other processes)"; sleep 1; fi
if [ "$mode" = partial ]; then python /tmp/benchruns/dutycycle.py 40 60 & busy=$!; echo "# duty-cycle load pid $busy: spins 40 ms, sleeps 60 ms, not pinned (counted below among the other processes)"; sleep 1; fi
python /tmp/benchruns/runbench.py $suite $out/$label.json
[ "$mode" = load ] || [ "$mode" = partial ] && kill $busy
echo "# end loadavg $(cat /proc/loadavg)"
} > $log 2>&1
