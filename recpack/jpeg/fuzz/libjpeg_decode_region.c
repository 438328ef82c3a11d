/* Fuzz target: _libjpeg.c's decode_region() (region_start, region_read).
 *
 * Input: left, top, width, height (4 bytes each), eighths (1 byte), then the file.  The region it
 * delivers must lie inside the scaled image and hold the requested corner. */
#define RECPACK_WITHOUT_PYTHON
#include "../_libjpeg.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct fuzz_input input = {data, size};
    struct decoding decoding;
    struct region region;
    unsigned int left = take(&input, 4), top = take(&input, 4), width = take(&input, 4), height = take(&input, 4);
    unsigned int eighths = take(&input, 1);
    if (region_start(&decoding, input.data, input.size, left, top, width, height, eighths, &region) == 0) {
        uint64_t scaled_width = ((uint64_t)decoding.cinfo.image_width * eighths + 7) / 8;
        uint64_t scaled_height = ((uint64_t)decoding.cinfo.image_height * eighths + 7) / 8;
        size_t bytes = (size_t)region.width * region.height * 4;
        REQUIRE(region.width > 0 && region.height > 0 && (uint64_t)region.x + region.width <= scaled_width &&
                    (uint64_t)region.y + region.height <= scaled_height && region.x <= left &&
                    left < (uint64_t)region.x + region.width && region.y == top,
                "region %u,%u %ux%u for %u,%u %ux%u of a %llux%llu image", region.x, region.y, region.width,
                region.height, left, top, width, height, (unsigned long long)scaled_width,
                (unsigned long long)scaled_height);
        if (bytes <= MAX_CALLER_BYTES) {
            unsigned char *pixels = malloc(bytes);
            REQUIRE(pixels != NULL, "out of memory");
            region_read(&decoding, &region, pixels);
            free(pixels);
        }
    }
    decoding_end(&decoding);
    return 0;
}
