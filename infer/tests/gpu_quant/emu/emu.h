// Minimal CUDA emulator for kernels/quant.cu, so that the kernels' logic is checked against the
// CPU engine on machines without a GPU (tests/gpu_quant.rs, emulated_kernels_match_cpu).
// One CTA at a time, each CUDA thread a fiber (ucontext); barriers, warp shuffles and ballots
// are cooperative; a cp.async copy lands only when its thread waits for its group (so a missing
// wait reads stale shared memory, filled with 0xCD); device buffers and shared memory end at
// guard pages and cp.async sources are checked against the allocations; f32 operations return
// the GPU's canonical NaN. It checks the kernels' index math, synchronisation and numerics; it
// says nothing about speed, and not everything about the hardware (memory model, PTX).
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <functional>
#include <ucontext.h>
#include <sys/mman.h>
#include <unistd.h>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __align__(n) alignas(n)
#define __restrict__ __restrict
#define LSQ_EMU 1

struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
struct Dim3 { unsigned x, y, z; };

namespace emu {
struct Copy { unsigned char* dst; const unsigned char* src; unsigned n; };
struct Thread {
  ucontext_t ctx; Dim3 tid3; int tid; bool done, waiting;
  int wait_kind; long wait_gen;  // blocked at the CTA barrier (1) or its warp's (2) of this generation
  unsigned exchanges;            // warp exchanges done (the slot parity of the next one)
  std::vector<Copy> open; std::vector<std::vector<Copy>> groups;
};
inline Thread* cur; inline ucontext_t sched;
inline Dim3 block_idx, block_dim, grid_dim;
inline std::vector<Thread> threads;
inline int alive; inline long bar_gen; inline int bar_count;
inline int walive[32]; inline long wgen[32]; inline int wcount[32];
inline uint64_t wslot[2][32][32];
inline unsigned char* dyn_smem; inline size_t dyn_smem_size;
inline std::function<void()> body;
inline long progress;
inline std::vector<std::pair<const unsigned char*, size_t>> allocs;
inline std::vector<char*> stacks;
constexpr size_t STACK = 256 * 1024;

[[noreturn]] inline void die(const char* m) { fprintf(stderr, "EMU ERROR: %s\n", m); abort(); }
inline void yield() { swapcontext(&cur->ctx, &sched); }
inline void release_checks() {
  if (bar_count > 0 && bar_count >= alive) { bar_count = 0; bar_gen++; progress++; }
  for (int w = 0; w < 32; w++)
    if (wcount[w] > 0 && wcount[w] >= walive[w]) { wcount[w] = 0; wgen[w]++; progress++; }
}
inline void syncthreads() {
  long g = bar_gen; bar_count++; release_checks();
  cur->waiting = true; cur->wait_kind = 1; cur->wait_gen = g;
  while (bar_gen == g) yield();
  cur->waiting = false; cur->wait_kind = 0;
}
inline void warpbar() {
  int w = cur->tid / 32; long g = wgen[w]; wcount[w]++; release_checks();
  cur->waiting = true; cur->wait_kind = 2; cur->wait_gen = g;
  while (wgen[w] == g) yield();
  cur->waiting = false; cur->wait_kind = 0;
}
inline bool blocked(const Thread& t) {
  if (t.wait_kind == 1) return bar_gen == t.wait_gen;
  if (t.wait_kind == 2) return wgen[t.tid / 32] == t.wait_gen;
  return false;
}
inline void trampoline() {
  body();
  if (!cur->open.empty()) die("cp.async issued but never committed");
  for (auto& g : cur->groups) if (!g.empty()) die("cp.async group never waited for");
  cur->done = true; alive--; walive[cur->tid / 32]--; progress++;
  release_checks();
  swapcontext(&cur->ctx, &sched);
}
inline void run_cta(unsigned n) {
  if (stacks.size() < n) for (size_t i = stacks.size(); i < n; i++) stacks.push_back((char*)malloc(STACK));
  threads.assign(n, Thread{});
  alive = (int)n; bar_gen = 0; bar_count = 0;
  for (int w = 0; w < 32; w++) { walive[w] = 0; wgen[w] = 0; wcount[w] = 0; }
  for (unsigned i = 0; i < n; i++) {
    Thread& t = threads[i]; t.tid = (int)i; t.tid3 = {i, 0, 0}; t.done = false; t.waiting = false;
    t.wait_kind = 0; t.wait_gen = 0; t.exchanges = 0;
    walive[i / 32]++;
    getcontext(&t.ctx); t.ctx.uc_stack.ss_sp = stacks[i]; t.ctx.uc_stack.ss_size = STACK; t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, trampoline, 0);
  }
  for (;;) {
    bool any = false, ran = false;
    for (unsigned i = 0; i < n; i++) {
      Thread& t = threads[i]; if (t.done) continue; any = true;
      if (blocked(t)) continue;
      ran = true;
      cur = &t; swapcontext(&sched, &t.ctx);
    }
    if (!any) break;
    if (!ran) die("deadlock: every live thread waits at a barrier");
  }
}
inline void launch(unsigned grid, unsigned block, size_t smem, std::function<void()> f) {
  body = std::move(f);
  block_dim = {block, 1, 1}; grid_dim = {grid, 1, 1};
  // shared memory ends at a guard page
  size_t len = (smem + 15) & ~size_t(15); size_t pg = 4096;
  size_t map = ((len + pg - 1) / pg + 1) * pg;
  unsigned char* m = (unsigned char*)mmap(nullptr, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mprotect(m + map - pg, pg, PROT_NONE);
  dyn_smem = m + map - pg - len; dyn_smem_size = smem;
  for (unsigned b = 0; b < grid; b++) {
    memset(dyn_smem, 0xCD, len);
    block_idx = {b, 0, 0};
    run_cta(block);
  }
  munmap(m, map);
}
// A device buffer of `len` bytes, 16-byte aligned, ending (rounded to 16) at a guard page.
inline unsigned char* dalloc(size_t len) {
  size_t l16 = (len + 15) & ~size_t(15); size_t pg = 4096;
  size_t map = ((l16 + pg - 1) / pg + 1) * pg;
  unsigned char* m = (unsigned char*)mmap(nullptr, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mprotect(m + map - pg, pg, PROT_NONE);
  unsigned char* p = m + map - pg - l16;
  memset(p, 0xEE, l16);
  allocs.push_back({p, len});
  return p;
}
inline void dfree_all() {
  for (auto& a : allocs) {
    size_t l16 = (a.second + 15) & ~size_t(15); size_t pg = 4096;
    size_t map = ((l16 + pg - 1) / pg + 1) * pg;
    munmap((void*)(a.first + l16 + pg - map), map);
  }
  allocs.clear();
}
inline bool in_alloc(const unsigned char* p, size_t n) {
  for (auto& a : allocs) if (p >= a.first && p + n <= a.first + a.second) return true;
  return false;
}
// Every lane publishes v; returns the 32 published values. Slots alternate between two banks,
// so one barrier suffices: a lane can only overwrite a bank after the next exchange's barrier,
// which every lane reaches after reading this one.
inline const uint64_t* exchange(uint64_t v) {
  int w = cur->tid / 32, l = cur->tid % 32; unsigned p = cur->exchanges++ & 1u;
  wslot[p][w][l] = v; warpbar();
  return wslot[p][w];
}
template <class T> inline T shfl_idx(T v, int src) {
  uint64_t s = 0; memcpy(&s, &v, sizeof(T));
  const uint64_t* all = exchange(s);
  T r; uint64_t o = all[src & 31]; memcpy(&r, &o, sizeof(T)); return r;
}
}  // namespace emu

#define threadIdx (emu::cur->tid3)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define LSQ_SMEM(name) unsigned char* name = emu::dyn_smem
#define LSQ_ALIGNED(p, n) \
  do { if ((uintptr_t)(p) % (n)) emu::die("misaligned load (the GPU faults on it)"); } while (0)

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warpbar(); }
template <class T> inline T __shfl_xor_sync(unsigned, T v, int o) { return emu::shfl_idx(v, (emu::cur->tid % 32) ^ o); }
template <class T> inline T __shfl_sync(unsigned, T v, int src) { return emu::shfl_idx(v, src); }
inline unsigned __ballot_sync(unsigned, int pred) {
  const uint64_t* all = emu::exchange(pred ? 1u : 0u);
  unsigned r = 0; for (int i = 0; i < 32; i++) r |= (unsigned)all[i] << i; return r;
}
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
// GPU NaN results are canonical (0x7fffffff): emulate that so the kernels' x86 NaN rules are exercised.
inline float gpu_canon(float r) { return std::isnan(r) ? __uint_as_float(0x7fffffffu) : r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return gpu_canon(r); }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return gpu_canon(r); }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return gpu_canon(r); }
inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return gpu_canon(r); }
inline float __fmaf_rn(float a, float b, float c) { volatile float r = std::fma(a, b, c); return gpu_canon(r); }
inline float __fsqrt_rn(float a) { volatile float r = std::sqrt(a); return gpu_canon(r); }
inline float __int2float_rn(int v) { return (float)v; }
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned sh) {
  uint64_t v = ((uint64_t)hi << 32) | lo; return (unsigned)(v >> (sh & 31));
}
inline int __dp4a(int a, int b, int c) {
  uint32_t acc = (uint32_t)c;
  for (int i = 0; i < 4; i++) acc += (uint32_t)((int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i)));
  return (int)acc;
}
template <class T> inline T __ldg(const T* p) { return *p; }
// per byte: signed saturated a - b
inline unsigned __vsubss4(unsigned a, unsigned b) {
  unsigned r = 0;
  for (int k = 0; k < 32; k += 8) {
    int d = (int)(signed char)(a >> k) - (int)(signed char)(b >> k);
    d = d < -128 ? -128 : d > 127 ? 127 : d;
    r |= (unsigned)(d & 0xff) << k;
  }
  return r;
}
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }

