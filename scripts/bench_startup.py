#!/usr/bin/env python3
"""Release-build start-up figures: time from exec to /health/ready = 200 on SQLite,
idle RSS after start, binary size. Runs several times and prints medians.

usage: scripts/bench_startup.py [path/to/herald] [runs]
"""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/herald-target/release/herald")
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 15


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        conn.request("GET", "/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_run(fresh):
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        env = dict(os.environ, PORT=str(port), DATABASE_URL=f"sqlite://{d}/herald.db", LOG_LEVEL="warn")
        if not fresh:
            subprocess.run([binary, "migrate"], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not ready(port):
                if time.perf_counter() - start > 10:
                    raise RuntimeError("not ready within 10 s")
                time.sleep(0.002)
            elapsed = (time.perf_counter() - start) * 1000
            time.sleep(1.0)  # idle
            rss = rss_kb(proc.pid) / 1024
        finally:
            proc.terminate()
            proc.wait()
        return elapsed, rss


for label, fresh in (("fresh database (migrations applied at start)", True), ("migrated database", False)):
    results = [one_run(fresh) for _ in range(runs)]
    times = [r[0] for r in results]
    rss = [r[1] for r in results]
    print(f"{label}: exec -> /health/ready 200: median {statistics.median(times):.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}, n={runs}); "
          f"idle RSS median {statistics.median(rss):.1f} MB (max {max(rss):.1f})")
print(f"binary size: {os.path.getsize(binary) / 1e6:.1f} MB ({binary})")
