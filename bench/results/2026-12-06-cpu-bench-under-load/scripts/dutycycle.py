"""A light background load: spin for ON ms, sleep for OFF ms, forever (not pinned), as another
engineer's intermittent work.  python dutycycle.py ON OFF"""

import sys
import time

on, off = float(sys.argv[1]) / 1e3, float(sys.argv[2]) / 1e3
while True:
    end = time.perf_counter() + on
    while time.perf_counter() < end:
        pass
    time.sleep(off)
