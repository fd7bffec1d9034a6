"""A background worker: does a unit of 'work' every few seconds and says so in the logs."""

import os
import signal
import sys
import time

INTERVAL = float(os.environ.get("WORK_INTERVAL", "5"))


def stop(signum: int, frame: object) -> None:
    print("worker: SIGTERM received, finishing up", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
done = 0
while True:
    done += 1
    print(f"worker: processed job {done}", flush=True)
    time.sleep(INTERVAL)
