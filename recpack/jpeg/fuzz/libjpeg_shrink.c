/* Fuzz target: _libjpeg.c's shrink() (shrink_jpeg), pack --resize in YCbCr planes.
 *
 * Input: eighths (1 byte, modulo 17), width and height (2 bytes each, modulo 4097), quality (1 byte,
 * modulo 102), then the file; the zeros and 101 are there to be refused.  What it writes must pass
 * check() and be width x height. */
#define RECPACK_WITHOUT_PYTHON
#include "../_libjpeg.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct fuzz_input input = {data, size};
    struct error_state error;
    unsigned char *jpeg = NULL;
    unsigned long jpeg_size = 0;
    int taken = 0;
    unsigned int eighths = take(&input, 1) % 17, width = take(&input, 2) % 4097, height = take(&input, 2) % 4097;
    int quality = (int)(take(&input, 1) % 102);
    if (shrink_jpeg(input.data, input.size, eighths, width, height, quality, &jpeg, &jpeg_size, &taken, &error) == 0 &&
        taken) {
        struct decoding decoding;
        JDIMENSION out_width = 0, out_height = 0;
        REQUIRE(whole_start(&decoding, jpeg, jpeg_size, 8, &out_width, &out_height) == 0 && out_width == width &&
                    out_height == height,
                "shrink to %ux%u wrote a %ux%u JPEG (%s)", width, height, out_width, out_height,
                decoding.error.message);
        decoding_end(&decoding);
        REQUIRE(check_jpeg(jpeg, jpeg_size, &error) == 0, "shrink wrote a JPEG check() refuses: %s", error.message);
        free(jpeg);
    }
    return 0;
}
