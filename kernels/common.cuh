// Shared helpers for every llmstream kernel. Compiled at run time by NVRTC with no include
// paths: nothing here may #include a system or CUDA header.
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;

// IEEE half <-> float through PTX (no cuda_fp16.h under NVRTC without headers).
__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
// bfloat16 <-> float (round to nearest even, NaN kept quiet), as ggml does.
__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f2bf(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 64);
    return (u16)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Programmatic dependent launch (sm_90+; no-ops before, and when the launch did not ask for
// it). The host launches the decode kernels with the attribute that lets a kernel's blocks
// start while the kernel before it in the stream finishes; such a kernel must call pdl_wait()
// before it reads anything an earlier kernel wrote or writes anything one reads, and then
// pdl_launch() lets the next kernel's blocks start. Until pdl_wait() a kernel may only read
// memory no kernel in flight writes (weights: fast.cu loads a row's first step there). The
// kernels that do this are listed in infer/src/gpu/ops/launch.rs (PDL_KERNELS).
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
