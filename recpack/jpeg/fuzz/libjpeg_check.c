/* Fuzz target: _libjpeg.c's check() (check_jpeg), the pack's decode check.  Input: the file. */
#define RECPACK_WITHOUT_PYTHON
#include "../_libjpeg.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct error_state error;
    check_jpeg(data, size, &error); /* any answer will do; a crash, leak or UB will not */
    return 0;
}
