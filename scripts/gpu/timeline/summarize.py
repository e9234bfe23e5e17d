#!/usr/bin/env python3
"""Summarise a timeline.sh CSV: per kernel (name, grid), how much each adds to the chain of a
decoded token (its end minus the previous kernel's end, averaged over the last tokens), and its
span (end minus start: with programmatic dependent launch a kernel starts before the previous one
ends and waits); then one token boundary in detail (kernels, copies and, with TL_API, the
driver calls around it). Tokens are delimited by the argmax (or sampling) kernel."""
import csv
import collections
import sys


def main(path, tokens=11):
    kernels, other = [], []
    for r in csv.DictReader(open(path)):
        e = (int(r['start']), int(r['end']), r['name'].split('(')[0], (r['gx'], r['gy'], r['gz']))
        (other if r['name'].startswith(('API_', 'MEMCPY')) else kernels).append(e)
    kernels.sort()
    other.sort()
    bounds = [i for i, k in enumerate(kernels) if 'argmax' in k[2] or 'sample' in k[2]]
    print('kernels', len(kernels), 'token boundaries', len(bounds))
    if len(bounds) < 3:
        return
    sel = bounds[-(tokens + 1):]
    agg = collections.defaultdict(lambda: [0, 0, 0])
    total = 0
    for a, b in zip(sel, sel[1:]):
        total += kernels[b][1] - kernels[a][1]
        for i in range(a + 1, b + 1):
            k = kernels[i]
            s = agg[(k[2], k[3])]
            s[0] += 1
            s[1] += k[1] - kernels[i - 1][1]
            s[2] += k[1] - k[0]
    n = len(sel) - 1
    print(f'token (argmax to argmax) {total / n / 1e3:.1f} us, mean of {n}')
    for (name, grid), (c, chain, span) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f'{name:22s} {",".join(grid):14s} x{c / n:5.1f}/token  chain {chain / c / 1e3:7.2f} us'
              f' each, {chain / n / 1e3:7.1f} us/token  span {span / c / 1e3:7.2f}')
    a = sel[-2]
    t0 = kernels[a][1]
    t1 = kernels[min(a + 3, len(kernels) - 1)][1]
    print('token boundary (us from the argmax end)')
    events = [k for k in kernels[a - 1:a + 4]] + [o for o in other if o[1] >= t0 - 20000 and o[0] <= t1]
    for e in sorted(events):
        print(f'{(e[0] - t0) / 1e3:9.2f} {(e[1] - t0) / 1e3:9.2f} {e[2]}')


if __name__ == '__main__':
    main(sys.argv[1])
