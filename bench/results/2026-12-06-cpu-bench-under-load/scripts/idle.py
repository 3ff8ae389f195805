"""Wait until both CPUs are idle (at least 90% idle in each of 3 consecutive seconds), at most
LIMIT seconds; say how long it waited and whether it got there.  python idle.py LIMIT"""

import sys
import time


def counters():
    ticks = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait


limit, start, idle_seconds, idle = float(sys.argv[1]), time.time(), 0, 0.0
while time.time() - start < limit:
    a = counters()
    time.sleep(1)
    b = counters()
    idle = (b[1] - a[1]) / max(1, b[0] - a[0])
    idle_seconds = idle_seconds + 1 if idle >= 0.9 else 0
    if idle_seconds >= 3:
        print(f"idle for 3 s after waiting {time.time() - start:.0f} s")
        sys.exit(0)
print(f"NOT idle: gave up after {limit:.0f} s (last second {idle:.0%} idle)")
