"""Sample algorithm: per-station statistics of every numeric column of the input CSVs.

Written for Ocean's runtime contract, so it runs unchanged on Ocean's C2D: the datasets' DIDs are
in $DIDS, each dataset's files in /data/inputs/<did>/0..N, parameters in
/data/inputs/algoCustomData.json, and results go to /data/outputs.
"""

import csv
import json
import os
import statistics

dids = json.loads(os.environ.get("DIDS", "[]"))
with open("/data/inputs/algoCustomData.json") as handle:
    parameters = json.load(handle)
group_by = parameters.get("group_by", "station")

rows = []
for did in dids:
    folder = os.path.join("/data/inputs", did)
    for name in sorted(os.listdir(folder), key=int):
        with open(os.path.join(folder, name), newline="") as handle:
            rows.extend(csv.DictReader(handle))
        print(f"read {did[:20]}…/{name}: {len(rows)} rows so far", flush=True)

groups = {}
for row in rows:
    groups.setdefault(row.get(group_by, "all"), []).append(row)

summary = {}
for key, members in sorted(groups.items()):
    columns = {}
    for column in members[0]:
        try:
            values = [float(m[column]) for m in members]
        except ValueError:
            continue
        columns[column] = {
            "mean": round(statistics.fmean(values), 2),
            "min": min(values),
            "max": max(values),
            "stdev": round(statistics.pstdev(values), 2),
        }
    summary[key] = {"rows": len(members), "columns": columns}
    print(f"{group_by}={key}: {len(members)} rows", flush=True)

os.makedirs("/data/outputs/report", exist_ok=True)
with open("/data/outputs/summary.json", "w") as handle:
    json.dump({"group_by": group_by, "groups": summary}, handle, indent=2)
with open("/data/outputs/report/temperature.txt", "w") as handle:
    for key, info in summary.items():
        mean = info["columns"].get("temperature_c", {}).get("mean", 0)
        handle.write(f"{key:>10} {'#' * int(max(mean, 0))} {mean}\n")
print("wrote /data/outputs/summary.json and /data/outputs/report/temperature.txt", flush=True)
