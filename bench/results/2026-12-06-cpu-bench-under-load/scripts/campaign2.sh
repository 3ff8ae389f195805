#!/bin/bash
# before and after alternate run by run, so that both meet the same background
out=/tmp/benchruns/all; mkdir -p $out
for suite in kernels jacobian mlp; do
  for i in 1 2 3; do
    for tree in before after; do /tmp/benchruns/run.sh $tree-$suite-quiet-$i $tree $suite quiet $out; done
  done
  for i in 1 2; do
    for tree in before after; do /tmp/benchruns/run.sh $tree-$suite-load-$i $tree $suite load $out; done
  done
done
echo done > $out/DONE
