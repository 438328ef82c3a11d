/* Fuzz target: _jpegscan.c's scan_is_clean() (scan_clean), the block walk.  Input: the file.
 *
 * Besides crashes, leaks and UB, it holds the walk to its rule: whatever it accepts, libjpeg reads
 * without an error or a warning (check() passes). */
#define RECPACK_WITHOUT_PYTHON
#include "../_jpegscan.c"
#include "../_libjpeg.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct error_state error;
    if (scan_clean(data, size))
        REQUIRE(check_jpeg(data, size, &error) == 0, "the walk accepted a file libjpeg refuses: %s", error.message);
    return 0;
}