// ---- common.cuh, host versions
typedef unsigned char u8; typedef signed char i8; typedef unsigned short u16; typedef unsigned int u32;
typedef int i32; typedef unsigned long long u64;
inline float h2f(u16 h) {
  const u32 e = (h >> 10) & 31u, m = h & 0x3ffu;
  const float sign = (h & 0x8000u) ? -1.0f : 1.0f;
  if (e == 31u) return m ? __uint_as_float(0x7fffffffu) : sign * INFINITY;  // GPU: canonical NaN
  if (e == 0u) return sign * std::ldexp((float)m, -24);
  return sign * std::ldexp((float)(1024u + m), (int)e - 25);
}
// f32 -> f16, round to nearest even (what cvt.rn.f16.f32 does); NaN -> canonical 0x7fff.
inline u16 f2h(float f) {
  if (std::isnan(f)) return 0x7fff;
  const u32 sign = (__float_as_uint(f) >> 16) & 0x8000u;
  const float a = std::fabs(f);
  if (a >= 65520.0f) return (u16)(sign | 0x7c00u);
  if (a < 6.103515625e-05f) return (u16)(sign | (u32)std::nearbyint(std::ldexp(a, 24)));
  int e;
  std::frexp(a, &e);  // a = x * 2^e, x in [0.5, 1)
  e -= 1;             // a in [2^e, 2^(e+1))
  u32 q = (u32)std::nearbyint(std::ldexp(a, 10 - e));
  if (q == 2048u) { q = 1024u; e += 1; }
  if (e + 15 >= 31) return (u16)(sign | 0x7c00u);
  return (u16)(sign | ((u32)(e + 15) << 10) | (q - 1024u));
}
inline float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
inline u16 f2bf(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 64);
  return (u16)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}
