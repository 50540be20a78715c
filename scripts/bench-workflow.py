#!/usr/bin/env python3
"""DynamoDB requests of one `monthlyReports` workflow (4 months: 4 `generateReport` children)
against the same four reports enqueued as plain jobs, on a running local stack:

    python3 scripts/bench-workflow.py http://127.0.0.1:4000 workflow 3
    python3 scripts/bench-workflow.py http://127.0.0.1:4000 jobs 3

Counts come from the server's own `GET /stats`; the GetItems of this script's status polls are
taken out. Prints one JSON line.
"""
import json, sys, time, urllib.request
base = sys.argv[1]
def post(q, v=None):
    req = urllib.request.Request(base + "/graphql", data=json.dumps({"query": q, "variables": v or {}}).encode(), headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))
def stats():
    return json.load(urllib.request.urlopen(base + "/stats"))["awsCalls"]
polls = 0
def wait(id):
    global polls
    while True:
        polls += 1
        s = post("query($id: ID!) { request(id: $id) { status } }", {"id": id})["data"]["request"]["status"]
        if s in ("COMPLETED", "FAILED", "CANCELLED"): return s
        time.sleep(1.0)
def diff(a, b):
    return {k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0)}
mode = sys.argv[2]
runs = int(sys.argv[3])
# Polling costs calls too: measure the polling alone on a finished request, subtract it.
before = stats(); t = time.time()
ids = []
for r in range(runs):
    if mode == "workflow":
        d = post('mutation { monthlyReports(input: {from: "2026-01", to: "2026-04", rows: 10, stepDelayMs: 100}) { id } }')
        ids.append(d["data"]["monthlyReports"]["id"])
    else:
        for m in range(1, 5):
            d = post('mutation($i: GenerateReportInput!) { generateReport(input: $i) { id } }', {"i": {"from": f"2026-0{m}-01", "to": f"2026-0{m}-28", "rows": 10, "stepDelayMs": 100}})
            ids.append(d["data"]["generateReport"]["id"])
for i in ids:
    assert wait(i) == "COMPLETED", i
after = stats(); wall = time.time() - t
calls = diff(before, after)
dynamo = {k: v for k, v in calls.items() if k.startswith("DynamoDB.")}
# Each poll read the request once (GetItem): not the workload's.
dynamo["DynamoDB.GetItem"] = dynamo.get("DynamoDB.GetItem", 0) - polls
print(json.dumps({"mode": mode, "runs": runs, "wallSecs": round(wall, 2), "dynamodbPerRun": round(sum(dynamo.values()) / runs, 1), "byOperation": {k: round(v / runs, 1) for k, v in sorted(dynamo.items())}}))
