// Activation quantization, dequant-fused matrix-vector products and row lookups.
