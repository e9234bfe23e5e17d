//! A CPU transcription of the `ops_sample` kernel's algorithm, step for step (radix selections
//! over order keys, the ordered gather, the finisher, the large-candidate path), with the
//! candidate capacity as a parameter. Unit tests check it against `sampler::sample_with` with
//! small capacities, so that every path of the kernel's logic runs on machines without a GPU.
// Test-only models over small vectors: indices fit u32, sums and casts stay in range.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use crate::sampler::{argmax, fexp, key_value, order_key, weight_units, SampleParams};

/// The K-th element of the order: its key and which of the elements with that key it is
/// (1-based, in index order). `key == 0` with `ties == 0` stands for "every element".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sel {
    pub key: u32,
    pub ties: u32,
}

const ALL: Sel = Sel { key: 0, ties: 0 };

fn hi_mask(shift: u32) -> u32 {
    if shift == 24 {
        0
    } else {
        u32::MAX << (shift + 8)
    }
}

fn bucket(key: u32, shift: u32) -> usize {
    ((key >> shift) & 255) as usize
}

/// The K-th largest key (1 ≤ K ≤ n): four passes of an 8-bit histogram.
pub(crate) fn count_select(keys: &[u32], k: u32) -> Sel {
    let mut prefix = 0u32;
    let mut rem = k;
    for shift in [24u32, 16, 8, 0] {
        let mut h = [0u32; 256];
        for &key in keys {
            if key & hi_mask(shift) == prefix {
                h[bucket(key, shift)] += 1;
            }
        }
        let mut run = 0u32;
        let mut chosen = None;
        for b in (0..256).rev() {
            let after = run + h[b];
            if h[b] > 0 && after >= rem {
                chosen = Some((b, run));
                break;
            }
            run = after;
        }
        let (b, above) = chosen.expect("rem never exceeds the matching count");
        prefix |= (b as u32) << shift;
        rem -= above;
    }
    Sel {
        key: prefix,
        ties: rem,
    }
}

/// Result of a selection by mass: the element at which the running weight (in order) first
/// reaches the target, as (key, tie number), and its rank.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MassSel {
    pub sel: Sel,
    pub rank: u32,
}

/// The first element (in order) whose inclusive running weight reaches `target`; `None` when
/// the total weight is below it.
pub(crate) fn mass_select(
    keys: &[u32],
    target: u64,
    weight: impl Fn(u32) -> u64,
) -> Option<MassSel> {
    let mut prefix = 0u32;
    let mut rem = target;
    let mut count_gt = 0u32;
    let mut n_t = 0u32;
    for shift in [24u32, 16, 8, 0] {
        let mut c = [0u32; 256];
        let mut w = [0u64; 256];
        for &key in keys {
            if key & hi_mask(shift) == prefix {
                c[bucket(key, shift)] += 1;
                w[bucket(key, shift)] += weight(key);
            }
        }
        let (mut run_m, mut run_c) = (0u64, 0u32);
        let mut chosen = None;
        for b in (0..256).rev() {
            let after = run_m + w[b];
            if c[b] > 0 && after >= rem {
                chosen = Some((b, run_m, run_c));
                break;
            }
            run_m = after;
            run_c += c[b];
        }
        let (b, above_m, above_c) = chosen?;
        prefix |= (b as u32) << shift;
        rem -= above_m;
        count_gt += above_c;
        n_t = c[b];
    }
    let wt = weight(prefix);
    let j = if rem == 0 {
        1
    } else {
        u32::try_from(rem.div_ceil(wt))
            .unwrap_or(u32::MAX)
            .clamp(1, n_t)
    };
    Some(MassSel {
        sel: Sel {
            key: prefix,
            ties: j,
        },
        rank: count_gt + j - 1,
    })
}

/// Index of the `j`-th (1-based) element with key `key`, in index order.
pub(crate) fn find_tie(keys: &[u32], sel: Sel) -> u32 {
    let mut seen = 0;
    for (i, &k) in keys.iter().enumerate() {
        if k == sel.key {
            seen += 1;
            if seen == sel.ties {
                return i as u32;
            }
        }
    }
    panic!("tie {sel:?} not found");
}

