/* Fuzz target: _libjpeg.c's place() (place_jpeg), the reader's decode in YCbCr planes onto a canvas.
 *
 * Input: the source rectangle's left, top, width and height (4 bytes each, in sixteenths of a pixel),
 * eighths (1 byte, modulo 17), the target's width and height (2 bytes each, modulo 1025), the bytes
 * between its rows beyond its own (1 byte), flip (1 byte, bit 0), then the file.  The zeros are there to be
 * refused.  It must write only the target's bytes: the canvas's gaps between rows, and a guard after it,
 * keep their value. */
#define RECPACK_WITHOUT_PYTHON
#include "../_libjpeg.c"
#include "fuzz.h"

#define GUARD 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct fuzz_input input = {data, size};
    struct error_state error;
    double box[4];
    int i, taken = 0;
    for (i = 0; i < 4; i++)
        box[i] = take(&input, 4) / 16.0;
    unsigned int eighths = take(&input, 1) % 17, width = take(&input, 2) % 1025, height = take(&input, 2) % 1025;
    unsigned int gap = take(&input, 1), flip = take(&input, 1) & 1;
    size_t stride = (size_t)width * 3 + gap, bytes = stride * height + GUARD, at;
    if (bytes > MAX_CALLER_BYTES)
        return 0;
    unsigned char *canvas = malloc(bytes);
    REQUIRE(canvas != NULL, "out of memory");
    memset(canvas, 0xA5, bytes);
    if (place_jpeg(input.data, input.size, eighths, box, canvas, stride, width, height, (int)flip, &taken, &error) == 0 &&
        !taken)
        for (at = 0; at < bytes; at++)
            REQUIRE(canvas[at] == 0xA5, "place wrote byte %zu of a JPEG it did not take", at);
    for (at = 0; at < bytes; at++) {
        int in_target = at < stride * height && at % stride < (size_t)width * 3;
        REQUIRE(in_target || canvas[at] == 0xA5, "place wrote byte %zu outside its %ux%u target (stride %zu)", at,
                width, height, stride);
    }
    free(canvas);
    return 0;
}
