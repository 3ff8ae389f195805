#!/bin/bash
# the final code ("after"): quiet runs of each suite and of the default `gpugrad bench`, and
# runs beside a busy loop pinned to CPU 1; `before` for the default command's time alongside
out=/tmp/benchruns/final; mkdir -p $out
for i in 1 2 3; do /tmp/benchruns/run.sh after-kernels-load-$i after kernels load $out; done
for i in 1 2 3; do /tmp/benchruns/run.sh after-jacobian-load-$i after jacobian load $out; done
for i in 1 2; do /tmp/benchruns/run.sh after-mlp-load-$i after mlp load $out; done
for suite in kernels jacobian mlp; do
  for i in 1 2 3; do /tmp/benchruns/run.sh after-$suite-quiet-$i after $suite quiet $out 600; done
done
for i in 1 2 3; do for tree in before after; do /tmp/benchruns/run.sh $tree-all-quiet-$i $tree all quiet $out 600; done; done
echo done > $out/DONE
