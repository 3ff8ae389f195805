#!/bin/bash
# the final code: each suite quiet (3 runs) and beside a busy loop pinned to CPU 1 (jacobian, mlp: 2 runs;
# kernels' two are in campaign7), and the default command once more quiet
out=/tmp/benchruns/probe
for suite in kernels jacobian mlp; do for i in 1 2 3; do /tmp/benchruns/run.sh after-$suite-quiet-$i after $suite quiet $out 300; done; done
for suite in jacobian mlp; do for i in 1 2; do /tmp/benchruns/run.sh after-$suite-load-$i after $suite load $out; done; done
/tmp/benchruns/run.sh after-all-quiet-3 after all quiet $out 300
echo done > $out/DONE8
