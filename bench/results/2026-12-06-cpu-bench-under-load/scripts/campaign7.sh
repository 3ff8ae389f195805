#!/bin/bash
# with the pool probe: the default command quiet, beside the light load, and kernels beside the pinned loop
out=/tmp/benchruns/probe; mkdir -p $out
for i in 1 2 3; do /tmp/benchruns/run.sh after-all-partial-$i after all partial $out; done
for i in 1 2; do /tmp/benchruns/run.sh after-all-quiet-$i after all quiet $out 300; done
for i in 1 2; do /tmp/benchruns/run.sh after-kernels-load-$i after kernels load $out; done
echo done > $out/DONE
