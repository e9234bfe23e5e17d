/*
 * errors: exercise the error paths of libllmstream's C ABI.
 *
 *   errors MODEL.gguf
 *
 * Checks NULL arguments (LLS_STATUS_NULL_POINTER with a message naming the argument, outputs
 * untouched), missing and damaged files, invalid UTF-8, bad configurations, out-of-range reads,
 * lls_*_free(NULL), message buffers that are too small, the per-thread last error, versions, and
 * model metadata getters on MODEL. Prints one line per failed check and exits 1 if any failed.
 */
#define _POSIX_C_SOURCE 200809L /* mkstemp, unlink, write, pthreads under -std=c11 */

#include "llmstream.h"
#include "llmstream.h" /* twice on purpose: the include guard must hold */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int checks = 0;
static int failures = 0;

#define EXPECT(cond)                                                                   \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            failures++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__,   \
                    #cond, lls_last_error());                                          \
        }                                                                              \
    } while (0)

/* The call returns `want` and, for a failure, leaves a non-empty message. */
#define EXPECT_STATUS(call, want)                                                      \
    do {                                                                               \
        lls_status got_ = (call);                                                      \
        checks++;                                                                      \
        if (got_ != (want)) {                                                          \
            failures++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s returned %s, expected %s (%s)\n", __FILE__, \
                    __LINE__, #call, lls_status_name(got_), lls_status_name(want),     \
                    lls_last_error());                                                 \
        } else if ((want) != LLS_STATUS_OK && lls_last_error()[0] == '\0') {           \
            failures++;                                                                \
            fprintf(stderr, "FAIL %s:%d: %s left no message\n", __FILE__, __LINE__,    \
                    #call);                                                            \
        }                                                                              \
    } while (0)

static int contains(const char *haystack, const char *needle) {
    return strstr(haystack, needle) != NULL;
}

/* Write `n` bytes of `data` to a new temporary file; its path goes to `path` (PATH_MAX). */
static void temp_file(char *path, size_t path_len, const void *data, size_t n) {
    snprintf(path, path_len, "/tmp/lls-errors-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, data, n) != (ssize_t)n || close(fd) != 0) {
        perror("temp file");
        exit(1);
    }
}

static void *other_thread(void *arg) {
    (void)arg;
    /* The main thread has a pending error; this thread has none. */
    return (void *)(lls_last_error()[0] == '\0' ? (void *)1 : NULL);
}

static void versions(void) {
    EXPECT(lls_abi_version() == LLMSTREAM_ABI_VERSION);
    EXPECT(strcmp(lls_version(), LLMSTREAM_VERSION) == 0);
    EXPECT(strcmp(lls_status_name(LLS_STATUS_NULL_POINTER), "LLS_STATUS_NULL_POINTER") == 0);
    EXPECT(strcmp(lls_status_name(12345), "LLS_STATUS_UNKNOWN") == 0);
}

static void null_arguments(lls_context *ctx) {
    EXPECT_STATUS(lls_context_new(NULL, NULL), LLS_STATUS_NULL_POINTER);
    EXPECT(contains(lls_last_error(), "out"));

    lls_model *sentinel = (lls_model *)&checks;
    lls_model *model = sentinel;
    EXPECT_STATUS(lls_model_open(ctx, NULL, &model), LLS_STATUS_NULL_POINTER);
    EXPECT(contains(lls_last_error(), "path"));
    EXPECT(model == sentinel);
    EXPECT_STATUS(lls_model_open(NULL, "/nonexistent", &model), LLS_STATUS_NULL_POINTER);
    EXPECT(contains(lls_last_error(), "ctx"));
    EXPECT(model == sentinel);

    EXPECT_STATUS(lls_request_wait(NULL), LLS_STATUS_NULL_POINTER);
    EXPECT_STATUS(lls_context_stats(ctx, NULL), LLS_STATUS_NULL_POINTER);
    EXPECT_STATUS(lls_buffer_copy_to_host(NULL, 0, &checks, 1), LLS_STATUS_NULL_POINTER);

    /* The last error is per thread. */
    pthread_t t;
    void *clean = NULL;
    EXPECT(pthread_create(&t, NULL, other_thread, NULL) == 0);
    EXPECT(pthread_join(t, &clean) == 0);
    EXPECT(clean != NULL);

    /* A successful call clears it. */
    lls_backend backend;
    EXPECT_STATUS(lls_context_backend(ctx, &backend), LLS_STATUS_OK);
    EXPECT(lls_last_error()[0] == '\0');

    /* Freeing NULL is a no-op. */
    lls_context_free(NULL);
    lls_source_free(NULL);
    lls_model_free(NULL);
    lls_buffer_free(NULL);
    lls_request_free(NULL);
}

static void message_buffers(lls_context *ctx) {
    EXPECT_STATUS(lls_model_open(ctx, "/nonexistent/model.gguf", NULL),
                  LLS_STATUS_NULL_POINTER);
    lls_model *model = NULL;
    EXPECT_STATUS(lls_model_open(ctx, "/nonexistent/model.gguf", &model), LLS_STATUS_OPEN);
    EXPECT(contains(lls_last_error(), "/nonexistent/model.gguf"));
    EXPECT(model == NULL);

    /* Too small: the size comes back, the buffer and the last error stay as they were. */
    char small[8];
    memset(small, 'x', sizeof small);
    size_t n = 0;
    EXPECT_STATUS(lls_error_message(LLS_STATUS_OPEN, small, sizeof small, &n),
                  LLS_STATUS_BUFFER_TOO_SMALL);
    size_t want = strlen(lls_last_error());
    EXPECT(n == want);
    EXPECT(small[0] == 'x');
    EXPECT(contains(lls_last_error(), "/nonexistent/model.gguf"));

    /* Size query with a NULL buffer, then the real call. */
    EXPECT_STATUS(lls_error_message(LLS_STATUS_OPEN, NULL, 0, &n), LLS_STATUS_BUFFER_TOO_SMALL);
    EXPECT(n == want);
    char *text = malloc(n + 1);
    EXPECT_STATUS(lls_error_message(LLS_STATUS_OPEN, text, n + 1, &n), LLS_STATUS_OK);
    EXPECT(strcmp(text, lls_last_error()) == 0);
    free(text);

    /* Another code gets its generic description. */
    char generic[128];
    EXPECT_STATUS(lls_error_message(LLS_STATUS_BUSY, generic, sizeof generic, &n),
                  LLS_STATUS_OK);
    EXPECT(n == strlen(generic) && n > 0);
    EXPECT_STATUS(lls_error_message(LLS_STATUS_OPEN, generic, sizeof generic, NULL),
                  LLS_STATUS_NULL_POINTER);
}

static void bad_inputs(lls_context *ctx, const char *model_path) {
    char path[64];
    /* Invalid UTF-8 in a path. */
    lls_source *src = NULL;
    EXPECT_STATUS(lls_source_open(ctx, "/tmp/\xff\xfe", &src), LLS_STATUS_INVALID_UTF8);

    /* A damaged GGUF: the right magic, then garbage. */
    static const unsigned char damaged[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0xff, 0xff, 0xff,
                                            0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4};
    temp_file(path, sizeof path, damaged, sizeof damaged);
    lls_model *model = NULL;
    EXPECT_STATUS(lls_model_open(ctx, path, &model), LLS_STATUS_INVALID_GGUF);
    EXPECT(model == NULL);
    unlink(path);

    /* A truncated copy of the real model's head. */
    FILE *f = fopen(model_path, "rb");
    static unsigned char head[4096];
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) {
        fclose(f);
    }
    EXPECT(got == sizeof head);
    temp_file(path, sizeof path, head, got);
    EXPECT_STATUS(lls_model_open(ctx, path, &model), LLS_STATUS_INVALID_GGUF);
    EXPECT(model == NULL);

    /* Reads beyond the end of a file, or of a buffer. */
    EXPECT_STATUS(lls_source_open(ctx, path, &src), LLS_STATUS_OK);
    EXPECT(lls_source_len(src) == sizeof head);
    lls_buffer *buf = NULL;
    EXPECT_STATUS(lls_buffer_alloc(ctx, 99, 4096, &buf), LLS_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(lls_buffer_alloc(ctx, LLS_BUFFER_KIND_HOST, 4096, &buf), LLS_STATUS_OK);
    EXPECT_STATUS(lls_read(ctx, src, 4000, 4000, buf, 0), LLS_STATUS_OUT_OF_RANGE);
    EXPECT_STATUS(lls_read(ctx, src, 0, 4096, buf, 1), LLS_STATUS_INVALID_ARGUMENT);
    EXPECT_STATUS(lls_read(ctx, src, 0, 4096, buf, 0), LLS_STATUS_OK);
    EXPECT(memcmp(lls_buffer_host_ptr(buf), head, sizeof head) == 0);
    unsigned char back[16];
    EXPECT_STATUS(lls_buffer_copy_to_host(buf, 4090, back, sizeof back),
                  LLS_STATUS_INVALID_ARGUMENT);
    lls_buffer_free(buf);
    lls_source_free(src);
    unlink(path);

    /* Bad configurations. */
    lls_config cfg;
    EXPECT_STATUS(lls_config_default(&cfg), LLS_STATUS_OK);
    EXPECT(cfg.struct_size == sizeof cfg);
    lls_context *other = NULL;
    lls_config bad = cfg;
    bad.backend = 7;
    EXPECT_STATUS(lls_context_new(&bad, &other), LLS_STATUS_INVALID_CONFIG);
    bad = cfg;
    bad.struct_size = 0;
    EXPECT_STATUS(lls_context_new(&bad, &other), LLS_STATUS_INVALID_CONFIG);
    bad = cfg;
    bad.request_size = 3000;
    EXPECT_STATUS(lls_context_new(&bad, &other), LLS_STATUS_INVALID_CONFIG);
    EXPECT(other == NULL);
}

static void model_metadata(lls_context *ctx, const char *model_path) {
    lls_model *model = NULL;
    EXPECT_STATUS(lls_model_open(ctx, model_path, &model), LLS_STATUS_OK);
    if (model == NULL) {
        return;
    }
    char text[64];
    size_t n = 0;
    EXPECT_STATUS(lls_model_meta_string(model, "general.architecture", text, sizeof text, &n),
                  LLS_STATUS_OK);
    EXPECT(strcmp(text, "llama") == 0 && n == 5);
    EXPECT_STATUS(lls_model_meta_string(model, "general.architecture", text, 5, &n),
                  LLS_STATUS_BUFFER_TOO_SMALL);
    EXPECT(n == 5);
    uint64_t blocks = 0;
    EXPECT_STATUS(lls_model_meta_u64(model, "llama.block_count", &blocks), LLS_STATUS_OK);
    EXPECT(blocks == lls_model_layer_count(model) && blocks > 0);
    int64_t blocks_signed = 0;
    EXPECT_STATUS(lls_model_meta_i64(model, "llama.block_count", &blocks_signed),
                  LLS_STATUS_OK);
    EXPECT(blocks_signed == (int64_t)blocks);
    double eps = 0;
    EXPECT_STATUS(lls_model_meta_f64(model, "llama.attention.layer_norm_rms_epsilon", &eps),
                  LLS_STATUS_OK);
    EXPECT(eps > 0 && eps < 1e-3);
    EXPECT_STATUS(lls_model_meta_u64(model, "general.architecture", &blocks),
                  LLS_STATUS_TYPE_MISMATCH);
    EXPECT_STATUS(lls_model_meta_u64(model, "no.such.key", &blocks), LLS_STATUS_NOT_FOUND);
    lls_meta_type type;
    EXPECT_STATUS(lls_model_meta_type(model, "tokenizer.ggml.tokens", &type), LLS_STATUS_OK);
    EXPECT(type == LLS_META_TYPE_ARRAY);
    EXPECT(lls_model_meta_count(model) > 0);
    EXPECT_STATUS(lls_model_meta_key(model, 0, text, sizeof text, &n), LLS_STATUS_OK);
    EXPECT_STATUS(lls_model_meta_key(model, lls_model_meta_count(model), text, sizeof text, &n),
                  LLS_STATUS_INVALID_ARGUMENT);

    size_t idx = 0;
    EXPECT_STATUS(lls_model_find_tensor(model, "blk.0.attn_q.weight", &idx), LLS_STATUS_OK);
    lls_tensor_info info;
    EXPECT_STATUS(lls_model_tensor_info(model, idx, &info), LLS_STATUS_OK);
    EXPECT(strcmp(info.name, "blk.0.attn_q.weight") == 0);
    EXPECT(info.name_len == strlen("blk.0.attn_q.weight"));
    EXPECT(info.layer == 0 && info.n_dims == 2 && info.size > 0);
    EXPECT_STATUS(lls_model_find_tensor(model, "token_embd.weight", &idx), LLS_STATUS_OK);
    EXPECT_STATUS(lls_model_tensor_info(model, idx, &info), LLS_STATUS_OK);
    EXPECT(info.layer == -1);
    EXPECT_STATUS(lls_model_find_tensor(model, "blk.999.x", &idx), LLS_STATUS_NOT_FOUND);
    EXPECT_STATUS(lls_model_tensor_info(model, lls_model_tensor_count(model), &info),
                  LLS_STATUS_INVALID_ARGUMENT);

    uint64_t off, size;
    bool contiguous;
    EXPECT_STATUS(lls_model_layer_span(model, 0, &off, &size, NULL), LLS_STATUS_NULL_POINTER);
    EXPECT_STATUS(lls_model_layer_span(model, lls_model_layer_count(model), &off, &size,
                                       &contiguous),
                  LLS_STATUS_INVALID_ARGUMENT);
    lls_buffer *layer = NULL;
    EXPECT_STATUS(lls_model_load_layer_alloc(ctx, model, 0, LLS_BUFFER_KIND_HOST, &layer),
                  LLS_STATUS_OK);
    EXPECT_STATUS(lls_model_layer_span(model, 0, &off, &size, &contiguous), LLS_STATUS_OK);
    EXPECT(lls_buffer_len(layer) == size && contiguous);
    /* Too small a destination is refused before anything is queued. */
    lls_request *read = NULL;
    EXPECT_STATUS(lls_model_load_layer_async(ctx, model, 1, layer, 1, &read),
                  LLS_STATUS_INVALID_ARGUMENT);
    EXPECT(read == NULL);
    lls_buffer_free(layer);
    lls_model_free(model);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: errors MODEL.gguf\n");
        return 2;
    }
    lls_context *ctx = NULL;
    if (lls_context_new(NULL, &ctx) != LLS_STATUS_OK) {
        fprintf(stderr, "errors: lls_context_new: %s\n", lls_last_error());
        return 1;
    }
    versions();
    null_arguments(ctx);
    message_buffers(ctx);
    bad_inputs(ctx, argv[1]);
    model_metadata(ctx, argv[1]);
    lls_context_free(ctx);
    printf("errors: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
