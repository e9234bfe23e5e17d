//! The tier planner: which layers live in VRAM, which in pinned RAM (copied to the GPU each
//! token), which are read from storage each token.
//!
//! Cost model (docs/tiers.md): per token, a resident layer costs its compute; a streamed layer
//! costs `max(compute, bytes / link)` when the copy of the next streamed layer overlaps the
//! compute of the current ones, and a storage layer adds `bytes / storage` on top because the
//! storage read cannot be hidden behind a faster link. So, for a fixed VRAM budget, every layer
//! that fits is resident; then as many as fit go to pinned RAM; the rest come from storage.
//! Streamed layers are spread evenly among resident ones, so each streamed copy overlaps the
//! compute of the resident layers before it instead of queueing behind the previous copy.

use serde_json::json;

/// Where a layer's weights live between tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// In VRAM for the whole run.
    Vram,
    /// In page-locked host memory, copied to a VRAM slot each token.
    Ram,
    /// On storage, read (O_DIRECT, through the library) into a VRAM slot each token.
    Storage,
    /// In host memory, computed by the CPU (hybrid decode): the hidden state hops to the host
    /// and back.
    Cpu,
}

impl Tier {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Vram => "vram",
            Tier::Ram => "ram",
            Tier::Storage => "storage",
            Tier::Cpu => "cpu",
        }
    }
}

/// Inputs of the planner, in bytes and bytes per second.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Bytes of each layer (its span in the file).
    pub layer_bytes: Vec<u64>,
    /// Bytes that must be in VRAM whatever the plan: output matrix and norm, KV cache,
    /// activations, workspaces.
    pub fixed_vram: u64,
    /// VRAM available to llmstream (budget).
    pub vram_budget: u64,
    /// Host memory available for the pinned tier (budget).
    pub ram_budget: u64,
    /// Layers copied ahead of use (the pipeline depth); `depth + 1` VRAM slots are reserved
    /// whenever a layer is streamed.
    pub depth: usize,
    /// Whether pinned-RAM layers are streamed to the GPU. `false` when the CPU computes all of
    /// them (`--split cpu`): slots are then reserved only if some layer comes from storage.
    pub stream_ram: bool,
    /// Measured pinned host → VRAM rate.
    pub h2d_bps: f64,
    /// Measured storage read rate.
    pub storage_bps: f64,
    /// Device memory bandwidth (compute time of a resident layer ≈ bytes / this).
    pub hbm_bps: f64,
}

/// The placement and its predicted cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Tier of each layer.
    pub tiers: Vec<Tier>,
    /// VRAM slots for streamed layers (0 when everything is resident).
    pub slots: usize,
    /// Bytes of the largest layer (the slot size).
    pub slot_bytes: u64,
    /// Predicted seconds per token (weights only).
    pub predicted_s: f64,
}

/// Why no plan fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Even with every layer streamed the fixed part and the slots exceed the VRAM budget.
    #[error(
        "the VRAM budget ({budget} bytes) is below the minimum this model needs ({need} bytes: \
         output matrix, KV cache, activations and {slots} layer slots)"
    )]
    VramTooSmall {
        /// Budget.
        budget: u64,
        /// Minimum.
        need: u64,
        /// Slots counted.
        slots: usize,
    },
}

impl Plan {
    /// Layers in `tier`.
    pub fn count(&self, tier: Tier) -> usize {
        self.tiers.iter().filter(|&&t| t == tier).count()
    }

    /// JSON summary (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "vram_layers": self.count(Tier::Vram),
            "ram_layers": self.count(Tier::Ram),
            "storage_layers": self.count(Tier::Storage),
            "cpu_layers": self.count(Tier::Cpu),
            "slots": self.slots,
            "slot_bytes": self.slot_bytes,
            "predicted_ms_per_token": self.predicted_s * 1e3,
            "placement": self.tiers.iter().map(|t| t.name()).collect::<Vec<_>>(),
        })
    }
}

/// Spread `k` marks over `n` positions evenly (the last position always marked when k > 0,
/// so the copy of the first streamed layer has the most compute in front of it).
fn spread(n: usize, k: usize) -> Vec<bool> {
    let mut out = vec![false; n];
    if k == 0 {
        return out;
    }
    for j in 0..k {
        // positions n - 1 - floor(j * n / k), distinct for k <= n
        let p = n - 1 - j * n / k;
        out[p] = true;
    }
    out
}

