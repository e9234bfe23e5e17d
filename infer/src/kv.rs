//! The KV cache: per layer, keys and values of every position, in f16 (llama.cpp's default) or
//! f32.

use half::f16;

/// Element type of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half precision, as llama.cpp stores it by default.
    #[default]
    F16,
    /// Single precision.
    F32,
}

#[derive(Debug)]
enum Store {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Store {
    fn new(ty: KvType, n: usize) -> Self {
        match ty {
            KvType::F16 => Store::F16(vec![f16::ZERO; n]),
            KvType::F32 => Store::F32(vec![0.0; n]),
        }
    }

    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F16(v) => {
                for (d, &s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(s);
                }
            }
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
        }
    }

    /// Row `at..at+n` as f32 into `out`.
    fn read(&self, at: usize, out: &mut [f32]) {
        match self {
            Store::F16(v) => {
                let n = out.len();
                for (o, s) in out.iter_mut().zip(&v[at..at + n]) {
                    *o = s.to_f32();
                }
            }
            Store::F32(v) => out.copy_from_slice(&v[at..at + out.len()]),
        }
    }
}

/// Keys and values for `n_ctx` positions of every layer.
#[derive(Debug)]
pub struct KvCache {
    ty: KvType,
    n_ctx: usize,
    width: usize,
    k: Vec<Store>,
    v: Vec<Store>,
}

impl KvCache {
    /// A cache for `n_layer` layers, `n_ctx` positions, `width = n_head_kv * head_dim`.
    pub fn new(ty: KvType, n_layer: usize, n_ctx: usize, width: usize) -> Self {
        Self {
            ty,
            n_ctx,
            width,
            k: (0..n_layer)
                .map(|_| Store::new(ty, n_ctx * width))
                .collect(),
            v: (0..n_layer)
                .map(|_| Store::new(ty, n_ctx * width))
                .collect(),
        }
    }

    /// Element type.
    pub fn ty(&self) -> KvType {
        self.ty
    }

    /// Positions it holds.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Store the key and value rows of position `pos` of `layer`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        self.k[layer].write(pos * self.width, k);
        self.v[layer].write(pos * self.width, v);
    }

    /// Keys of positions `0..n` of `layer`, as f32 rows (`n * width`).
    pub fn keys(&self, layer: usize, n: usize, out: &mut [f32]) {
        self.k[layer].read(0, &mut out[..n * self.width]);
    }

    /// Values of positions `0..n` of `layer`, as f32 rows (`n * width`).
    pub fn values(&self, layer: usize, n: usize, out: &mut [f32]) {
        self.v[layer].read(0, &mut out[..n * self.width]);
    }
}