/// The elements of `sel`'s prefix as sorted candidates (key above, inverted index below).
fn gather(keys: &[u32], sel: Sel) -> Vec<u64> {
    let mut out = Vec::new();
    let mut ties = 0;
    for (i, &k) in keys.iter().enumerate() {
        let take = k > sel.key || (k == sel.key && ties < sel.ties);
        if k == sel.key {
            ties += 1;
        }
        if take {
            out.push((u64::from(k) << 32) | u64::from(!(i as u32)));
        }
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

struct Ctx<'a> {
    keys: &'a [u32],
    m: f32,
    p: &'a SampleParams,
}

impl Ctx<'_> {
    fn e(&self, k: u32) -> f32 {
        fexp(key_value(k) - self.m)
    }
    fn eq(&self, k: u32) -> u64 {
        weight_units(self.e(k))
    }
    fn wq(&self, k: u32) -> u64 {
        weight_units(fexp((key_value(k) - self.m) / self.p.temperature))
    }
    fn pred(&self, k: u32) -> bool {
        self.e(k) >= self.p.min_p
    }
    fn top_p_target(&self, s: u64) -> u64 {
        (f64::from(self.p.top_p.max(0.0)) * s as f64) as u64
    }
}

/// Which way the kernel went, for the tests to check coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Path {
    Degenerate,
    Small,
    Filtered,
    Large,
}

/// The finisher: sorted candidates (the first `C` of the order), the top-k sum `s` and the
/// min-p count over the top-k when the caller has them.
fn finish(cx: &Ctx, cand: &[u64], s: Option<u64>, cnt: Option<u32>, u: f32) -> u32 {
    let key = |c: u64| (c >> 32) as u32;
    let c = cand.len();
    let eq: Vec<u64> = cand.iter().map(|&x| cx.eq(key(x))).collect();
    let s = s.unwrap_or_else(|| eq.iter().sum());
    let mut keep = c;
    if cx.p.top_p < 1.0 {
        let target = cx.top_p_target(s);
        let mut cum = 0;
        if let Some(i) = eq.iter().position(|&x| {
            cum += x;
            cum >= target
        }) {
            keep = keep.min(i + 1);
        }
    }
    if cx.p.min_p > 0.0 {
        let cnt = cnt.map_or_else(
            || cand.iter().filter(|&&x| cx.pred(key(x))).count(),
            |v| v as usize,
        );
        keep = keep.min(cnt.max(1));
    }
    let wq: Vec<u64> = cand[..keep].iter().map(|&x| cx.wq(key(x))).collect();
    let total: u64 = wq.iter().sum();
    let r = (f64::from(u) * total as f64) as u64;
    let mut cum = 0;
    let pick = wq
        .iter()
        .position(|&x| {
            cum += x;
            cum > r
        })
        .unwrap_or(keep - 1);
    !(cand[pick] as u32)
}