/// Place the layers.
pub fn plan(inp: &PlanInput) -> Result<Plan, PlanError> {
    let n = inp.layer_bytes.len();
    let slot_bytes = inp.layer_bytes.iter().copied().max().unwrap_or(0);
    let total: u64 = inp.layer_bytes.iter().sum();
    let hbm = inp.hbm_bps.max(1.0);
    // Everything resident?
    if inp.fixed_vram.saturating_add(total) <= inp.vram_budget {
        return Ok(Plan {
            tiers: vec![Tier::Vram; n],
            slots: 0,
            slot_bytes,
            predicted_s: total as f64 / hbm,
        });
    }
    let streaming = place(inp, inp.depth + 1)?;
    if inp.stream_ram {
        return Ok(streaming);
    }
    // No pinned-RAM layer is streamed: without slots, more layers fit; slots stay only when
    // some layer still comes from storage.
    match place(inp, 0) {
        Ok(p) if p.count(Tier::Storage) == 0 => Ok(p),
        _ => Ok(streaming),
    }
}

/// The placement with `slots` VRAM slots reserved for streamed layers.
fn place(inp: &PlanInput, slots: usize) -> Result<Plan, PlanError> {
    let n = inp.layer_bytes.len();
    let slot_bytes = inp.layer_bytes.iter().copied().max().unwrap_or(0);
    let hbm = inp.hbm_bps.max(1.0);
    let need = inp
        .fixed_vram
        .saturating_add(slot_bytes.saturating_mul(slots as u64));
    if need > inp.vram_budget {
        return Err(PlanError::VramTooSmall {
            budget: inp.vram_budget,
            need,
            slots,
        });
    }
    // Resident: how many layers fit, counted in layer order (the layers of a model are about
    // the same size, and every slot is sized for the largest).
    let mut left = inp.vram_budget - need;
    let mut resident = 0usize;
    for &b in &inp.layer_bytes {
        if b > left {
            break;
        }
        left -= b;
        resident += 1;
    }
    let streamed = n - resident;
    let marks = spread(n, streamed);
    let mut tiers: Vec<Tier> = marks
        .iter()
        .map(|&m| if m { Tier::Ram } else { Tier::Vram })
        .collect();
    // Pinned RAM for streamed layers, in layer order; the rest from storage.
    let mut ram_left = inp.ram_budget;
    for (i, t) in tiers.iter_mut().enumerate() {
        if *t == Tier::Ram {
            if inp.layer_bytes[i] <= ram_left {
                ram_left -= inp.layer_bytes[i];
            } else {
                *t = Tier::Storage;
            }
        }
    }
    let mut s = 0.0;
    for (i, t) in tiers.iter().enumerate() {
        let b = inp.layer_bytes[i] as f64;
        s += match t {
            Tier::Vram => b / hbm,
            Tier::Ram => (b / inp.h2d_bps.max(1.0)).max(b / hbm),
            Tier::Storage => b / inp.storage_bps.max(1.0) + b / inp.h2d_bps.max(1.0),
            Tier::Cpu => 0.0,
        };
    }
    Ok(Plan {
        tiers,
        slots: if streamed > 0 { slots } else { 0 },
        slot_bytes,
        predicted_s: s,
    })
}

/// Which of the layers outside VRAM the CPU computes (`--split`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Split {
    /// Stream every layer outside VRAM to the GPU.
    #[default]
    Gpu,
    /// Compute every pinned-RAM layer on the CPU (llama.cpp's way).
    Cpu,
    /// Split the pinned-RAM layers between the CPU and the link in proportion to their measured
    /// rates, interleaved, so the copy of the next streamed layer runs while the CPU computes.
    Auto,
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gpu" => Ok(Split::Gpu),
            "cpu" => Ok(Split::Cpu),
            "auto" => Ok(Split::Auto),
            o => Err(format!("--split {o}: expected auto, gpu or cpu")),
        }
    }
}

/// Measured rates the split is chosen from, in bytes of weights per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// The CPU computing a layer from host memory while the link copies.
    pub cpu_bps: f64,
    /// Pinned host memory to VRAM.
    pub h2d_bps: f64,
    /// Storage reads.
    pub storage_bps: f64,
    /// The GPU computing a one-token decode layer from VRAM.
    pub gpu_bps: f64,
}

