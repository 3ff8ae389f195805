#!/bin/bash
# quiet runs only, each after waiting up to 600 s for an idle machine; before and after alternate
out=/tmp/benchruns/quiet2; mkdir -p $out
for suite in jacobian mlp kernels; do
  for i in 1 2 3; do
    for tree in before after; do /tmp/benchruns/run.sh $tree-$suite-quiet-$i $tree $suite quiet $out 600; done
  done
done
for i in 1 2; do for tree in before after; do /tmp/benchruns/run.sh $tree-all-quiet-$i $tree all quiet $out 600; done; done
echo done > $out/DONE
