/* Fuzz target: _resample.c's resample_plane() and pad_plane(), with the axis maps shrink() gives them
 * (and the plain ones of _libjpeg.resample_plane, after its size check, resample_sizes_ok()).
 *
 * Input: the decoded image's width and height, the output luma plane's width and height (2 bytes each,
 * modulo 256, plus 1), a mode byte, then pixels, repeated to fill the input plane.  Mode bit 0: the
 * plain maps of _libjpeg.resample_plane, input and output planes of those sizes; else as shrink_planes()
 * maps one plane: bit 1 a chroma plane (the output at half size), bits 2 and 3 the input plane at half
 * the image's width and height (chroma subsampled). */
#define RECPACK_WITHOUT_PYTHON
#include <math.h>
#include "../_libjpeg.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct fuzz_input input = {data, size};
    unsigned int image_width = take(&input, 2) % 256 + 1, image_height = take(&input, 2) % 256 + 1;
    unsigned int out_width = take(&input, 2) % 256 + 1, out_height = take(&input, 2) % 256 + 1;
    unsigned int mode = take(&input, 1), padded_width, padded_height;
    struct plane in, out;
    struct axis_map x, y;
    size_t i;
    if (mode & 1) {
        REQUIRE(resample_sizes_ok(image_width, image_height, out_width, out_height,
                                  (size_t)image_width * image_height),
                "resample_plane refuses %ux%u -> %ux%u", image_width, image_height, out_width, out_height);
        in.width = image_width, in.height = image_height;
        out.width = padded_width = out_width, out.height = padded_height = out_height;
        x = (struct axis_map){(double)image_width / out_width, image_width, 1.0, 0.0};
        y = (struct axis_map){(double)image_height / out_height, image_height, 1.0, 0.0};
    } else {
        int chroma = (mode >> 1) & 1;
        double in_x = (mode & 4) ? 0.5 : 1.0, in_y = (mode & 8) ? 0.5 : 1.0, out_fraction = chroma ? 0.5 : 1.0;
        double luma_x = (double)image_width / out_width * in_x, luma_y = (double)image_height / out_height * in_y;
        in.width = (unsigned int)ceil(image_width * in_x), in.height = (unsigned int)ceil(image_height * in_y);
        out.width = chroma ? (out_width + 1) / 2 : out_width, out.height = chroma ? (out_height + 1) / 2 : out_height;
        padded_width = (out_width + 15) / 16 * (chroma ? 8 : 16), padded_height = (out_height + 15) / 16 * (chroma ? 8 : 16);
        x = (struct axis_map){luma_x / out_fraction, (out_width - 0.5) * luma_x, luma_x, 0.0};
        y = (struct axis_map){luma_y / out_fraction, (out_height - 0.5) * luma_y, luma_y, 0.0};
    }
    in.stride = in.width, out.stride = padded_width;
    in.pixels = malloc((size_t)in.stride * in.height);
    out.pixels = malloc((size_t)out.stride * padded_height);
    REQUIRE(in.pixels != NULL && out.pixels != NULL, "out of memory");
    for (i = 0; i < (size_t)in.stride * in.height; i++)
        in.pixels[i] = input.size ? input.data[i % input.size] : (uint8_t)i;
    REQUIRE(resample_plane(&in, &out, &x, &y) == 0, "resample_plane out of memory");
    pad_plane(&out, padded_width, padded_height);
    free(in.pixels);
    free(out.pixels);
    return 0;
}