/// Predicted seconds per token of `tiers` (docs/tiers.md, "hybrid decode"). One token runs its
/// layers in order, so the CPU's layers and the GPU's layers (resident or streamed) take turns:
/// their times add up. The copy engine streams pinned-RAM layers meanwhile, ahead of use, so the
/// link's time overlaps all of it. Storage reads are waited for by the host, on top.
pub fn predict(tiers: &[Tier], layer_bytes: &[u64], r: Rates) -> f64 {
    let (mut gpu, mut link, mut cpu, mut disk) = (0.0, 0.0, 0.0, 0.0);
    for (i, t) in tiers.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^53
        let b = layer_bytes.get(i).copied().unwrap_or(0) as f64;
        match t {
            Tier::Vram => gpu += b / r.gpu_bps.max(1.0),
            Tier::Ram => {
                gpu += b / r.gpu_bps.max(1.0);
                link += b / r.h2d_bps.max(1.0);
            }
            Tier::Storage => {
                gpu += b / r.gpu_bps.max(1.0);
                disk += b / r.storage_bps.max(1.0);
                link += b / r.h2d_bps.max(1.0);
            }
            Tier::Cpu => cpu += b / r.cpu_bps.max(1.0),
        }
    }
    f64::max(link, cpu + gpu) + disk
}

/// Turn layers of `plan` into CPU layers: the `forced` ones, else as `split` says among the
/// pinned-RAM layers. `auto` tries every count of CPU layers (spread among the pinned-RAM ones,
/// so each streamed layer is copied while the CPU computes the one before it) and keeps the
/// fastest by [`predict`]. Updates the predicted time.
pub fn apply_split(
    plan: &mut Plan,
    layer_bytes: &[u64],
    split: Split,
    forced: Option<&[usize]>,
    rates: Rates,
) -> Result<(), String> {
    let n = plan.tiers.len();
    if let Some(list) = forced {
        for &i in list {
            if i >= n {
                return Err(format!("--cpu-layers: layer {i} of a {n}-layer model"));
            }
            plan.tiers[i] = Tier::Cpu;
        }
    } else {
        let ram: Vec<usize> = (0..n).filter(|&i| plan.tiers[i] == Tier::Ram).collect();
        let with = |k: usize| {
            let mut t = plan.tiers.clone();
            for (j, m) in spread(ram.len(), k).into_iter().enumerate() {
                if m {
                    t[ram[j]] = Tier::Cpu;
                }
            }
            t
        };
        let k = match split {
            Split::Gpu => 0,
            Split::Cpu => ram.len(),
            Split::Auto => {
                let mut best = (f64::INFINITY, 0);
                for k in 0..=ram.len() {
                    let s = predict(&with(k), layer_bytes, rates);
                    if s < best.0 {
                        best = (s, k);
                    }
                }
                best.1
            }
        };
        plan.tiers = with(k);
    }
    if !plan
        .tiers
        .iter()
        .any(|t| matches!(t, Tier::Ram | Tier::Storage))
    {
        plan.slots = 0; // nothing streamed: no slot is allocated
    }
    plan.predicted_s = predict(&plan.tiers, layer_bytes, rates);
    Ok(())
}

