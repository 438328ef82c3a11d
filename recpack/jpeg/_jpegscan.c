/* Walk a baseline JPEG's entropy-coded data block by block, without decoding it.
 *
 * scan_is_clean(data) -> bool
 *   True when every block of the file parses and libjpeg would read the file
 *   without an error or a warning; False when the walk is not sure, and the
 *   caller asks libjpeg (``_libjpeg.check``), which says what is wrong.
 *   Why: the packer's default check runs libjpeg's entropy decoder over every
 *   stored JPEG, and that is most of a pack's CPU.  Deciding decodability
 *   needs only where each block's bits end, not the coefficients: a 9-bit
 *   lookahead table gives a code's length, its extra bits and how many
 *   coefficients it covers, and nothing is written.
 *
 * gray_to_color(data) -> bytes, or None when this fast path does not apply.
 *   Grey JPEG -> colour JPEG by splicing its entropy-coded data, with no
 *   Huffman re-encoding.  recpack stores every record as 3-component JPEG,
 *   and libjpeg's lossless transcode (jpeg_read_coefficients +
 *   jpeg_write_coefficients, in _libjpeg.c) decodes every coefficient and
 *   Huffman-codes it again.  In a 4:4:4 interleaved scan the MCU is one luma
 *   block then one Cb and one Cr block, on the same block grid as the grey
 *   scan (ceil(W/8) x ceil(H/8)), and the restart interval counts the same
 *   units.  So the output's luma blocks can be the grey file's own bits,
 *   coded with its own Huffman tables, each followed by two all-zero chroma
 *   blocks (DC difference 0, then end-of-block): 2 + 2 bits each with the
 *   standard (Annex K) chroma tables, i.e. 8 zero bits per MCU.  Flat chroma
 *   means R = G = B = the grey value.  Only the quantisation and Huffman
 *   tables, the restart interval and the JFIF density are carried over; other
 *   metadata is dropped, as for every converted image.
 *
 * Scope of both (anything else is refused: False or None):
 *   baseline or extended sequential Huffman JPEGs with 8-bit samples, one
 *   scan holding every component in frame order, tables ids 0-1; 1 component
 *   (any sampling factors), or 3 with the luma factors 1-2 and chroma 1x1
 *   (4:4:4, 4:2:2, 4:4:0, 4:2:0; grey only for the splice).  The scan must
 *   parse cleanly: every code valid, every block within 64 coefficients,
 *   restart markers in order, no stray bytes, fill bytes (0xFF) only before
 *   a marker, EOI right after the scan.
 *   Headers must be ones libjpeg reads silently: only the markers it knows
 *   (APPn, COM, DQT, DHT, DRI, SOF0/SOF1, SOS), a JFIF version 1.x, an Adobe
 *   transform of 0 or 1, quantisation tables defined for every component,
 *   no DNL.  The rule behind every refusal: whatever the walk accepts,
 *   libjpeg must accept without a warning (tests/test_jpegscan.py checks it
 *   over thousands of damaged files, and the fuzz target fuzz/jpegscan_scan_is_clean.c over millions).
 *
 * Both are plain C over the file's bytes (scan_clean(), splice()); the Python bindings at the end only
 * convert arguments and results, and compiled with RECPACK_WITHOUT_PYTHON the file has none: fuzz/ links
 * it into libFuzzer targets (tools/fuzz.sh).
 */
#ifndef RECPACK_WITHOUT_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SOF0 = 0xC0, SOF1 = 0xC1, DHT = 0xC4, RST0 = 0xD0, SOI = 0xD8, EOI = 0xD9, SOS = 0xDA, DQT = 0xDB,
       DRI = 0xDD, APP0 = 0xE0, APP14 = 0xEE, COM = 0xFE, LOOKAHEAD = 9, WINDOW = 12, MAX_COMPONENTS = 3,
       MAX_BLOCKS_IN_MCU = 6 };

/* The walk and the splice, each part in its own file, all in this one translation unit. */
#include "_jpegscan_markers.c"
#include "_jpegscan_walk.c"
#include "_jpegscan_splice.c"

/* scan_is_clean's answer. */
static int scan_clean(const uint8_t *data, size_t size) {
    jpeg_file file;
    return parse(data, size, &file) && walk_scan(&file, NULL);
}

/* ------------------------------------------------------------------------------------------------------
 * The Python bindings, with the GIL released around the work.
 */
#ifndef RECPACK_WITHOUT_PYTHON

static PyObject *gray_to_color(PyObject *self, PyObject *args) {
    Py_buffer input;
    uint8_t *out = NULL;
    size_t length = 0;
    int ok;
    PyObject *result;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &input))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    ok = splice((const uint8_t *)input.buf, (size_t)input.len, &out, &length);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&input);
    if (!ok)
        Py_RETURN_NONE;
    result = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)length);
    free(out);
    return result;
}

static PyObject *scan_is_clean(PyObject *self, PyObject *args) {
    Py_buffer input;
    int clean;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &input))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    clean = scan_clean((const uint8_t *)input.buf, (size_t)input.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&input);
    return PyBool_FromLong(clean);
}

static PyMethodDef methods[] = {
    {"gray_to_color", gray_to_color, METH_VARARGS,
     "gray_to_color(data) -> 3-component JPEG bytes spliced losslessly from a baseline grey JPEG, or None"},
    {"scan_is_clean", scan_is_clean, METH_VARARGS,
     "scan_is_clean(data) -> True if every block parses and libjpeg reads the file silently; False: ask libjpeg"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpegscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpegscan(void) { return PyModule_Create(&module); }

#endif /* RECPACK_WITHOUT_PYTHON */

