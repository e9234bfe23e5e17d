// Element-wise ops, normalisation, RoPE, KV cache, attention, sampling.
