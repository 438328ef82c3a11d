/* Fuzz target: _jpegscan.c's gray_to_color() (splice), the grey splice.  Input: the file.
 *
 * Besides crashes, leaks and UB, it holds the splice to its rules: it takes only files that libjpeg reads
 * without an error or a warning, what it writes passes check() too, and (up to MAX_COMPARED pixels) it
 * decodes to the grey file's pixels exactly. */
#define RECPACK_WITHOUT_PYTHON
#include "../_jpegscan.c"
#include "../_libjpeg.c"
#include "fuzz.h"

#define MAX_COMPARED ((size_t)1 << 20)

/* The file's pixels as RGBX (malloc'd), or NULL if it does not decode cleanly. */
static unsigned char *decoded(const unsigned char *data, size_t size, JDIMENSION *width, JDIMENSION *height,
                              char *why) {
    struct decoding decoding;
    unsigned char *pixels = NULL;
    if (whole_start(&decoding, data, size, 8, width, height) == 0 &&
        (size_t)*width * *height <= MAX_COMPARED) {
        pixels = malloc((size_t)*width * *height * 4);
        REQUIRE(pixels != NULL, "out of memory");
        if (whole_read(&decoding, pixels) != 0) {
            free(pixels);
            pixels = NULL;
        }
    }
    strcpy(why, decoding.error.message);
    decoding_end(&decoding);
    return pixels;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct error_state error;
    uint8_t *colour = NULL;
    size_t colour_size = 0;
    if (!splice(data, size, &colour, &colour_size))
        return 0;
    REQUIRE(check_jpeg(data, size, &error) == 0, "the splice took a file libjpeg refuses: %s", error.message);
    REQUIRE(check_jpeg(colour, colour_size, &error) == 0, "the splice wrote a JPEG libjpeg refuses: %s",
            error.message);
    JDIMENSION width = 0, height = 0, colour_width = 0, colour_height = 0;
    char why[JMSG_LENGTH_MAX], colour_why[JMSG_LENGTH_MAX];
    unsigned char *grey_pixels = decoded(data, size, &width, &height, why);
    unsigned char *colour_pixels = decoded(colour, colour_size, &colour_width, &colour_height, colour_why);
    REQUIRE(width == colour_width && height == colour_height, "the splice made %ux%u of %ux%u", colour_width,
            colour_height, width, height);
    REQUIRE((grey_pixels == NULL) == (colour_pixels == NULL), "one of the two does not decode: %s / %s", why,
            colour_why);
    if (grey_pixels != NULL) {
        size_t i;
        for (i = 0; i < (size_t)width * height * 4; i++)
            REQUIRE(i % 4 == 3 || grey_pixels[i] == colour_pixels[i], "pixel %zu differs: %u, spliced %u", i / 4,
                    grey_pixels[i], colour_pixels[i]);
    }
    free(grey_pixels);
    free(colour_pixels);
    free(colour);
    return 0;
}
