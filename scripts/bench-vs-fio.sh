#!/usr/bin/env bash
# llmstream → staging against fio (io_uring, O_DIRECT, 1 MiB, depth 32, sequential) on the same
# cold file, alternating ROUNDS times so both see the same noise. Needs fio and root (to drop the
# page cache). Usage: scripts/bench-vs-fio.sh FILE [ROUNDS] [path to llmstream]
set -euo pipefail
file=${1:?usage: bench-vs-fio.sh FILE [ROUNDS] [LLMSTREAM]}
rounds=${2:-3}
bin=${3:-target/release/llmstream}
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 1; }
size=$(stat -c %s "$file")
drop() { sync; echo 1 > /proc/sys/vm/drop_caches; }
for r in $(seq 1 "$rounds"); do
  drop
  fio_gbps=$(fio --name=seq --filename="$file" --ioengine=io_uring --direct=1 --bs=1M --iodepth=32 \
    --rw=read --size="$size" --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"]/1e9)')
  j=$("$bin" bench "$file" --json)
  python3 - "$fio_gbps" "$j" "$r" <<'PY'
import json, sys
fio = float(sys.argv[1]); b = json.loads(sys.argv[2])
s = b["odirect_to_staging_gbps"]
print(f"round {sys.argv[3]}: fio {fio:.3f} GB/s | llmstream→staging {s:.3f} ({s/fio:.2f}x fio) | "
      f"→device {b['to_device_gbps']:.3f} ({b['to_device_gbps']/s:.2f}x staging) | "
      f"buffered read {b['buffered_read_gbps']:.3f} (llmstream {s/b['buffered_read_gbps']:.2f}x) | "
      f"mmap {b['mmap_memcpy_gbps']:.3f} | {b['io_path']}")
PY
done
