/* Per-image pixel arithmetic for `recpack stats`, with the GIL released: numpy's uint8 reductions cost
 * more than the JPEG decode they follow (measured: an axis-0 sum of RGBX pixels 1.4x the decode, the
 * sum of squares 2x), and a statistics pass must keep up with decoding on every core.
 *
 * Every result is an exact integer, so partial results over any split of a dataset add up to the
 * same totals (recpack.measure.tally).
 *
 * moments(pixels, pixel_bytes, channels) -> (sums, sums_of_squares, minima, maxima)
 *   Over interleaved pixels of pixel_bytes bytes (RGBX: 4, RGB: 3, a mask: 1), for the first
 *   channels bytes of each pixel.  The loops run over fixed lanes of LANES bytes (a multiple of
 *   every pixel size and of the SIMD width), so the compiler vectorizes them whatever the image.
 * histogram(pixels, pixel_bytes, channels, counts, step=1) -> None
 *   Adds the count of each byte value per channel, over every step-th pixel, into counts
 *   (channels x 256 uint64).  Scattered increments cost more than the decode's share per pixel:
 *   the statistics take their pixel histograms from a sample of pixels, and masks all of theirs.
 * add_resized(pixels, width, height, pixel_bytes, side, total) -> None
 *   Squashes the image to side x side by averaging each output pixel's box of input pixels (one
 *   input pixel repeated where the image is smaller) and adds the first 3 channels into total
 *   (side x side x 3 uint64) in fixed point, 16 fractional bits: the average image of a dataset.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 32 /* a multiple of the pixel sizes 1, 2, 4 and of the vector width */
#define FIXED_ONE 65536.0           /* add_resized's fixed point */

struct moments {
    uint64_t sum[4], squares[4];
    unsigned char low[4], high[4];
};

static void fold_lane(struct moments *m, unsigned int channel, uint64_t sum, uint64_t squares, unsigned char low,
                      unsigned char high) {
    m->sum[channel] += sum;
    m->squares[channel] += squares;
    m->low[channel] = low < m->low[channel] ? low : m->low[channel];
    m->high[channel] = high > m->high[channel] ? high : m->high[channel];
}

