/* What recpack's libFuzzer targets share (tools/fuzz.sh builds and runs them).
 *
 * Each target compiles the C file it fuzzes into itself with RECPACK_WITHOUT_PYTHON (no bindings, no
 * Python), so it calls the same static functions the extension module's bindings call.  A target's
 * parameters (crop box, DCT scale, sizes, quality) come from the first bytes of its input, big-endian,
 * in the layout its comment gives; the rest is the file.  tools/fuzz/seeds.py writes seeds in those
 * layouts.
 */
#ifndef RECPACK_FUZZ_H
#define RECPACK_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

struct fuzz_input {
    const uint8_t *data;
    size_t size;
};

/* The next `bytes` bytes (1 to 4) as a big-endian number, 0 past the end of the input. */
static uint32_t take(struct fuzz_input *input, int bytes) {
    uint32_t value = 0;
    while (bytes-- > 0) {
        value = value << 8 | (input->size ? *input->data : 0);
        if (input->size)
            input->data++, input->size--;
    }
    return value;
}

/* A promise of the code under test that this input breaks: a finding like a crash (libFuzzer keeps the
 * input). */
#define REQUIRE(condition, ...)                                                                              \
    do {                                                                                                     \
        if (!(condition)) {                                                                                  \
            fprintf(stderr, "recpack fuzz: broken promise: " __VA_ARGS__);                                   \
            fputc('\n', stderr);                                                                             \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

/* The most a target allocates for pixels the caller would allocate (the Python bindings' bytearrays). */
#define MAX_CALLER_BYTES ((size_t)64 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
