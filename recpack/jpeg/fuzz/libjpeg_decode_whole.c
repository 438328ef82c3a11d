/* Fuzz target: _libjpeg.c's decode_whole() (whole_start, whole_read).
 *
 * Input: eighths (1 byte), then the file.  The size it reports must be the image's at eighths/8. */
#define RECPACK_WITHOUT_PYTHON
#include "../_libjpeg.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct fuzz_input input = {data, size};
    struct decoding decoding;
    JDIMENSION width = 0, height = 0;
    unsigned int eighths = take(&input, 1);
    if (whole_start(&decoding, input.data, input.size, eighths, &width, &height) == 0) {
        size_t bytes = (size_t)width * height * 4;
        REQUIRE(width == ((uint64_t)decoding.cinfo.image_width * eighths + 7) / 8 &&
                    height == ((uint64_t)decoding.cinfo.image_height * eighths + 7) / 8,
                "%ux%u at %u/8 for a %ux%u image", width, height, eighths, decoding.cinfo.image_width,
                decoding.cinfo.image_height);
        if (bytes <= MAX_CALLER_BYTES) {
            unsigned char *pixels = malloc(bytes);
            REQUIRE(pixels != NULL, "out of memory");
            whole_read(&decoding, pixels);
            free(pixels);
        }
    }
    decoding_end(&decoding);
    return 0;
}
