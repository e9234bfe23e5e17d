#!/usr/bin/env python3
"""Per-layer and total CRC-32 of a GGUF model's layers, independent of libllmstream.

Tensor offsets come from the `gguf` package (gguf.GGUFReader); bytes are read with plain file
I/O and checksummed with zlib.crc32. A layer is the tensors named `blk.N.*`; its span runs from
its first tensor's start to its last tensor's end. Prints exactly what
examples/c/stream_checksum prints on stdout, so CI can compare the two with diff:

    layer N offset O size S crc32 XXXXXXXX
    total crc32 XXXXXXXX bytes B

The total is the CRC-32 of all layer spans concatenated in layer order.
"""

import re
import sys
import zlib

import gguf

LAYER = re.compile(r"^blk\.(\d+)\.")
CHUNK = 8 << 20


def layer_spans(path):
    reader = gguf.GGUFReader(path)
    spans = {}
    for t in reader.tensors:
        m = LAYER.match(t.name)
        if not m:
            continue
        start = int(t.data_offset)
        end = start + int(t.n_bytes)
        i = int(m.group(1))
        lo, hi = spans.get(i, (start, end))
        spans[i] = (min(lo, start), max(hi, end))
    if sorted(spans) != list(range(len(spans))):
        sys.exit(f"{path}: layer indices are not 0..{len(spans) - 1}: {sorted(spans)}")
    return [spans[i] for i in range(len(spans))]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: checksum_layers.py MODEL.gguf")
    path = sys.argv[1]
    total = 0
    total_bytes = 0
    with open(path, "rb") as f:
        for i, (start, end) in enumerate(layer_spans(path)):
            f.seek(start)
            crc = 0
            left = end - start
            while left:
                block = f.read(min(CHUNK, left))
                if not block:
                    sys.exit(f"{path}: file ends inside layer {i}")
                crc = zlib.crc32(block, crc)
                total = zlib.crc32(block, total)
                left -= len(block)
            total_bytes += end - start
            print(f"layer {i} offset {start} size {end - start} crc32 {crc:08x}")
    print(f"total crc32 {total:08x} bytes {total_bytes}")


if __name__ == "__main__":
    main()
