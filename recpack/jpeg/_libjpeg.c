/* The libjpeg-turbo operations recpack needs that no Python binding offers,
 * each with the GIL released while libjpeg works.
 *
 * decode_region(data, left, top, width, height, eighths) -> (pixels, x, y, w, h)
 *   Decode only the part of a JPEG that a crop needs.  The region is in the
 *   coordinates of the image scaled by eighths/8 (DCT-domain scaling:
 *   libjpeg-turbo runs a smaller inverse DCT and upsamples and converts fewer
 *   pixels; but only 1/8, 1/4 and 1/2 have SIMD inverse DCTs, and 5/8, 3/4
 *   and 7/8 measured slower than full size, benchmarks/bench_dct_scales.py,
 *   so recpack.jpeg.scales picks 1/8, 1/4, 1/2 or 1).  jpeg_crop_scanline()
 *   limits the inverse DCT, upsampling and colour conversion to the columns
 *   of the crop (widened to whole iMCUs), and jpeg_skip_scanlines() skips that
 *   work for the rows above it; decoding stops after the last row needed.
 *   Entropy decoding still runs over the skipped rows: a JPEG cannot be
 *   entered in the middle.  pixels is a bytearray of h rows of w RGBX pixels
 *   (4 bytes each, so Pillow can wrap it without a copy); (x, y) is where it
 *   starts in the scaled image.  Grayscale sources come out as RGBX too.
 *   CMYK/YCCK raise ValueError (the caller falls back to Pillow), corrupt
 *   data raises ValueError with libjpeg's message.  Warnings (recoverable
 *   corruption) are ignored: the reader decodes what the packer checked.
 *
 * check(data) -> None: the packer's decode check (_libjpeg_decode.c).
 * shrink(data, ...): pack --resize in one call, for YCbCr JPEGs (_libjpeg_shrink.c);
 *   resample_plane(...) exposes its plane resize for tests.
 * place(data, out, eighths, left, top, width, height, flip) -> bool: the reader's decode of a source
 *   rectangle straight onto its target rectangle of a numpy canvas, in YCbCr planes (_libjpeg_place.c).
 * decode_whole(data, eighths), encode(pixels, ...): pack --resize's decode and encode for the rest.
 * gray_to_color(data) -> bytes: the packer's lossless grayscale conversion (_libjpeg_transcode.c).
 *
 * Each operation is a plain C function over the file's bytes and its parameters (decode_region and
 * decode_whole in two calls, so that the caller allocates the pixels in between), in the four files this
 * one includes (how they fail: _libjpeg_errors.c), and the Python bindings below only convert arguments
 * and results.  Compiled with RECPACK_WITHOUT_PYTHON, the
 * file has no bindings: fuzz/ links the operations into libFuzzer targets (tools/fuzz.sh).
 */
#ifndef RECPACK_WITHOUT_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h> /* message codes, to tell warnings apart */
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "_resample.h"

/* The operations, each in its own file, all in this one translation unit. */
#include "_libjpeg_errors.c"
#include "_libjpeg_decode.c"
#include "_libjpeg_shrink.c"
#include "_libjpeg_place.c"
#include "_libjpeg_transcode.c"

/* ------------------------------------------------------------------------------------------------------
 * The Python bindings: arguments in, the GIL released around the work, one way to fail.
 */
#ifndef RECPACK_WITHOUT_PYTHON

/* How every operation ends: its input released; then result, or, given a failure, NULL with ValueError
 * saying it (libjpeg's message, or ours), or fallback when libjpeg left none.  Takes result's reference. */
static PyObject *finish(Py_buffer *input, PyObject *result, const char *failure, const char *fallback) {
    PyBuffer_Release(input);
    if (failure == NULL)
        return result;
    Py_XDECREF(result);
    PyErr_SetString(PyExc_ValueError, failure[0] ? failure : fallback);
    return NULL;
}

/* A JPEG an operation wrote (malloc'd) as bytes, freed. */
static PyObject *take_bytes(unsigned char *jpeg, unsigned long size) {
    PyObject *result = PyBytes_FromStringAndSize((const char *)jpeg, (Py_ssize_t)size);
    free(jpeg);
    return result;
}

