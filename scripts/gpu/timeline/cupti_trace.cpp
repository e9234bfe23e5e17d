// CUPTI injection library for scripts/gpu/timeline.sh: the driver loads it into the traced
// process (CUDA_INJECTION64_PATH) and calls InitializeInjection; it records every kernel's and
// copy's start and end on the GPU (and, with TL_API set, every driver call on the host) and
// writes them as CSV to $TL_OUT when the process exits. KREC and MREC name the newest kernel
// and memcpy record structs of the installed CUPTI (timeline.sh finds them in its headers).
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static std::vector<std::string> g_rows;

static void CUPTIAPI buffer_requested(uint8_t** buf, size_t* size, size_t* max_records) {
    *size = 8u << 20;
    *buf = static_cast<uint8_t*>(aligned_alloc(8, *size));
    *max_records = 0;
}

static void add_row(unsigned long long start, unsigned long long end, const char* name,
                    int gx, int gy, int gz) {
    char line[640];
    snprintf(line, sizeof line, "%llu,%llu,%s,%d,%d,%d\n", start, end, name, gx, gy, gz);
    g_rows.emplace_back(line);
}

static void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buf, size_t, size_t valid) {
    CUpti_Activity* r = nullptr;
    while (cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL ||
            r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            const auto* k = reinterpret_cast<const KREC*>(r);
            add_row(k->start, k->end, k->name, k->gridX, k->gridY, k->gridZ);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const auto* m = reinterpret_cast<const MREC*>(r);
            char name[64];
            snprintf(name, sizeof name, "MEMCPY%d_%llu", static_cast<int>(m->copyKind),
                     static_cast<unsigned long long>(m->bytes));
            add_row(m->start, m->end, name, 0, 0, 0);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_DRIVER) {
            const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(r);
            const char* fn = "?";
            cuptiGetCallbackName(CUPTI_CB_DOMAIN_DRIVER_API, a->cbid, &fn);
            const std::string name = std::string("API_") + fn;
            add_row(a->start, a->end, name.c_str(), 0, 0, 0);
        }
    }
    free(buf);
}

static void write_rows() {
    cuptiActivityFlushAll(1);
    const char* path = getenv("TL_OUT");
    FILE* f = fopen(path ? path : "timeline.csv", "w");
    if (!f) return;
    fputs("start,end,name,gx,gy,gz\n", f);
    for (const auto& row : g_rows) fputs(row.c_str(), f);
    fclose(f);
}

extern "C" int InitializeInjection(void) {
    cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
    if (getenv("TL_API")) cuptiActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER);
    atexit(write_rows);
    return 1;
}
