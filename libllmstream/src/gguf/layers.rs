//! Grouping of tensors into layers.
//!
//! A tensor belongs to layer `N` when its name is `blk.N.REST` with `N` written in canonical
//! decimal (digits only, no sign, no leading zero except `0` itself) and `REST` non-empty.
//! Every other name (`token_embd.weight`, `blk.01.x`, `blk.3`, `blkx.1.y` ...) is a global.
//! `N` must be below [`MAX_LAYERS`] ([`GgufError::LayerIndexTooLarge`] otherwise), and the
//! layers present must be `0..L` without holes ([`GgufError::MissingLayer`] otherwise), so that
//! `layers[i].index == i`.

use super::{GgufError, GgufFile, Layer, TensorInfo, MAX_LAYERS};

/// How a tensor name relates to the layers.
#[derive(Debug, PartialEq)]
enum LayerName {
    Layer(u32),
    Global,
    TooLarge,
}

fn layer_of(name: &str) -> LayerName {
    let Some((num, rest)) = name
        .strip_prefix("blk.")
        .and_then(|tail| tail.split_once('.'))
    else {
        return LayerName::Global;
    };
    let canonical = !num.is_empty()
        && !rest.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
        && (num == "0" || !num.starts_with('0'));
    if !canonical {
        return LayerName::Global;
    }
    match num.parse::<u32>() {
        Ok(n) if n < MAX_LAYERS => LayerName::Layer(n),
        _ => LayerName::TooLarge,
    }
}

/// Split `tensors` (already checked not to overlap) into layers and globals.
pub(super) fn group(tensors: &[TensorInfo]) -> Result<(Vec<Layer>, Vec<usize>), GgufError> {
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut globals = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        match layer_of(&t.name) {
            LayerName::Global => globals.push(i),
            LayerName::TooLarge => {
                return Err(GgufError::LayerIndexTooLarge {
                    tensor: i,
                    name: t.name.clone(),
                    max: MAX_LAYERS,
                })
            }
            LayerName::Layer(n) => {
                // `n < MAX_LAYERS`, so this allocates at most 65536 empty vectors.
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if members.len() <= n {
                    members.resize_with(n.saturating_add(1), Vec::new);
                }
                if let Some(m) = members.get_mut(n) {
                    m.push(i);
                }
            }
        }
    }
    let highest = u32::try_from(members.len().saturating_sub(1)).unwrap_or(u32::MAX);
    if let Some(missing) = members.iter().position(Vec::is_empty) {
        return Err(GgufError::MissingLayer {
            missing: u32::try_from(missing).unwrap_or(u32::MAX),
            highest,
        });
    }

    // Rank of each tensor in file-offset order: a layer is contiguous when its tensors have
    // consecutive ranks, since tensors do not overlap and none is empty.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors.get(i).map_or(u64::MAX, |t| t.offset));
    let mut rank = vec![0usize; tensors.len()];
    for (r, &i) in order.iter().enumerate() {
        if let Some(slot) = rank.get_mut(i) {
            *slot = r;
        }
    }

    let mut layers = Vec::with_capacity(members.len());
    for (index, idx) in members.into_iter().enumerate() {
        let mut start = u64::MAX;
        let mut end = 0u64;
        let mut lo = usize::MAX;
        let mut hi = 0usize;
        for &i in &idx {
            if let Some(t) = tensors.get(i) {
                start = start.min(t.offset);
                end = end.max(t.offset.saturating_add(t.size));
            }
            let r = rank.get(i).copied().unwrap_or(0);
            lo = lo.min(r);
            hi = hi.max(r);
        }
        let contiguous = hi.checked_sub(lo).and_then(|d| d.checked_add(1)) == Some(idx.len());
        layers.push(Layer {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            tensors: idx,
            span: start..end,
            contiguous,
        });
    }
    Ok((layers, globals))
}

impl Layer {
    /// Bytes of the span (data, padding and, when not contiguous, foreign tensors).
    pub fn byte_len(&self) -> u64 {
        self.span.end.saturating_sub(self.span.start)
    }

    /// Offset of tensor `tensor` (an index into [`GgufFile::tensors`]) inside a buffer holding
    /// this layer's span, or `None` when the tensor is not in this layer.
    pub fn tensor_offset(&self, file: &GgufFile, tensor: usize) -> Option<u64> {
        if !self.tensors.contains(&tensor) {
            return None;
        }
        file.tensors
            .get(tensor)
            .and_then(|t| t.offset.checked_sub(self.span.start))
    }

    /// This layer's tensors with their offsets inside a buffer holding the span, in file order.
    pub fn tensor_views<'a>(
        &'a self,
        file: &'a GgufFile,
    ) -> impl Iterator<Item = (&'a TensorInfo, u64)> + 'a {
        self.tensors.iter().filter_map(move |&i| {
            let t = file.tensors.get(i)?;
            Some((t, t.offset.checked_sub(self.span.start)?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_are_parsed_strictly() {
        assert_eq!(layer_of("blk.0.attn_q.weight"), LayerName::Layer(0));
        assert_eq!(layer_of("blk.29.ffn_up.weight"), LayerName::Layer(29));
        assert_eq!(layer_of("blk.65535.x"), LayerName::Layer(65535));
        assert_eq!(layer_of("blk.65536.x"), LayerName::TooLarge);
        assert_eq!(layer_of("blk.99999999999999999999.x"), LayerName::TooLarge);
        for global in [
            "token_embd.weight",
            "blk.01.x",
            "blk.+1.x",
            "blk.-1.x",
            "blk.1",
            "blk.1.",
            "blk..x",
            "blk.a.x",
            "blkx.1.y",
            "output.weight",
        ] {
            assert_eq!(layer_of(global), LayerName::Global, "{global}");
        }
    }
}