static PyObject *decode_region(PyObject *self, PyObject *args) {
    Py_buffer input;
    unsigned int left, top, width, height, eighths;
    struct decoding decoding;
    struct region region;
    PyObject *pixels = NULL;
    int failed;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIIII", &input, &left, &top, &width, &height, &eighths))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    failed = region_start(&decoding, input.buf, (size_t)input.len, left, top, width, height, eighths, &region);
    Py_END_ALLOW_THREADS
    if (!failed) {
        pixels = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)region.width * region.height * 4);
        if (pixels == NULL) {
            decoding_end(&decoding);
            return finish(&input, NULL, NULL, NULL); /* MemoryError */
        }
        unsigned char *out = (unsigned char *)PyByteArray_AS_STRING(pixels);
        Py_BEGIN_ALLOW_THREADS
        failed = region_read(&decoding, &region, out);
        Py_END_ALLOW_THREADS
    }
    decoding_end(&decoding); /* also abandons the rows below the crop */
    if (!failed)
        pixels = Py_BuildValue("(NIIII)", pixels, (unsigned int)region.x, (unsigned int)region.y,
                               (unsigned int)region.width, (unsigned int)region.height);
    return finish(&input, pixels, failed ? decoding.error.message : NULL, "corrupt JPEG");
}

static PyObject *check(PyObject *self, PyObject *args) {
    Py_buffer input;
    struct error_state error;
    int failed;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &input))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    failed = check_jpeg(input.buf, (size_t)input.len, &error);
    Py_END_ALLOW_THREADS
    return finish(&input, Py_NewRef(Py_None), failed ? error.message : NULL, "corrupt JPEG");
}

static PyObject *decode_whole(PyObject *self, PyObject *args) {
    Py_buffer input;
    unsigned int eighths;
    struct decoding decoding;
    JDIMENSION width = 0, height = 0;
    PyObject *pixels = NULL;
    int failed;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*I", &input, &eighths))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    failed = whole_start(&decoding, input.buf, (size_t)input.len, eighths, &width, &height);
    Py_END_ALLOW_THREADS
    if (!failed) {
        pixels = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)width * height * 4);
        if (pixels == NULL) {
            decoding_end(&decoding);
            return finish(&input, NULL, NULL, NULL); /* MemoryError */
        }
        unsigned char *out = (unsigned char *)PyByteArray_AS_STRING(pixels);
        Py_BEGIN_ALLOW_THREADS
        failed = whole_read(&decoding, out);
        Py_END_ALLOW_THREADS
    }
    decoding_end(&decoding);
    if (!failed)
        pixels = Py_BuildValue("(NII)", pixels, (unsigned int)width, (unsigned int)height);
    return finish(&input, pixels, failed ? decoding.error.message : NULL, "corrupt JPEG");
}

static PyObject *encode(PyObject *self, PyObject *args) {
    Py_buffer input;
    unsigned int width, height, channels;
    int quality, failed;
    struct error_state error;
    unsigned char *jpeg = NULL;
    unsigned long jpeg_size = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIIi", &input, &width, &height, &channels, &quality))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    failed = encode_pixels(input.buf, (size_t)input.len, width, height, channels, quality, &jpeg, &jpeg_size, &error);
    Py_END_ALLOW_THREADS
    return finish(&input, failed ? NULL : take_bytes(jpeg, jpeg_size), failed ? error.message : NULL,
                  "JPEG encoding failed");
}

static PyObject *shrink(PyObject *self, PyObject *args) {
    Py_buffer input;
    unsigned int eighths, width, height;
    int quality, failed, taken;
    struct error_state error;
    unsigned char *jpeg = NULL;
    unsigned long jpeg_size = 0;
    PyObject *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIIi", &input, &eighths, &width, &height, &quality))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    failed = shrink_jpeg(input.buf, (size_t)input.len, eighths, width, height, quality, &jpeg, &jpeg_size, &taken,
                         &error);
    Py_END_ALLOW_THREADS
    if (!failed)
        result = taken ? take_bytes(jpeg, jpeg_size) : Py_NewRef(Py_None);
    return finish(&input, result, failed ? error.message : NULL, "corrupt JPEG");
}

/* resample_plane(pixels, width, height, out_width, out_height) -> bytes: _resample.c on one plane, as
 * Pillow's resize maps sizes (scale = in / out); for tests, against Pillow's BILINEAR. */