/// The ideal time per token for reporting, seconds: the GPU computes its resident layers
/// (`g` seconds) while the link copies, the CPU computes while the GPU does not, and the bytes
/// outside VRAM are split between the two continuously at no cost: the link moves `h * T` bytes
/// and the CPU `c * (T - g)`, so `T = (outside + c * g) / (c + h)`, and never less than `g`.
/// Storage layers count with their read time converted to link time. The GPU's compute of
/// streamed layers is left out (it only makes the real pipeline slower).
pub fn split_bound(tiers: &[Tier], layer_bytes: &[u64], r: Rates) -> f64 {
    let (mut g, mut outside) = (0.0, 0.0);
    for (i, t) in tiers.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^53
        let b = layer_bytes.get(i).copied().unwrap_or(0) as f64;
        match t {
            Tier::Vram => g += b / r.gpu_bps.max(1.0),
            Tier::Ram | Tier::Cpu => outside += b,
            Tier::Storage => outside += b + b * r.h2d_bps / r.storage_bps.max(1.0),
        }
    }
    let c = r.cpu_bps.max(0.0);
    f64::max(g, (outside + c * g) / (c + r.h2d_bps).max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: usize, layer: u64, vram: u64, ram: u64) -> PlanInput {
        PlanInput {
            layer_bytes: vec![layer; n],
            fixed_vram: 100,
            vram_budget: vram,
            ram_budget: ram,
            depth: 2,
            stream_ram: true,
            h2d_bps: 50e9,
            storage_bps: 1.5e9,
            hbm_bps: 3e12,
        }
    }

    #[test]
    fn everything_resident_when_it_fits() {
        let p = plan(&input(10, 50, 600, 0)).unwrap();
        assert_eq!(p.count(Tier::Vram), 10);
        assert_eq!(p.slots, 0);
    }

    #[test]
    fn fills_vram_then_ram_then_storage() {
        // 10 layers of 50; budget 100 fixed + 3 slots (150) + 5 layers (250) = 500.
        let p = plan(&input(10, 50, 500, 150)).unwrap();
        assert_eq!(p.count(Tier::Vram), 5);
        assert_eq!(p.count(Tier::Ram), 3);
        assert_eq!(p.count(Tier::Storage), 2);
        assert_eq!(p.slots, 3);
        // the streamed layers are spread out, the last layer is streamed
        assert_ne!(p.tiers[9], Tier::Vram);
        assert!(p.predicted_s > 0.0);
    }

    #[test]
    fn too_small_a_budget_is_an_error() {
        assert!(matches!(
            plan(&input(10, 50, 200, 0)),
            Err(PlanError::VramTooSmall { .. })
        ));
    }

    #[test]
    fn split_turns_ram_layers_into_cpu_layers() {
        let base = plan(&input(10, 50, 500, 150)).unwrap();
        let rates = Rates {
            cpu_bps: 50e9,
            h2d_bps: 50e9,
            storage_bps: 1.5e9,
            gpu_bps: 3e12,
        };
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Gpu, None, rates).unwrap();
        assert_eq!(p.count(Tier::Cpu), 0);
        let gpu_only = p.predicted_s;
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Cpu, None, rates).unwrap();
        assert_eq!(p.count(Tier::Cpu), 3);
        assert_eq!(p.count(Tier::Ram), 0);
        assert_eq!(p.count(Tier::Storage), 2, "storage layers stay streamed");
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Auto, None, rates).unwrap();
        assert_eq!(
            p.count(Tier::Cpu),
            2,
            "the storage layers keep the link busy"
        );
        assert!(p.predicted_s < gpu_only);
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Gpu, Some(&[0, 9]), rates).unwrap();
        assert_eq!((p.tiers[0], p.tiers[9]), (Tier::Cpu, Tier::Cpu));
        assert!(apply_split(&mut p, &[50; 10], Split::Gpu, Some(&[10]), rates).is_err());
        assert_eq!("auto".parse::<Split>(), Ok(Split::Auto));
        assert!("both".parse::<Split>().is_err());
    }

    #[test]
    fn auto_split_counts_the_gpu_compute_between_cpu_layers() {
        // 4 resident and 6 pinned-RAM layers of 100 bytes; CPU and link 50 B/s, GPU 100 B/s.
        // k CPU layers: link (6 - k) * 2 s; CPU and GPU in turn k * 2 + (10 - k) * 1 s.
        let mut p = Plan {
            tiers: [[Tier::Vram, Tier::Ram].repeat(4), vec![Tier::Ram; 2]].concat(),
            slots: 2,
            slot_bytes: 100,
            predicted_s: 0.0,
        };
        let r = Rates {
            cpu_bps: 50.0,
            h2d_bps: 50.0,
            storage_bps: 1.0,
            gpu_bps: 100.0,
        };
        apply_split(&mut p, &[100; 10], Split::Auto, None, r).unwrap();
        // k = 1: max(10, 11) = 11 s; k = 0 gives 12 and k = 2 gives 12 (rates alone: k = 3, 13).
        assert_eq!(p.count(Tier::Cpu), 1);
        assert!((p.predicted_s - 11.0).abs() < 1e-9, "{}", p.predicted_s);
        // ideal: (600 bytes + 50 B/s * 4 s of resident layers) / 100 B/s
        assert!((split_bound(&p.tiers, &[100; 10], r) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn no_slots_when_the_cpu_takes_every_pinned_layer() {
        // 10 layers of 50, fixed 100, budget 500: streaming keeps 3 slots (5 resident); without
        // streaming the slots' 150 bytes hold 3 more layers.
        let mut inp = input(10, 50, 500, 1000);
        inp.stream_ram = false;
        let p = plan(&inp).unwrap();
        assert_eq!((p.slots, p.count(Tier::Vram)), (0, 8));
        // with layers left for storage, the slots stay
        let mut inp = input(10, 50, 500, 50);
        inp.stream_ram = false;
        let p = plan(&inp).unwrap();
        assert_eq!((p.slots, p.count(Tier::Storage)), (3, 4));
    }

    #[test]
    fn spread_marks_exactly_k() {
        for n in 1..40 {
            for k in 0..=n {
                assert_eq!(spread(n, k).iter().filter(|&&b| b).count(), k, "{n} {k}");
            }
        }
    }
}
