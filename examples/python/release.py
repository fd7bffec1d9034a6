"""The release phase: runs once per release before the new dynos start.

A real app would run database migrations here. Exit non-zero to stop the
release: the app keeps running its previous release.
"""

import os
import sys

print(f"release phase: preparing release (GREETING={os.environ.get('GREETING', '')!r})", flush=True)
if os.environ.get("FAIL_RELEASE"):
    print("release phase: FAIL_RELEASE is set, refusing this release", flush=True)
    sys.exit(1)
print("release phase: done", flush=True)