static PyObject *resample_one_plane(PyObject *self, PyObject *args) {
    Py_buffer input;
    unsigned int width, height, out_width, out_height;
    PyObject *result;
    int failed;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIII", &input, &width, &height, &out_width, &out_height))
        return NULL;
    if (!resample_sizes_ok(width, height, out_width, out_height, (size_t)input.len))
        return finish(&input, NULL, "resample_plane needs sizes a JPEG can have and width x height pixels", NULL);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out_width * out_height);
    if (result == NULL)
        return finish(&input, NULL, NULL, NULL); /* MemoryError */
    struct plane in = {(unsigned char *)input.buf, width, width, height};
    struct plane out = {(unsigned char *)PyBytes_AS_STRING(result), out_width, out_width, out_height};
    Py_BEGIN_ALLOW_THREADS
    struct axis_map x = {(double)width / out_width, width, 1.0, 0.0};
    struct axis_map y = {(double)height / out_height, height, 1.0, 0.0};
    failed = resample_plane(&in, &out, &x, &y);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&input);
    if (failed) {
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    return result;
}

/* place(data, out, eighths, left, top, width, height, flip) -> bool.  out: a writable (h, w, 3) uint8 buffer
 * whose pixels and channels are packed and whose rows may lie any distance apart (a numpy slice of a
 * canvas).  False, with out untouched, for JPEGs whose planes it does not take. */
static PyObject *place(PyObject *self, PyObject *args) {
    Py_buffer input, target;
    PyObject *out;
    unsigned int eighths;
    double box[4];
    int flip, failed, taken = 0;
    struct error_state error;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*OIddddp", &input, &out, &eighths, &box[0], &box[1], &box[2], &box[3], &flip))
        return NULL;
    if (PyObject_GetBuffer(out, &target, PyBUF_WRITABLE | PyBUF_STRIDES) != 0)
        return finish(&input, NULL, NULL, NULL);
    if (target.ndim != 3 || target.itemsize != 1 || target.shape[2] != 3 || target.strides[2] != 1 ||
        target.strides[1] != 3 || target.strides[0] < target.shape[1] * 3 || target.shape[0] > JPEG_MAX_DIMENSION ||
        target.shape[1] > JPEG_MAX_DIMENSION || target.shape[0] == 0 || target.shape[1] == 0) {
        PyBuffer_Release(&target);
        return finish(&input, NULL, "place needs out as a non-empty (height, width, 3) uint8 array of packed pixels",
                      NULL);
    }
    Py_BEGIN_ALLOW_THREADS
    failed = place_jpeg(input.buf, (size_t)input.len, eighths, box, target.buf, (size_t)target.strides[0],
                        (unsigned int)target.shape[1], (unsigned int)target.shape[0], flip, &taken, &error);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&target);
    return finish(&input, failed ? NULL : PyBool_FromLong(taken), failed ? error.message : NULL, "corrupt JPEG");
}

static PyObject *gray_to_color(PyObject *self, PyObject *args) {
    Py_buffer input;
    struct error_state error;
    unsigned char *jpeg = NULL;
    unsigned long jpeg_size = 0;
    int failed;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &input))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    failed = gray_to_color_jpeg(input.buf, (size_t)input.len, &jpeg, &jpeg_size, &error);
    Py_END_ALLOW_THREADS
    return finish(&input, failed ? NULL : take_bytes(jpeg, jpeg_size), failed ? error.message : NULL, "corrupt JPEG");
}

static PyMethodDef methods[] = {
    {"gray_to_color", gray_to_color, METH_VARARGS, "gray_to_color(data) -> 3-component JPEG bytes, losslessly"},
    {"check", check, METH_VARARGS, "check(data) -> None; ValueError if any scan does not decode cleanly"},
    {"decode_whole", decode_whole, METH_VARARGS,
     "decode_whole(data, eighths) -> (rgbx, width, height); ValueError on any damage, as check()"},
    {"shrink", shrink, METH_VARARGS,
     "shrink(data, eighths, width, height, quality) -> JPEG bytes, or None for JPEGs not coded as YCbCr planes"},
    {"resample_plane", resample_one_plane, METH_VARARGS,
     "resample_plane(pixels, width, height, out_width, out_height) -> bytes, shrink's plane resize"},
    {"encode", encode, METH_VARARGS, "encode(pixels, width, height, channels, quality) -> 4:2:0 JPEG bytes"},
    {"place", place, METH_VARARGS,
     "place(data, out, eighths, left, top, width, height, flip) -> bool: the source rectangle resampled onto out"},
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, left, top, width, height, eighths) -> (rgbx, x, y, w, h)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_libjpeg", NULL, -1, methods};

PyMODINIT_FUNC PyInit__libjpeg(void) { return PyModule_Create(&module); }

#endif /* RECPACK_WITHOUT_PYTHON */