inline float warp_sum(float v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
inline float warp_max(float v) { for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o)); return v; }
inline int warp_sum_i(int v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
// programmatic dependent launch (common.cuh): kernels run one after another here
inline void pdl_wait() {}
inline void pdl_launch() {}

// ---- cp.async
namespace lsq {
inline void cp16(u8* s, const u8* g, u32 n) {
  if (((uintptr_t)s & 15) || ((uintptr_t)g & 15)) emu::die("cp16 misaligned");
  if (n > 16) emu::die("cp16 n > 16");
  if (n && !emu::in_alloc(g, n)) emu::die("cp16 reads outside every allocation");
  if (s < emu::dyn_smem || s + 16 > emu::dyn_smem + ((emu::dyn_smem_size + 15) & ~size_t(15))) emu::die("cp16 writes outside shared memory");
  emu::cur->open.push_back({s, g, n});
}
inline void cp_commit() { emu::cur->groups.push_back(std::move(emu::cur->open)); emu::cur->open.clear(); }
template <int N> inline void cp_wait() {
  auto& gs = emu::cur->groups;
  while ((int)gs.size() > N) {
    for (auto& c : gs.front()) { memcpy(c.dst, c.src, c.n); memset(c.dst + c.n, 0, 16 - c.n); }
    gs.erase(gs.begin());
  }
}
}  // namespace lsq
