#!/usr/bin/env python3
"""beanstalkd as propeller-apns' producers use it, through greenstalk (a client from PyPI).

  put HOST PORT TUBE [DELAY [TTR]]   one job per stdin line: a JSON object is sent as
                                     json.dumps writes it (server.py's body); a JSON string is
                                     sent as its text (a malformed job). `use TUBE`, then put
                                     with pystalkd's defaults: priority 2**31, TTR 120.
                                     Prints each job's id.
  stats HOST PORT TUBE               the tube's stats-tube, as JSON.
  buried HOST PORT TUBE              every buried job of the tube with its stats-job, as JSON
                                     lines (each deleted once read).
  server-stats HOST PORT TUBE        the server's stats, as JSON.
  reserve-and-drop HOST PORT TUBE N  N times: reserve a job of the tube and close the
                                     connection holding it (a worker that crashed).
"""
import json
import sys

import greenstalk


def main():
    cmd, host, port, tube = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if cmd == "put":
        delay = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        ttr = int(sys.argv[6]) if len(sys.argv) > 6 else 120
        with greenstalk.Client((host, port), use=tube) as c:
            for line in sys.stdin:
                line = line.strip()
                if not line:
                    continue
                job = json.loads(line)
                body = job if isinstance(job, str) else json.dumps(job)
                print(c.put(body, priority=2**31, delay=delay, ttr=ttr), flush=True)
    elif cmd == "stats":
        with greenstalk.Client((host, port), use=tube) as c:
            print(json.dumps(c.stats_tube(tube)))
    elif cmd == "buried":
        with greenstalk.Client((host, port), use=tube) as c:
            seen = set()
            while True:
                try:
                    job = c.peek_buried()
                except greenstalk.NotFoundError:
                    break
                if job.id in seen:
                    break
                seen.add(job.id)
                print(json.dumps({"body": job.body, "stats": c.stats_job(job)}), flush=True)
                c.delete(job)
    elif cmd == "server-stats":
        with greenstalk.Client((host, port), use=tube) as c:
            print(json.dumps(c.stats()))
    elif cmd == "reserve-and-drop":
        for _ in range(int(sys.argv[5])):
            c = greenstalk.Client((host, port), watch=tube)
            c.reserve(timeout=5)
            c.close()
    else:
        sys.exit(f"unknown command {cmd}")


main()