/// The kernel's algorithm with candidate capacity `cap`; returns the id and the path taken.
pub(crate) fn sample(logits: &[f32], p: &SampleParams, u: f32, cap: usize) -> (u32, Path) {
    let n = logits.len();
    if !crate::sampler::greedy_off(p.temperature) {
        return (argmax(logits), Path::Degenerate);
    }
    let keys: Vec<u32> = logits.iter().map(|&l| order_key(l)).collect();
    let m_key = keys.iter().copied().max().unwrap_or(0);
    let m = key_value(m_key);
    if !m.is_finite() {
        return (
            find_tie(
                &keys,
                Sel {
                    key: m_key,
                    ties: 1,
                },
            ),
            Path::Degenerate,
        );
    }
    let cx = Ctx { keys: &keys, m, p };
    let k1 = if p.top_k > 0 && p.top_k < n {
        p.top_k
    } else {
        n
    };
    let sel1 = if k1 == n {
        ALL
    } else {
        count_select(&keys, k1 as u32)
    };
    if k1 <= cap {
        let cand = gather(&keys, sel1);
        assert_eq!(cand.len(), k1);
        return (finish(&cx, &cand, None, None, u), Path::Small);
    }
    // The sum and the min-p count over the top-k.
    let mut s = 0u64;
    let mut cnt = 0u32;
    for &k in cx.keys {
        if k > sel1.key {
            s += cx.eq(k);
            cnt += u32::from(cx.pred(k));
        }
    }
    s += u64::from(sel1.ties) * cx.eq(sel1.key);
    if cx.pred(sel1.key) {
        cnt += sel1.ties;
    }
    let c = if p.min_p > 0.0 {
        k1.min((cnt as usize).max(1))
    } else {
        k1
    };
    if c <= cap {
        let selc = count_select(&keys, c as u32);
        let cand = gather(&keys, selc);
        assert_eq!(cand.len(), c);
        return (finish(&cx, &cand, Some(s), Some(cnt), u), Path::Filtered);
    }
    // Large: selections by mass over the whole vocabulary.
    let mut keep = c as u32;
    if p.top_p < 1.0 {
        if let Some(ms) = mass_select(&keys, cx.top_p_target(s), |k| cx.eq(k)) {
            keep = keep.min(ms.rank + 1);
        }
    }
    let selk = if keep as usize == k1 && k1 < n {
        sel1
    } else {
        count_select(&keys, keep)
    };
    let mut t = 0u64;
    for &k in cx.keys {
        if k > selk.key {
            t += cx.wq(k);
        }
    }
    t += u64::from(selk.ties) * cx.wq(selk.key);
    let r = (f64::from(u) * t as f64) as u64;
    let pick = match mass_select(&keys, r + 1, |k| cx.wq(k)) {
        Some(md) if md.rank < keep => md.sel,
        _ => selk,
    };
    (find_tie(&keys, pick), Path::Large)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::sample_with;
    use rand::{Rng, SeedableRng};

    fn logits(rng: &mut impl Rng, n: usize, style: u32) -> Vec<f32> {
        (0..n)
            .map(|_| match style {
                // Continuous, a peaked head.
                0 => rng.random_range(-8.0f32..8.0) + if rng.random_bool(0.02) { 6.0 } else { 0.0 },
                // Few distinct values: many ties.
                1 => f32::from(rng.random_range(0u8..6)) * 0.75 - 2.0,
                // Specials mixed in.
                2 => match rng.random_range(0..10) {
                    0 => f32::NEG_INFINITY,
                    1 => f32::NAN,
                    2 => -0.0,
                    3 => 0.0,
                    _ => rng.random_range(-3.0f32..3.0),
                },
                // Flat: a long top-p prefix.
                _ => rng.random_range(-0.05f32..0.05),
            })
            .collect()
    }

    #[test]
    fn count_and_mass_selection_agree_with_a_sort() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for style in 0..4 {
            let l = logits(&mut rng, 500, style);
            let keys: Vec<u32> = l.iter().map(|&x| order_key(x)).collect();
            let mut order: Vec<u64> = keys
                .iter()
                .enumerate()
                .map(|(i, &k)| (u64::from(k) << 32) | u64::from(!(i as u32)))
                .collect();
            order.sort_unstable_by(|a, b| b.cmp(a));
            for k in [1u32, 2, 17, 250, 499, 500] {
                let sel = count_select(&keys, k);
                let want = order[k as usize - 1];
                assert_eq!(find_tie(&keys, sel), !(want as u32), "k {k} style {style}");
            }
            let w = |k: u32| u64::from(k % 7);
            let mut cum = 0u64;
            let cums: Vec<u64> = order
                .iter()
                .map(|&c| {
                    cum += w((c >> 32) as u32);
                    cum
                })
                .collect();
            for target in [0u64, 1, 5, cum / 3, cum - 1, cum, cum + 1] {
                let got = mass_select(&keys, target, w);
                match cums.iter().position(|&c| c >= target) {
                    Some(rank) => {
                        let g = got.expect("found");
                        assert_eq!(g.rank as usize, rank, "target {target}");
                        assert_eq!(find_tie(&keys, g.sel), !(order[rank] as u32));
                    }
                    None => assert!(got.is_none()),
                }
            }
        }
    }

    #[test]
    fn every_path_picks_what_the_cpu_sampler_picks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut seen = std::collections::HashSet::new();
        for case in 0..240 {
            let n = [1usize, 2, 7, 64, 300][case % 5];
            let style = (case / 5 % 4) as u32;
            let l = logits(&mut rng, n, style);
            let p = SampleParams {
                temperature: [1.0f32, 0.7, 1.5, 0.05][case % 4],
                top_k: [0usize, 1, 5, 40, 1000][case / 3 % 5],
                top_p: [1.0f32, 0.95, 0.5, 0.0][case / 2 % 4],
                min_p: [0.0f32, 0.05, 0.5, 2.0][case / 7 % 4],
            };
            for cap in [2048usize, 16, 3, 1] {
                for d in 0..40 {
                    let u = if d == 0 { 0.0 } else { rng.random::<f32>() };
                    let want = sample_with(&l, &p, u);
                    let (got, path) = sample(&l, &p, u, cap);
                    assert_eq!(
                        got, want,
                        "case {case} cap {cap} u {u} params {p:?} logits {l:?}"
                    );
                    seen.insert(path);
                }
            }
        }
        for path in [Path::Degenerate, Path::Small, Path::Filtered, Path::Large] {
            assert!(seen.contains(&path), "{path:?} never ran");
        }
    }
}
