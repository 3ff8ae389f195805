#!/usr/bin/env bash
# alternate base and new: bench overhead and bench mlp, three pairs
# BASE: a checkout of 04eeb26 (before the restructure); NEW: one of the restructured tree
out=${OUT:-.}
for i in 1 2 3; do
  (cd $BASE && PYTHONPATH=$PWD python -m gpugrad.cli bench overhead --device cpu > $out/base-overhead-$i.txt 2>&1)
  (cd $NEW && PYTHONPATH=$PWD python -m gpugrad.app.cli bench overhead --device cpu > $out/new-overhead-$i.txt 2>&1)
  (cd $BASE && PYTHONPATH=$PWD python -m gpugrad.cli bench mlp --device cpu > $out/base-mlp-$i.txt 2>&1)
  (cd $NEW && PYTHONPATH=$PWD python -m gpugrad.app.cli bench mlp --device cpu > $out/new-mlp-$i.txt 2>&1)
done
echo done
