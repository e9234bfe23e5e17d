/*
 * stream_checksum: stream every layer of a GGUF model through libllmstream's C ABI and print a
 * CRC-32 per layer and over all layers.
 *
 *   stream_checksum [--backend auto|cuda|host] MODEL.gguf
 *
 * Layers are loaded with the asynchronous API into two library-allocated device buffers
 * (double buffering: layer i+1 streams while layer i is checksummed). Device memory that the
 * CPU cannot address is copied back with lls_buffer_copy_to_host. Output (stdout):
 *
 *   layer N offset O size S crc32 XXXXXXXX
 *   total crc32 XXXXXXXX bytes B
 *
 * scripts/checksum_layers.py prints the same from the file with Python's zlib and the gguf
 * package; CI compares the two.
 */
#include "llmstream.h"
#include "llmstream.h" /* twice on purpose: the include guard must hold */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CRC-32 as zlib computes it: reflected polynomial 0xEDB88320, initial and final XOR ~0. */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[i] = c;
    }
}

/* Continue `crc` (0 to start) over `n` bytes, like zlib's crc32(crc, p, n). */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc = crc_table[(crc ^ *p++) & 0xffu] ^ (crc >> 8);
    }
    return ~crc;
}

/* Print the failed call, its status and the library's message, and exit. */
#define CHECK(call)                                                                    \
    do {                                                                               \
        lls_status st_ = (call);                                                       \
        if (st_ != LLS_STATUS_OK) {                                                    \
            fprintf(stderr, "stream_checksum: %s failed: %s: %s\n", #call,             \
                    lls_status_name(st_), lls_last_error());                           \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static void usage(void) {
    fprintf(stderr, "usage: stream_checksum [--backend auto|cuda|host] MODEL.gguf\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *path = NULL;
    const char *backend = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            backend = argv[++i];
        } else if (argv[i][0] == '-' || path != NULL) {
            usage();
        } else {
            path = argv[i];
        }
    }
    if (path == NULL) {
        usage();
    }
    if (lls_abi_version() != LLMSTREAM_ABI_VERSION) {
        fprintf(stderr, "stream_checksum: built for ABI %d, library has ABI %" PRIu32 "\n",
                LLMSTREAM_ABI_VERSION, lls_abi_version());
        return 1;
    }

    lls_config cfg;
    CHECK(lls_config_from_env(&cfg));
    if (backend != NULL) {
        if (strcmp(backend, "auto") == 0) {
            cfg.backend = LLS_BACKEND_AUTO;
        } else if (strcmp(backend, "cuda") == 0) {
            cfg.backend = LLS_BACKEND_CUDA;
        } else if (strcmp(backend, "host") == 0) {
            cfg.backend = LLS_BACKEND_HOST;
        } else {
            usage();
        }
    }

    lls_context *ctx = NULL;
    CHECK(lls_context_new(&cfg, &ctx));
    lls_model *model = NULL;
    CHECK(lls_model_open(ctx, path, &model));

    size_t n_layers = lls_model_layer_count(model);
    if (n_layers == 0) {
        fprintf(stderr, "stream_checksum: %s has no layers\n", path);
        return 1;
    }
    uint64_t max_size = 0;
    for (size_t i = 0; i < n_layers; i++) {
        uint64_t off, size;
        bool contiguous;
        CHECK(lls_model_layer_span(model, i, &off, &size, &contiguous));
        if (size > max_size) {
            max_size = size;
        }
    }
    if (max_size > SIZE_MAX) {
        fprintf(stderr, "stream_checksum: a layer does not fit in memory\n");
        return 1;
    }

    lls_buffer *bufs[2] = {NULL, NULL};
    CHECK(lls_buffer_alloc(ctx, LLS_BUFFER_KIND_DEVICE, (size_t)max_size, &bufs[0]));
    CHECK(lls_buffer_alloc(ctx, LLS_BUFFER_KIND_DEVICE, (size_t)max_size, &bufs[1]));
    /* Host memory for device buffers the CPU cannot read (CUDA VRAM). */
    uint8_t *host = NULL;
    if (lls_buffer_host_ptr(bufs[0]) == NULL || lls_buffer_host_ptr(bufs[1]) == NULL) {
        host = malloc((size_t)max_size);
        if (host == NULL) {
            fprintf(stderr, "stream_checksum: out of host memory\n");
            return 1;
        }
    }

    crc_init();
    uint32_t total = 0;
    uint64_t total_bytes = 0;
    lls_request *reads[2] = {NULL, NULL};
    CHECK(lls_model_load_layer_async(ctx, model, 0, bufs[0], 0, &reads[0]));
    for (size_t i = 0; i < n_layers; i++) {
        size_t cur = i % 2, next = (i + 1) % 2;
        if (i + 1 < n_layers) {
            /* bufs[next] held layer i-1, which was checksummed in the previous round. */
            CHECK(lls_model_load_layer_async(ctx, model, i + 1, bufs[next], 0, &reads[next]));
        }
        CHECK(lls_request_wait(reads[cur]));
        lls_request_free(reads[cur]);
        reads[cur] = NULL;

        uint64_t off, size;
        bool contiguous;
        CHECK(lls_model_layer_span(model, i, &off, &size, &contiguous));
        const uint8_t *bytes = lls_buffer_host_ptr(bufs[cur]);
        if (bytes == NULL) {
            CHECK(lls_buffer_copy_to_host(bufs[cur], 0, host, (size_t)size));
            bytes = host;
        }
        uint32_t crc = crc_update(0, bytes, (size_t)size);
        total = crc_update(total, bytes, (size_t)size);
        total_bytes += size;
        printf("layer %zu offset %" PRIu64 " size %" PRIu64 " crc32 %08" PRIx32 "\n", i, off,
               size, crc);
    }
    printf("total crc32 %08" PRIx32 " bytes %" PRIu64 "\n", total, total_bytes);

    lls_stats stats;
    CHECK(lls_context_stats(ctx, &stats));
    fprintf(stderr,
            "stream_checksum: backend %s, engine %" PRIu32 ", %" PRIu64 " requests, %" PRIu64
            " bytes direct, %" PRIu64 " buffered, %" PRIu64 " fallbacks\n",
            stats.backend == LLS_BACKEND_CUDA ? "cuda" : "host", (uint32_t)stats.engine,
            stats.requests, stats.bytes_direct, stats.bytes_buffered, stats.fallbacks);
    for (uint64_t f = 0; f < stats.fallbacks; f++) {
        char text[512];
        size_t n;
        if (lls_context_fallback(ctx, (size_t)f, text, sizeof text, &n) == LLS_STATUS_OK) {
            fprintf(stderr, "stream_checksum: fallback: %s\n", text);
        }
    }

    free(host);
    lls_buffer_free(bufs[0]);
    lls_buffer_free(bufs[1]);
    lls_model_free(model);
    lls_context_free(ctx);
    return 0;
}
