#!/usr/bin/env bash
# Per-kernel GPU time of decode steps, grouped by kernel and grid (Nsight Compute: each kernel
# alone, so no overlap between kernels): where a token's time goes, and the DRAM rate of each.
# Usage (GPU machine, after figures.sh's synth): scripts/gpu/kernel-times.sh MODEL LABEL [run
# flags...]; env vars pass through (LLMSTREAM_PDL=0 ...). Writes $OUT/kt-LABEL.txt.
# KT_NCU_FLAGS adds Nsight flags: "--clock-control none" for the boost clocks decode runs at
# (Nsight locks the base clock by default), "--cache-control none" to keep L2 between kernels.
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${OUT:-$PWD/figures-out}
mkdir -p "$out"
model=$1 label=$2
shift 2
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
[ -x "$ncu" ] || { echo "no ncu" | tee "$out/kt-$label.txt"; exit 0; }
# a token is ~360 launches on the 8B shape: skip loading, the prompt and the first tokens
"$ncu" --csv ${KT_NCU_FLAGS:-} --metrics gpu__time_duration.sum,dram__bytes_read.sum \
  --launch-skip "${KT_SKIP:-3000}" --launch-count "${KT_COUNT:-720}" \
  .dev/llmstream run -m "$model" -p "Hello world, this is" --temp 0 --backend cuda -n 24 "$@" \
  >"$out/kt-$label.csv" 2>"$out/kt-$label.err"
python3 - "$out/kt-$label.csv" >"$out/kt-$label.txt" <<'PY'
import csv, sys, collections
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
rows = list(csv.DictReader(lines))
k = collections.defaultdict(dict)
for r in rows:
    key = (r["ID"], r["Kernel Name"], r["Grid Size"])
    v = float(r["Metric Value"].replace(",", ""))
    unit = r["Metric Unit"]
    if r["Metric Name"] == "gpu__time_duration.sum":
        k[key]["us"] = v * {"ns": 1e-3, "nsecond": 1e-3, "us": 1, "usecond": 1,
                             "ms": 1e3, "msecond": 1e3}[unit]
    else:
        k[key]["bytes"] = v * {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}[unit]
agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
for (i, name, grid), m in k.items():
    # one line per kernel, grid and size read (the same kernel serves several matrices)
    a = agg[(name.split("(")[0], grid, round(m.get("bytes", 0) / 1e6))]
    a[0] += 1; a[1] += m.get("us", 0); a[2] += m.get("bytes", 0)
tot = sum(a[1] for a in agg.values())
print(f"{len(k)} kernels, {tot:.0f} us in all")
for (name, grid, _), (c, us, b) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print(f"{name:18s} {grid:>14s} n {c:4d}  mean {us/c:7.2f} us  {b/c/1e6:8.2f} MB read"
          f"  {b/us/1e3 if us else 0:6.0f} GB/s  {100*us/tot:5.1f}%")
PY