/* Bytes start..n-1 one at a time: the tail, or all of them where there is no vector path. */
static void add_moments_plain(const unsigned char *p, size_t start, size_t n, unsigned int pixel_bytes,
                              struct moments *m) {
    size_t i;
    for (i = start; i < n; i++)
        fold_lane(m, i % pixel_bytes, p[i], (uint64_t)p[i] * p[i], p[i], p[i]);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

/* 32 bytes at a time with no shuffles: as 16-bit lanes, even bytes are v & 0xff and odd ones v >> 8;
 * their squares fit 16 bits, and as 32-bit lanes those split again into & 0xffff and >> 16.  So every
 * lane of every accumulator is one fixed byte position of the block (a multiple of any pixel size):
 * 16-bit sums for 257 blocks (257 x 255 < 2^16), 32-bit squares for 65536 (65536 x 255^2 < 2^32),
 * then into 64 bits by channel. */
__attribute__((target("avx2"))) static size_t add_moments_avx2(const unsigned char *p, size_t n,
                                                               unsigned int pixel_bytes, struct moments *m) {
    const __m256i bytes = _mm256_set1_epi16(0xff), words = _mm256_set1_epi32(0xffff);
    size_t blocks = n / 32, b = 0;
    unsigned int k;
    __m256i low = _mm256_set1_epi8((char)255), high = _mm256_setzero_si256();
    uint16_t sums[2][16];
    uint32_t squares[4][8];
    unsigned char lows[32], highs[32];
    while (b < blocks) {
        size_t squares_stop = blocks - b > 65536 ? b + 65536 : blocks;
        __m256i q[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        while (b < squares_stop) {
            size_t sum_stop = squares_stop - b > 257 ? b + 257 : squares_stop;
            __m256i even_sum = _mm256_setzero_si256(), odd_sum = _mm256_setzero_si256();
            for (; b < sum_stop; b++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(p + b * 32));
                __m256i even = _mm256_and_si256(v, bytes), odd = _mm256_srli_epi16(v, 8);
                __m256i even_square = _mm256_mullo_epi16(even, even), odd_square = _mm256_mullo_epi16(odd, odd);
                even_sum = _mm256_add_epi16(even_sum, even);
                odd_sum = _mm256_add_epi16(odd_sum, odd);
                q[0] = _mm256_add_epi32(q[0], _mm256_and_si256(even_square, words)); /* bytes 4k */
                q[1] = _mm256_add_epi32(q[1], _mm256_srli_epi32(even_square, 16));  /* 4k + 2 */
                q[2] = _mm256_add_epi32(q[2], _mm256_and_si256(odd_square, words));  /* 4k + 1 */
                q[3] = _mm256_add_epi32(q[3], _mm256_srli_epi32(odd_square, 16));   /* 4k + 3 */
                low = _mm256_min_epu8(low, v);
                high = _mm256_max_epu8(high, v);
            }
            _mm256_storeu_si256((__m256i *)sums[0], even_sum); /* lane k: byte 2k */
            _mm256_storeu_si256((__m256i *)sums[1], odd_sum);  /* lane k: byte 2k + 1 */
            for (k = 0; k < 16; k++) {
                m->sum[(2 * k) % pixel_bytes] += sums[0][k];
                m->sum[(2 * k + 1) % pixel_bytes] += sums[1][k];
            }
        }
        for (k = 0; k < 4; k++)
            _mm256_storeu_si256((__m256i *)squares[k], q[k]);
        for (k = 0; k < 8; k++) {
            m->squares[(4 * k) % pixel_bytes] += squares[0][k];
            m->squares[(4 * k + 2) % pixel_bytes] += squares[1][k];
            m->squares[(4 * k + 1) % pixel_bytes] += squares[2][k];
            m->squares[(4 * k + 3) % pixel_bytes] += squares[3][k];
        }
    }
    _mm256_storeu_si256((__m256i *)lows, low);
    _mm256_storeu_si256((__m256i *)highs, high);
    if (blocks > 0)
        for (k = 0; k < 32; k++)
            fold_lane(m, k % pixel_bytes, 0, 0, lows[k], highs[k]);
    return blocks * 32;
}
#endif

/* pixel_bytes divides 32, so the vector blocks end on a whole pixel and the tail stays in step. */
static void add_moments(const unsigned char *p, size_t n, unsigned int pixel_bytes, struct moments *m) {
    size_t done = 0;
#ifdef HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2"))
        done = add_moments_avx2(p, n, pixel_bytes, m);
#endif
    add_moments_plain(p, done, n, pixel_bytes, m);
}

/* Every step-th pixel, in two sets of tables for alternate pixels: a run of equal values then does not
 * wait on one counter.  Chunks of 2^31 pixels: no table entry passes 2^31. */
static int add_histogram(const unsigned char *p, size_t pixels, unsigned int pixel_bytes, unsigned int channels,
                         size_t step, uint64_t *counts) {
    uint32_t *tables = calloc(2 * 4 * 256, sizeof(uint32_t));
    size_t i, start = 0, flip = 0;
    unsigned int c, v;
    if (tables == NULL)
        return -1;
    while (start < pixels) {
        size_t end = pixels - start > ((size_t)1 << 31) ? start + ((size_t)1 << 31) : pixels;
        for (i = start; i < end; i += step, flip ^= 1) {
            const unsigned char *pixel = p + i * pixel_bytes;
            uint32_t *table = tables + flip * 4 * 256;
            for (c = 0; c < channels; c++)
                table[c * 256 + pixel[c]]++;
        }
        for (c = 0; c < channels; c++)
            for (v = 0; v < 256; v++) {
                counts[c * 256 + v] += (uint64_t)tables[c * 256 + v] + tables[4 * 256 + c * 256 + v];
                tables[c * 256 + v] = tables[4 * 256 + c * 256 + v] = 0;
            }
        start = i; /* where the step lands past this chunk */
    }
    free(tables);
    return 0;
}

/* Box [first[k], first[k + 1]) of input positions for each of side outputs along an axis of length n. */
static void boxes(unsigned int n, unsigned int side, unsigned int *first, unsigned int *stop) {
    unsigned int k;
    for (k = 0; k < side; k++) {
        first[k] = (unsigned int)((uint64_t)k * n / side);
        stop[k] = (unsigned int)((uint64_t)(k + 1) * n / side);
        if (stop[k] <= first[k])
            stop[k] = first[k] + 1;
    }
}

/* Vertical first: each output row's box of input rows is summed column by column (a contiguous loop
 * over whole rows, which the compiler vectorizes), then each output pixel sums its columns of that row. */
static int add_resized_to(const unsigned char *p, unsigned int width, unsigned int height, unsigned int pixel_bytes,
                          unsigned int side, uint64_t *total) {
    size_t row_bytes = (size_t)width * pixel_bytes, i;
    unsigned int *bounds = malloc(sizeof(unsigned int) * 4 * side);
    double *column_scale = malloc(sizeof(double) * side);
    uint32_t *columns = malloc(sizeof(uint32_t) * row_bytes);
    unsigned int ox, oy, y, x;
    int failed = bounds == NULL || column_scale == NULL || columns == NULL;
    if (!failed) {
        unsigned int *row_first = bounds, *row_stop = bounds + side, *col_first = bounds + 2 * side,
                     *col_stop = bounds + 3 * side;
        boxes(height, side, row_first, row_stop);
        boxes(width, side, col_first, col_stop);
        for (ox = 0; ox < side; ox++)
            column_scale[ox] = FIXED_ONE / (col_stop[ox] - col_first[ox]);
        for (oy = 0; oy < side; oy++) {
            const unsigned char *row = p + (size_t)row_first[oy] * row_bytes;
            for (i = 0; i < row_bytes; i++)
                columns[i] = row[i];
            for (y = row_first[oy] + 1; y < row_stop[oy]; y++) {
                row = p + (size_t)y * row_bytes;
                for (i = 0; i < row_bytes; i++)
                    columns[i] += row[i];
            }
            uint64_t *out = total + (size_t)oy * side * 3;
            double row_scale = 1.0 / (row_stop[oy] - row_first[oy]);
            for (ox = 0; ox < side; ox++, out += 3) {
                const uint32_t *column = columns + (size_t)col_first[ox] * pixel_bytes;
                uint64_t red = 0, green = 0, blue = 0;
                for (x = col_first[ox]; x < col_stop[ox]; x++, column += pixel_bytes) {
                    red += column[0];
                    green += column[1];
                    blue += column[2];
                }
                double scale = column_scale[ox] * row_scale;
                out[0] += (uint64_t)(red * scale + 0.5);
                out[1] += (uint64_t)(green * scale + 0.5);
                out[2] += (uint64_t)(blue * scale + 0.5);
            }
        }
    }
    free(bounds);
    free(column_scale);
    free(columns);
    return failed ? -1 : 0;
}

static int writable_uint64(Py_buffer *buffer, size_t count, const char *what) {
    if (buffer->itemsize != 8 || (size_t)buffer->len != count * 8 || !PyBuffer_IsContiguous(buffer, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s must be a contiguous uint64 buffer of %zu items", what, count);
        return -1;
    }
    return 0;
}

static PyObject *moments(PyObject *self, PyObject *args) {
    Py_buffer input;
    unsigned int pixel_bytes, channels, c;
    struct moments m;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*II", &input, &pixel_bytes, &channels))
        return NULL;
    if ((pixel_bytes != 1 && pixel_bytes != 2 && pixel_bytes != 4) || channels < 1 || channels > pixel_bytes ||
        input.len % pixel_bytes != 0 || input.len == 0) {
        PyBuffer_Release(&input);
        PyErr_SetString(PyExc_ValueError, "moments needs whole pixels of 1, 2 or 4 bytes, at least one, and channels <= pixel_bytes");
        return NULL;
    }
    memset(&m, 0, sizeof m);
    memset(m.low, 255, sizeof m.low);
    Py_BEGIN_ALLOW_THREADS
    add_moments(input.buf, (size_t)input.len, pixel_bytes, &m);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&input);
    PyObject *parts[4] = {PyTuple_New(channels), PyTuple_New(channels), PyTuple_New(channels), PyTuple_New(channels)};
    for (c = 0; c < 4; c++)
        if (parts[c] == NULL)
            goto fail;
    for (c = 0; c < channels; c++) {
        PyTuple_SET_ITEM(parts[0], c, PyLong_FromUnsignedLongLong(m.sum[c]));
        PyTuple_SET_ITEM(parts[1], c, PyLong_FromUnsignedLongLong(m.squares[c]));
        PyTuple_SET_ITEM(parts[2], c, PyLong_FromLong(m.low[c]));
        PyTuple_SET_ITEM(parts[3], c, PyLong_FromLong(m.high[c]));
    }
    return Py_BuildValue("(NNNN)", parts[0], parts[1], parts[2], parts[3]);
fail:
    for (c = 0; c < 4; c++)
        Py_XDECREF(parts[c]);
    return NULL;
}

static PyObject *histogram(PyObject *self, PyObject *args) {
    Py_buffer input, counts;
    unsigned int pixel_bytes, channels;
    Py_ssize_t step = 1;
    int failed = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIw*|n", &input, &pixel_bytes, &channels, &counts, &step))
        return NULL;
    PyObject *result = NULL;
    if (pixel_bytes < 1 || pixel_bytes > 4 || channels < 1 || channels > pixel_bytes || input.len % pixel_bytes != 0 ||
        step < 1) {
        PyErr_SetString(PyExc_ValueError, "histogram needs whole pixels of 1-4 bytes, channels <= pixel_bytes, step >= 1");
    } else if (writable_uint64(&counts, (size_t)channels * 256, "counts") == 0) {
        Py_BEGIN_ALLOW_THREADS
        failed = add_histogram(input.buf, (size_t)input.len / pixel_bytes, pixel_bytes, channels, (size_t)step, counts.buf);
        Py_END_ALLOW_THREADS
        if (failed)
            PyErr_NoMemory();
        else
            result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&input);
    PyBuffer_Release(&counts);
    return result;
}

static PyObject *add_resized(PyObject *self, PyObject *args) {
    Py_buffer input, total;
    unsigned int width, height, pixel_bytes, side;
    int failed = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIIIw*", &input, &width, &height, &pixel_bytes, &side, &total))
        return NULL;
    PyObject *result = NULL;
    if (pixel_bytes < 3 || pixel_bytes > 4 || width == 0 || height == 0 || side == 0 ||
        (size_t)input.len != (size_t)width * height * pixel_bytes) {
        PyErr_SetString(PyExc_ValueError, "add_resized needs width x height pixels of 3 or 4 bytes and a side");
    } else if (writable_uint64(&total, (size_t)side * side * 3, "total") == 0) {
        Py_BEGIN_ALLOW_THREADS
        failed = add_resized_to(input.buf, width, height, pixel_bytes, side, total.buf);
        Py_END_ALLOW_THREADS
        if (failed)
            PyErr_NoMemory();
        else
            result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&input);
    PyBuffer_Release(&total);
    return result;
}

static PyMethodDef methods[] = {
    {"moments", moments, METH_VARARGS, "moments(pixels, pixel_bytes, channels) -> (sums, sums_of_squares, minima, maxima)"},
    {"histogram", histogram, METH_VARARGS, "histogram(pixels, pixel_bytes, channels, counts, step=1) -> None; adds every step-th pixel into counts"},
    {"add_resized", add_resized, METH_VARARGS,
     "add_resized(pixels, width, height, pixel_bytes, side, total) -> None; adds the side x side box average"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pixels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pixels(void) { return PyModule_Create(&module); }
