/* Fuzz target: _libjpeg.c's gray_to_color() (gray_to_color_jpeg), libjpeg's lossless transcode of a grey
 * JPEG to a colour one.  Input: the file.  What it writes must pass check(). */
#define RECPACK_WITHOUT_PYTHON
#include "../_libjpeg.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct error_state error;
    unsigned char *jpeg = NULL;
    unsigned long jpeg_size = 0;
    if (gray_to_color_jpeg(data, size, &jpeg, &jpeg_size, &error) == 0) {
        REQUIRE(check_jpeg(jpeg, jpeg_size, &error) == 0, "gray_to_color wrote a JPEG check() refuses: %s",
                error.message);
        free(jpeg);
    }
    return 0;
}
