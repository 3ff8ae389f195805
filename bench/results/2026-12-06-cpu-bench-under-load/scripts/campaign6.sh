#!/bin/bash
# the default `gpugrad bench` beside a light, intermittent load (40% of a core, unpinned)
out=/tmp/benchruns/partial; mkdir -p $out
for i in 1 2 3; do for tree in before after; do /tmp/benchruns/run.sh $tree-all-partial-$i $tree all partial $out; done; done
echo done > $out/DONE
