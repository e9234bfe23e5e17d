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
    let slots = inp.depth + 1;
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
        slots,
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

/// Turn layers of `plan` into CPU layers: the `forced` ones, else as `split` says among the
/// pinned-RAM layers (`cpu_bps`: the CPU's measured rate over weights, `h2d_bps` the link's).
/// Updates the predicted time: resident layers at `hbm_bps`, then the link and the CPU working
/// at once on the rest (each streamed layer is copied while the CPU computes the layer before
/// it), storage reads on top.
pub fn apply_split(
    plan: &mut Plan,
    layer_bytes: &[u64],
    split: Split,
    forced: Option<&[usize]>,
    (cpu_bps, h2d_bps, storage_bps, hbm_bps): (f64, f64, f64, f64),
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
        let k = match split {
            Split::Gpu => 0,
            Split::Cpu => ram.len(),
            Split::Auto => {
                let f = cpu_bps / (cpu_bps + h2d_bps).max(1.0);
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )] // a fraction of a layer count
                let k = (f * ram.len() as f64).round() as usize;
                k.min(ram.len())
            }
        };
        for (j, m) in spread(ram.len(), k).into_iter().enumerate() {
            if m {
                plan.tiers[ram[j]] = Tier::Cpu;
            }
        }
    }
    let (mut vram, mut link, mut cpu, mut disk) = (0.0, 0.0, 0.0, 0.0);
    for (i, t) in plan.tiers.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)] // byte counts far below 2^53
        let b = layer_bytes.get(i).copied().unwrap_or(0) as f64;
        match t {
            Tier::Vram => vram += b / hbm_bps.max(1.0),
            Tier::Ram => link += b / h2d_bps.max(1.0),
            Tier::Storage => {
                disk += b / storage_bps.max(1.0);
                link += b / h2d_bps.max(1.0);
            }
            Tier::Cpu => cpu += b / cpu_bps.max(1.0),
        }
    }
    plan.predicted_s = vram + disk + f64::max(link, cpu);
    Ok(())
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
        let rates = (50e9, 50e9, 1.5e9, 3e12);
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Gpu, None, rates).unwrap();
        assert_eq!(p.count(Tier::Cpu), 0);
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Cpu, None, rates).unwrap();
        assert_eq!(p.count(Tier::Cpu), 3);
        assert_eq!(p.count(Tier::Ram), 0);
        assert_eq!(p.count(Tier::Storage), 2, "storage layers stay streamed");
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Auto, None, rates).unwrap();
        assert_eq!(p.count(Tier::Cpu), 2, "half of 3 at equal rates, rounded");
        assert!(p.predicted_s < base.predicted_s);
        let mut p = base.clone();
        apply_split(&mut p, &[50; 10], Split::Gpu, Some(&[0, 9]), rates).unwrap();
        assert_eq!((p.tiers[0], p.tiers[9]), (Tier::Cpu, Tier::Cpu));
        assert!(apply_split(&mut p, &[50; 10], Split::Gpu, Some(&[10]), rates).is_err());
        assert_eq!("auto".parse::<Split>(), Ok(Split::Auto));
        assert!("both".parse::<Split>().is_err());
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
