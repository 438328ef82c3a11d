/* Per-image pixel arithmetic for `recpack stats`, row by row, with the GIL released.
 *
 * Why C, and why rows: a statistics pass must keep up with full-size decoding on every core, and it
 * must see every pixel (a mean could come from the DC coefficients, a standard deviation cannot).
 * numpy's uint8 reductions cost more than the decode they follow (an axis-0 sum of RGBX pixels
 * 1.4x the decode, the sum of squares 2x), and even in C three passes over a decoded 470 px image
 * (880 KB of RGBX, past the L2 cache) cost a quarter of the decode in cache misses alone.  So
 * measure_jpeg() never makes the whole image: libjpeg-turbo decodes STRIP_ROWS rows at a time into
 * a small buffer, and each row is measured while it is in the L1 cache.  The decode's settings are
 * those of recpack.jpeg._libjpeg.decode_region() at full size (RGBX, ISLOW DCT, libjpeg's default
 * upsampling, warnings ignored), so the pixels are the ones the reader decodes.
 *
 * Every result is an exact integer, so partial results over any split of a dataset add up to the
 * same totals (recpack.measure.stats.tally).
 *
 * measure_jpeg(data, side, resized, histogram, step, max_pixels, undo=False)
 *     -> (width, height, (sums, sums_of_squares, minima, maxima))
 *   For a grayscale or YCbCr/RGB JPEG; ValueError with libjpeg's message when it does not decode
 *   (and nothing added anywhere), TypeError for arguments of the wrong kind.  undo takes a measured
 *   image's share out of histogram and resized again (its record failed for another reason).
 * measure_rgbx(pixels, width, height, side, resized, histogram, step, undo=False, path=best_path())
 *     -> (sums, sums_of_squares, minima, maxima)
 *   The same over pixels decoded elsewhere (Pillow: CMYK JPEGs, PNGs), undo as in measure_jpeg; path
 *   (tests) names the path to take: 0 plain C, 1 AVX2, at most best_path().
 * best_path() -> the best of those this CPU has, the one measure_jpeg always takes.
 *   Both: per RGB channel, the sums of values and of squares, minima and maxima over every pixel;
 *   every step-th pixel (row-major) counted into histogram (3 x 256 uint64); and, unless resized is
 *   None, the image squashed to side x side (nearest neighbour, see resize below) added into resized
 *   (side x side x 4 uint16, X unused): it holds 257 images; the caller moves it to 64 bits by then.
 * histogram(data, pixel_bytes, channels, counts, step=1) -> None
 *   Adds the count of each byte value per channel, over every step-th pixel, into counts
 *   (channels x 256 uint64): masks' class pixels.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

#define STRIP_ROWS 2 /* rows decoded at a time: measured while they are in the L1 cache */

/* --- moments ----------------------------------------------------------------------------------- */

/* Running sums.  The vector path (row_moments_avx2) takes a row 32 bytes (8 RGBX pixels) at a time and
 * spreads each 16-byte half's R, G and B values over 16-bit lanes, zero-extended, in two registers:
 *     rg: words 0-3 R, words 4-7 G (of the half's 4 pixels), in each 128-bit half, so word k holds R
 *         when k % 8 < 4 and G otherwise;
 *     b:  words 0-3 B, words 4-7 zero, so word k holds B when k % 8 < 4 and 0 otherwise.
 * Sums: each word gains one byte (<= 255) per block, so 16-bit sums stay exact for 257 blocks
 * (257 x 255 = 65535).  Squares: vpmaddwd of a register with itself adds the squares of word pairs
 * 2j, 2j + 1 (one channel) into 32-bit lane j: R when j % 4 < 2, G otherwise (rg); B when j % 4 < 2,
 * 0 otherwise (b); at most 2 x 255^2 = 130050 a block, so 32-bit sums stay exact for 33025 blocks
 * (33025 x 130050 = 4294901250 < 2^32).  Then they are added into the 64-bit per-channel totals.
 * Minima and maxima run over the loaded bytes as they are: byte k of a block is channel k % 4 (rows
 * start on a pixel).  Rows under 8 pixels, or all rows where there is no vector path, go a byte at a
 * time straight into the per-channel totals. */
#define SUM_BLOCKS 257
#define SQUARE_BLOCKS 33025
struct moments {
    uint16_t sum16[2][16];    /* rg, b as above */
    uint32_t squares32[2][8]; /* rg, b as above */
    unsigned int sum_blocks, square_blocks;
    unsigned char lane_low[32], lane_high[32]; /* byte k: channel k % 4 */
    uint64_t sum[4], squares[4];
    unsigned char low[4], high[4];
};

static void moments_start(struct moments *m) {
    memset(m, 0, sizeof *m);
    memset(m->lane_low, 255, sizeof m->lane_low);
    memset(m->low, 255, sizeof m->low);
}

static void flush_sums(struct moments *m) {
    unsigned int k;
    for (k = 0; k < 16; k++) {
        m->sum[k % 8 < 4 ? 0 : 1] += m->sum16[0][k];
        m->sum[k % 8 < 4 ? 2 : 3] += m->sum16[1][k]; /* [3]: words that stay 0 */
    }
    memset(m->sum16, 0, sizeof m->sum16);
    m->sum_blocks = 0;
}

static void flush_squares(struct moments *m) {
    unsigned int j;
    for (j = 0; j < 8; j++) {
        m->squares[j % 4 < 2 ? 0 : 1] += m->squares32[0][j];
        m->squares[j % 4 < 2 ? 2 : 3] += m->squares32[1][j]; /* [3]: lanes that stay 0 */
    }
    memset(m->squares32, 0, sizeof m->squares32);
    m->square_blocks = 0;
}

/* The totals per RGB channel, all lanes folded in. */
static void moments_finish(struct moments *m) {
    unsigned int k;
    flush_sums(m);
    flush_squares(m);
    for (k = 0; k < 32; k++) {
        unsigned int c = k % 4;
        m->low[c] = m->lane_low[k] < m->low[c] ? m->lane_low[k] : m->low[c];
        m->high[c] = m->lane_high[k] > m->high[c] ? m->lane_high[k] : m->high[c];
    }
}

/* Bytes start..n-1 of a row one at a time: a row too short for the vector path, or any row without one. */
static void row_moments_plain(const unsigned char *p, size_t start, size_t n, struct moments *m) {
    size_t i;
    for (i = start; i < n; i++) {
        unsigned int c = i % 4, v = p[i];
        m->sum[c] += v;
        m->squares[c] += v * v;
        m->low[c] = v < m->low[c] ? v : m->low[c];
        m->high[c] = v > m->high[c] ? v : m->high[c];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

/* Per block: two in-lane byte shuffles (vpshufb, zero-extending into the rg and b words above), two
 * vpmaddwd and two 32-bit adds for the squares, two 16-bit adds for the sums, vpminub and vpmaxub:
 * ten vector uops where masks, shifts and vpmullw took fifteen.  A row's last partial block (its
 * width not a multiple of 8 pixels, and at least 8 pixels) is one more block at the row's last 32
 * bytes: its bytes already counted are masked to zero for the sums and squares (adding nothing), and
 * minima and maxima take the whole block (a byte seen twice changes neither).  It starts a multiple
 * of 4 bytes into the row, so byte k is still channel k % 4.  It counts as a block for the flushes. */
struct vector_sums {
    __m256i rg_sum, b_sum, rg_squares, b_squares, low, high;
};

/* One block: v as loaded (minima, maxima), counted for the sums and squares. */
__attribute__((target("avx2"), always_inline)) static inline void block_moments(struct vector_sums *s, __m256i v,
                                                                                __m256i counted) {
    const __m256i to_rg = _mm256_setr_epi8(0, -1, 4, -1, 8, -1, 12, -1, 1, -1, 5, -1, 9, -1, 13, -1,
                                           0, -1, 4, -1, 8, -1, 12, -1, 1, -1, 5, -1, 9, -1, 13, -1);
    const __m256i to_b = _mm256_setr_epi8(2, -1, 6, -1, 10, -1, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          2, -1, 6, -1, 10, -1, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    __m256i rg = _mm256_shuffle_epi8(counted, to_rg), b = _mm256_shuffle_epi8(counted, to_b);
    s->rg_sum = _mm256_add_epi16(s->rg_sum, rg);
    s->b_sum = _mm256_add_epi16(s->b_sum, b);
    s->rg_squares = _mm256_add_epi32(s->rg_squares, _mm256_madd_epi16(rg, rg));
    s->b_squares = _mm256_add_epi32(s->b_squares, _mm256_madd_epi16(b, b));
    s->low = _mm256_min_epu8(s->low, v);
    s->high = _mm256_max_epu8(s->high, v);
}

__attribute__((target("avx2"))) static size_t row_moments_avx2(const unsigned char *p, size_t n, struct moments *m) {
    static const unsigned char tail_mask[64] = {
        0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
        0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
    const size_t whole = n / 32, tail = n % 32;
    size_t b = 0;
    struct vector_sums s;
    if (whole == 0)
        return 0;
    s.low = _mm256_loadu_si256((const __m256i *)m->lane_low);
    s.high = _mm256_loadu_si256((const __m256i *)m->lane_high);
    s.rg_sum = _mm256_loadu_si256((const __m256i *)m->sum16[0]);
    s.b_sum = _mm256_loadu_si256((const __m256i *)m->sum16[1]);
    s.rg_squares = _mm256_loadu_si256((const __m256i *)m->squares32[0]);
    s.b_squares = _mm256_loadu_si256((const __m256i *)m->squares32[1]);
    for (;;) { /* the counts below the flush limits on entry, and on leaving */
        size_t stop = b + (SUM_BLOCKS - m->sum_blocks);
        if (stop > b + (SQUARE_BLOCKS - m->square_blocks))
            stop = b + (SQUARE_BLOCKS - m->square_blocks);
        if (stop > whole)
            stop = whole;
        m->sum_blocks += (unsigned int)(stop - b);
        m->square_blocks += (unsigned int)(stop - b);
        for (; b < stop; b++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(p + b * 32));
            block_moments(&s, v, v);
        }
        if (b == whole && tail != 0 && m->sum_blocks < SUM_BLOCKS && m->square_blocks < SQUARE_BLOCKS) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(p + n - 32)); /* the last partial block, as above */
            block_moments(&s, v, _mm256_and_si256(v, _mm256_loadu_si256((const __m256i *)(tail_mask + tail))));
            m->sum_blocks++;
            m->square_blocks++;
            b++;
        }
        if (m->sum_blocks == SUM_BLOCKS || m->square_blocks == SQUARE_BLOCKS) {
            _mm256_storeu_si256((__m256i *)m->sum16[0], s.rg_sum);
            _mm256_storeu_si256((__m256i *)m->sum16[1], s.b_sum);
            _mm256_storeu_si256((__m256i *)m->squares32[0], s.rg_squares);
            _mm256_storeu_si256((__m256i *)m->squares32[1], s.b_squares);
            if (m->sum_blocks == SUM_BLOCKS)
                flush_sums(m);
            if (m->square_blocks == SQUARE_BLOCKS)
                flush_squares(m);
            s.rg_sum = _mm256_loadu_si256((const __m256i *)m->sum16[0]);
            s.b_sum = _mm256_loadu_si256((const __m256i *)m->sum16[1]);
            s.rg_squares = _mm256_loadu_si256((const __m256i *)m->squares32[0]);
            s.b_squares = _mm256_loadu_si256((const __m256i *)m->squares32[1]);
        }
        if (b >= whole + (tail != 0))
            break;
    }
    _mm256_storeu_si256((__m256i *)m->sum16[0], s.rg_sum);
    _mm256_storeu_si256((__m256i *)m->sum16[1], s.b_sum);
    _mm256_storeu_si256((__m256i *)m->squares32[0], s.rg_squares);
    _mm256_storeu_si256((__m256i *)m->squares32[1], s.b_squares);
    _mm256_storeu_si256((__m256i *)m->lane_low, s.low);
    _mm256_storeu_si256((__m256i *)m->lane_high, s.high);
    return n;
}
#endif

/* The paths: PATH_PLAIN (bytes one at a time), PATH_AVX2.  A pass takes the best the CPU has; tests
 * name each one (measure_rgbx's path), so the plain one is tested on CPUs that never take it.
 *
 * Tried and dropped: AVX512-VNNI moments (vpdpbusd: x times 1 for the sums, times x - 128 for the
 * squares).  28% faster than AVX2 on long rows alone, it made measure_jpeg as a whole 7% slower on an
 * Ice Lake Xeon (builds alternated in one process), probably the core changing power state each time
 * the row loop enters AVX-512 code between libjpeg's rows; not investigated further. */
enum { PATH_PLAIN, PATH_AVX2 };

static int best_path(void) {
#ifdef HAVE_AVX2_PATH
    return __builtin_cpu_supports("avx2") ? PATH_AVX2 : PATH_PLAIN;
#else
    return PATH_PLAIN;
#endif
}

static void row_moments(const unsigned char *row, size_t n, int path, struct moments *m) {
    size_t done = 0;
#ifdef HAVE_AVX2_PATH
    if (path == PATH_AVX2)
        done = row_moments_avx2(row, n, m);
#else
    (void)path;
#endif
    row_moments_plain(row, done, n, m);
}

/* --- the average image ------------------------------------------------------------------------- */

/* Each image is squashed to side x side by nearest neighbour: output pixel (ox, oy) is the input pixel
 * under its centre, (floor((ox + 0.5) * width / side), floor((oy + 0.5) * height / side)), in exact
 * integer arithmetic.  Why not a box average: the average of many images is smooth, so a box filter
 * moves it by less than its own sampling noise (2,000 corpus images at 224: 0.40 levels of 255 on
 * average, 1.9 at most, where the standard error of each average pixel is 1.6), and it cost a seventh
 * of the decode (every pixel summed into columns, then side x side boxes per image), where this is
 * side x side loads.
 *
 * At 224 the average image costs about 3% of the decode: for each output pixel a pick and the adds of
 * its channels into 16-bit totals (400 KB, which the cache keeps poorly next to libjpeg's work).  The
 * vector path picks through windows, 6 instructions for about 4 outputs where a 4-byte copy took 3 an
 * output (end to end under 1% faster: the adds into the totals cost as much).  A window is 8
 * consecutive input pixels (one 32-byte load) and the next outputs whose columns fall in it, at most
 * 8, moved into place by one vpermd and written with one 32-byte store (the next window's store
 * overwrites what lies past its outputs; picked has 8 pixels of slack).  The windows depend on the
 * width only, so they are planned once an image.  When windows would average fewer than two outputs
 * (inputs over 16 times the side), or the row is under 8 pixels, or the CPU has no AVX2, pixels are
 * copied one at a time. */
#define WINDOW_PIXELS 8

struct resize {
    unsigned int side, next; /* next: the output row to fill */
    int undo;                /* take the rows out of total again (see measure_jpeg) */
    int vector;              /* the AVX2 path */
    unsigned int *row_of;    /* per output row, its input row (non-decreasing) */
    unsigned int *column_of; /* per output column, its input column */
    unsigned char *picked;   /* (side + WINDOW_PIXELS) x 4: an output row's pixels, picked from its input row */
    uint16_t *total;         /* side x side x 4 */
    unsigned int windows;    /* 0: pick pixel by pixel */
    unsigned int *window_start, *window_outputs; /* per window: its first input column, the outputs it fills */
    int32_t *window_lanes;   /* per window, 8 lanes: each output's column - window_start (unused lanes 0) */
};

static unsigned int centre(unsigned int k, unsigned int n, unsigned int side) {
    return (unsigned int)(((uint64_t)2 * k + 1) * n / ((uint64_t)2 * side));
}

/* The windows over a row width pixels wide (see above): how many, 0 when picking pixel by pixel pays. */
static unsigned int plan_windows(struct resize *r, unsigned int width, int vector) {
    unsigned int k = 0, windows = 0, lane;
    if (!vector || width < WINDOW_PIXELS)
        return 0;
    while (k < r->side) {
        unsigned int start = r->column_of[k] < width - WINDOW_PIXELS ? r->column_of[k] : width - WINDOW_PIXELS;
        int32_t *lanes = r->window_lanes + (size_t)windows * WINDOW_PIXELS;
        for (lane = 0; lane < WINDOW_PIXELS && k < r->side && r->column_of[k] < start + WINDOW_PIXELS; lane++, k++)
            lanes[lane] = (int32_t)(r->column_of[k] - start);
        r->window_outputs[windows] = lane;
        for (; lane < WINDOW_PIXELS; lane++)
            lanes[lane] = 0;
        r->window_start[windows++] = start;
    }
    return 2 * windows <= r->side ? windows : 0;
}

static int resize_start(struct resize *r, unsigned int width, unsigned int height, unsigned int side, uint16_t *total,
                        int vector) {
    unsigned int k;
    memset(r, 0, sizeof *r);
    if (total == NULL)
        return 0;
    r->side = side;
    r->total = total;
    /* one block: row_of, column_of, window_start, window_outputs (side each), window_lanes (8 x side), picked */
    r->row_of = malloc(sizeof(unsigned int) * 4 * side + sizeof(int32_t) * WINDOW_PIXELS * side +
                       4 * ((size_t)side + WINDOW_PIXELS));
    if (r->row_of == NULL)
        return -1;
    r->column_of = r->row_of + side;
    r->window_start = r->row_of + 2 * side;
    r->window_outputs = r->row_of + 3 * side;
    r->window_lanes = (int32_t *)(r->row_of + 4 * side);
    r->picked = (unsigned char *)(r->window_lanes + (size_t)WINDOW_PIXELS * side);
    for (k = 0; k < side; k++) {
        r->row_of[k] = centre(k, height, side);
        r->column_of[k] = centre(k, width, side);
    }
    r->vector = vector;
    r->windows = plan_windows(r, width, vector);
    return 0;
}

static void resize_end(struct resize *r) { free(r->row_of); }

static void pick_pixels(const struct resize *r, const unsigned char *row) {
    unsigned int ox;
    for (ox = 0; ox < r->side; ox++)
        memcpy(r->picked + 4 * (size_t)ox, row + 4 * (size_t)r->column_of[ox], 4);
}

#ifdef HAVE_AVX2_PATH
__attribute__((target("avx2"))) static void pick_windows(const struct resize *r, const unsigned char *row) {
    const unsigned int windows = r->windows, *start = r->window_start, *outputs = r->window_outputs;
    const int32_t *lanes = r->window_lanes; /* in locals: the stores below could alias r's fields */
    unsigned char *out = r->picked;
    unsigned int w;
    for (w = 0; w < windows; w++) {
        __m256i pixels = _mm256_loadu_si256((const __m256i *)(row + 4 * (size_t)start[w]));
        __m256i order = _mm256_loadu_si256((const __m256i *)(lanes + (size_t)w * WINDOW_PIXELS));
        _mm256_storeu_si256((__m256i *)out, _mm256_permutevar8x32_epi32(pixels, order));
        out += 4 * (size_t)outputs[w];
    }
}

/* total[i] += picked[i] (or -=, undo) for i < n, 16 at a time: what the plain loop below does 8 at a time. */
__attribute__((target("avx2"))) static size_t add_picked_avx2(uint16_t *total, const unsigned char *picked, size_t n,
                                                              int undo) {
    size_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        __m256i words = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(picked + i)));
        __m256i sums = _mm256_loadu_si256((const __m256i *)(total + i));
        sums = undo ? _mm256_sub_epi16(sums, words) : _mm256_add_epi16(sums, words);
        _mm256_storeu_si256((__m256i *)(total + i), sums);
    }
    return i;
}
#endif

/* Input row y arrives: every output row whose centre falls in it takes its pixels (modulo 2^16, so
 * that an undo is exact).  In two steps, each a plain loop: the row's side pixels picked into a small
 * buffer, then that buffer widened and added into the totals 16 at a time (AVX2; else the compiler's
 * vectors, 8).  A pixel at a time, widening and adding each one, took three times as long, as did AVX2
 * gathers.  Rows of an image shorter than side repeat: the picked pixels are reused. */
static void resize_row(struct resize *r, const unsigned char *row, unsigned int y) {
    const unsigned int side = r->side;
    const unsigned char *picked = r->picked;
    unsigned int picked_row = 0;
    while (r->next < side && r->row_of[r->next] == y) {
        uint16_t *out = r->total + (size_t)r->next++ * side * 4;
        size_t i, n = (size_t)side * 4;
        if (!picked_row++) {
#ifdef HAVE_AVX2_PATH
            if (r->windows)
                pick_windows(r, row);
            else
#endif
                pick_pixels(r, row);
        }
        i = 0;
#ifdef HAVE_AVX2_PATH
        if (r->vector)
            i = add_picked_avx2(out, picked, n, r->undo);
#endif
        if (r->undo)
            for (; i < n; i++)
                out[i] = (uint16_t)(out[i] - picked[i]);
        else
            for (; i < n; i++)
                out[i] = (uint16_t)(out[i] + picked[i]);
    }
}

/* --- one pass --------------------------------------------------------------------------------- */

struct pass {
    unsigned int width, height;
    int path; /* PATH_PLAIN or PATH_AVX2 */
    uint64_t count; /* 1, or -1 (modulo 2^64) to take rows out of the histogram again */
    struct moments moments;
    struct resize resize;
    uint64_t *histogram; /* 3 x 256 */
    size_t step, next_sample; /* histogram: the next pixel to count, row-major */
};

static void measure_row(struct pass *pass, const unsigned char *row, unsigned int y) {
    const size_t width = pass->width, step = pass->step, row_start = (size_t)y * width;
    const uint64_t count = pass->count;
    uint64_t *histogram = pass->histogram;
    size_t x;
    row_moments(row, width * 4, pass->path, &pass->moments);
    for (x = pass->next_sample - row_start; x < width; x += step) {
        const unsigned char *pixel = row + x * 4;
        histogram[pixel[0]] += count;
        histogram[256 + pixel[1]] += count;
        histogram[512 + pixel[2]] += count;
    }
    pass->next_sample = row_start + x;
    if (pass->resize.total != NULL)
        resize_row(&pass->resize, row, y);
}

static int pass_start(struct pass *pass, unsigned int width, unsigned int height, unsigned int side, uint16_t *resized,
                      uint64_t *histogram, size_t step, int undo, int path) {
    pass->count = undo ? (uint64_t)-1 : 1;
    pass->width = width;
    pass->height = height;
    pass->histogram = histogram;
    pass->step = step;
    pass->next_sample = 0;
    pass->path = path;
    moments_start(&pass->moments);
    int failed = resize_start(&pass->resize, width, height, side, resized, path != PATH_PLAIN);
    pass->resize.undo = undo;
    return failed;
}

static PyObject *channel_tuple(const uint64_t *values) {
    return Py_BuildValue("(KKK)", (unsigned long long)values[0], (unsigned long long)values[1],
                         (unsigned long long)values[2]);
}

static PyObject *pass_result(struct pass *pass) {
    struct moments *m = &pass->moments;
    moments_finish(m);
    uint64_t low[3] = {m->low[0], m->low[1], m->low[2]}, high[3] = {m->high[0], m->high[1], m->high[2]};
    return Py_BuildValue("(NNNN)", channel_tuple(m->sum), channel_tuple(m->squares), channel_tuple(low),
                         channel_tuple(high));
}

/* --- arguments ------------------------------------------------------------------------------- */

static int writable(Py_buffer *buffer, Py_ssize_t itemsize, size_t count, const char *what) {
    if (buffer->itemsize != itemsize || (size_t)buffer->len != count * itemsize || !PyBuffer_IsContiguous(buffer, 'C')) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous buffer of %zu %zd-byte items", what, count, itemsize);
        return -1;
    }
    return 0;
}

/* resized is None or a writable side x side x 4 uint16 buffer; histogram 3 x 256 uint64. */
static int take_outputs(PyObject *resized_object, unsigned int side, Py_buffer *resized, PyObject *histogram_object,
                        Py_buffer *histogram) {
    resized->obj = NULL;
    histogram->obj = NULL;
    if (PyObject_GetBuffer(histogram_object, histogram, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (writable(histogram, 8, 3 * 256, "histogram") < 0)
        return -1;
    if (resized_object == Py_None)
        return 0;
    if (side == 0) {
        PyErr_SetString(PyExc_TypeError, "side must be at least 1");
        return -1;
    }
    if (PyObject_GetBuffer(resized_object, resized, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    return writable(resized, 2, (size_t)side * side * 4, "resized");
}

static void release_outputs(Py_buffer *resized, Py_buffer *histogram) {
    if (resized->obj != NULL)
        PyBuffer_Release(resized);
    if (histogram->obj != NULL)
        PyBuffer_Release(histogram);
}

/* --- measure_rgbx ------------------------------------------------------------------------------ */

static PyObject *measure_rgbx(PyObject *self, PyObject *args) {
    Py_buffer input, resized, histogram;
    unsigned int width, height, side, y;
    Py_ssize_t step;
    PyObject *resized_object, *histogram_object, *result = NULL;
    struct pass pass;
    int failed, undo = 0, path = best_path();
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIIOOn|pi", &input, &width, &height, &side, &resized_object, &histogram_object,
                          &step, &undo, &path))
        return NULL;
    if (take_outputs(resized_object, side, &resized, histogram_object, &histogram) < 0)
        goto done;
    if (width == 0 || height == 0 || step < 1 || (size_t)input.len != (size_t)width * height * 4) {
        PyErr_SetString(PyExc_TypeError, "measure_rgbx needs width x height RGBX pixels and a step of at least 1");
        goto done;
    }
    if (path < PATH_PLAIN || path > best_path()) {
        PyErr_Format(PyExc_ValueError, "path %d: this CPU has paths 0 to %d", path, best_path());
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    failed = pass_start(&pass, width, height, side, resized.obj ? resized.buf : NULL, histogram.buf, (size_t)step, undo,
                        path);
    if (!failed)
        for (y = 0; y < height; y++)
            measure_row(&pass, (const unsigned char *)input.buf + (size_t)y * width * 4, y);
    resize_end(&pass.resize);
    Py_END_ALLOW_THREADS
    result = failed ? PyErr_NoMemory() : pass_result(&pass);
done:
    release_outputs(&resized, &histogram);
    PyBuffer_Release(&input);
    return result;
}

/* --- measure_jpeg ------------------------------------------------------------------------------ */

struct error_state {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo) {
    struct error_state *state = (struct error_state *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, state->message);
    longjmp(state->jump, 1);
}

static void ignore_message(j_common_ptr cinfo, int level) { /* the reader decodes past warnings too */
    (void)cinfo;
    (void)level;
}

/* Decode input and measure it into pass, row by row; NULL, or why it failed (with *no_memory set when
 * that is the reason).  Rows measured before a failure have reached the histogram and the average
 * image: measure_jpeg decodes the same bytes again with undo set, which takes exactly those rows out
 * (the decode is deterministic, so it fails at the same row). */
static const char *decode_and_measure(const Py_buffer *input, struct pass *pass, unsigned int side, uint16_t *resized,
                                      uint64_t *histogram, size_t step, unsigned long long max_pixels, int undo,
                                      int *no_memory, char *message) {
    struct jpeg_decompress_struct cinfo;
    struct error_state error;
    const char *volatile failure = NULL;
    volatile int made = 0;
    unsigned char *volatile strip = NULL; /* read after a longjmp */
    JSAMPROW rows[STRIP_ROWS];
    unsigned int k;
    cinfo.err = jpeg_std_error(&error.manager);
    error.manager.error_exit = on_error;
    error.manager.emit_message = ignore_message;
    error.message[0] = '\0';
    memset(&pass->resize, 0, sizeof pass->resize);
    *no_memory = 0;
    if (setjmp(error.jump)) {
        failure = error.message;
    } else {
        jpeg_create_decompress(&cinfo);
        made = 1;
        jpeg_mem_src(&cinfo, (const unsigned char *)input->buf, (unsigned long)input->len);
        jpeg_read_header(&cinfo, TRUE);
        if (cinfo.num_components != 1 && cinfo.num_components != 3) {
            failure = "not a grayscale or YCbCr/RGB JPEG";
        } else if ((unsigned long long)cinfo.image_width * cinfo.image_height > max_pixels) {
            failure = "image has more pixels than the decoder's limit";
        } else {
            cinfo.out_color_space = JCS_EXT_RGBX;
            cinfo.dct_method = JDCT_ISLOW;
            jpeg_start_decompress(&cinfo);
        }
    }
    if (failure == NULL) { /* outside the setjmp regions: nothing allocated here is lost to a longjmp */
        strip = malloc((size_t)cinfo.output_width * 4 * STRIP_ROWS);
        *no_memory = strip == NULL ||
                     pass_start(pass, cinfo.output_width, cinfo.output_height, side, resized, histogram, step, undo,
                                best_path());
        if (*no_memory)
            failure = "out of memory";
    }
    if (failure == NULL) {
        for (k = 0; k < STRIP_ROWS; k++)
            rows[k] = strip + (size_t)k * cinfo.output_width * 4;
        if (setjmp(error.jump)) {
            failure = error.message;
        } else {
            while (cinfo.output_scanline < cinfo.output_height) {
                JDIMENSION first = cinfo.output_scanline, got = jpeg_read_scanlines(&cinfo, rows, STRIP_ROWS);
                if (got == 0) {
                    failure = "image data ended early";
                    break;
                }
                for (k = 0; k < got; k++)
                    measure_row(pass, rows[k], first + k);
            }
        }
    }
    if (made)
        jpeg_destroy_decompress(&cinfo); /* no jpeg_finish_decompress: the reader stops after the last row too */
    free(strip);
    resize_end(&pass->resize);
    if (failure == error.message) { /* error lives on this stack frame */
        strcpy(message, error.message[0] ? error.message : "corrupt JPEG");
        return message;
    }
    return failure;
}

static PyObject *measure_jpeg(PyObject *self, PyObject *args) {
    Py_buffer input, resized, histogram;
    unsigned int side;
    Py_ssize_t step;
    unsigned long long max_pixels;
    PyObject *resized_object, *histogram_object, *result = NULL;
    struct pass pass;
    const char *failure;
    char message[JMSG_LENGTH_MAX];
    int no_memory, ignored, undo = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IOOnK|p", &input, &side, &resized_object, &histogram_object, &step, &max_pixels,
                          &undo))
        return NULL;
    if (take_outputs(resized_object, side, &resized, histogram_object, &histogram) < 0)
        goto done;
    if (step < 1) {
        PyErr_SetString(PyExc_TypeError, "step must be at least 1");
        goto done;
    }
    uint16_t *resized_buffer = resized.obj ? resized.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    failure = decode_and_measure(&input, &pass, side, resized_buffer, histogram.buf, (size_t)step, max_pixels, undo,
                                 &no_memory, message);
    if (failure != NULL && !no_memory && !undo) {
        char again[JMSG_LENGTH_MAX];
        decode_and_measure(&input, &pass, side, resized_buffer, histogram.buf, (size_t)step, max_pixels, 1, &ignored,
                           again);
    }
    Py_END_ALLOW_THREADS
    if (no_memory)
        PyErr_NoMemory();
    else if (failure != NULL)
        PyErr_SetString(PyExc_ValueError, failure);
    else {
        PyObject *moments = pass_result(&pass);
        result = moments == NULL ? NULL : Py_BuildValue("(IIN)", pass.width, pass.height, moments);
    }
done:
    release_outputs(&resized, &histogram);
    PyBuffer_Release(&input);
    return result;
}

/* --- histogram -------------------------------------------------------------------------------- */

static PyObject *histogram(PyObject *self, PyObject *args) {
    Py_buffer input, counts;
    unsigned int pixel_bytes, channels, c;
    Py_ssize_t step = 1;
    size_t i, pixels;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*IIw*|n", &input, &pixel_bytes, &channels, &counts, &step))
        return NULL;
    PyObject *result = NULL;
    if (pixel_bytes < 1 || pixel_bytes > 4 || channels < 1 || channels > pixel_bytes || input.len % pixel_bytes != 0 ||
        step < 1) {
        PyErr_SetString(PyExc_TypeError, "histogram needs whole pixels of 1-4 bytes, channels <= pixel_bytes, step >= 1");
    } else if (writable(&counts, 8, (size_t)channels * 256, "counts") == 0) {
        const unsigned char *p = input.buf;
        uint64_t *out = counts.buf;
        pixels = (size_t)input.len / pixel_bytes;
        Py_BEGIN_ALLOW_THREADS
        for (i = 0; i < pixels; i += (size_t)step)
            for (c = 0; c < channels; c++)
                out[c * 256 + p[i * pixel_bytes + c]]++;
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&input);
    PyBuffer_Release(&counts);
    return result;
}

static PyObject *best_path_object(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromLong(best_path());
}

static PyMethodDef methods[] = {
    {"measure_jpeg", measure_jpeg, METH_VARARGS,
     "measure_jpeg(data, side, resized, histogram, step, max_pixels, undo=False) -> (width, height, (sums, squares, minima, maxima))"},
    {"measure_rgbx", measure_rgbx, METH_VARARGS,
     "measure_rgbx(pixels, width, height, side, resized, histogram, step, undo=False, path=best_path())"
     " -> (sums, squares, minima, maxima)"},
    {"best_path", best_path_object, METH_NOARGS, "best_path() -> the best path this CPU has: 0 plain C, 1 AVX2"},
    {"histogram", histogram, METH_VARARGS, "histogram(data, pixel_bytes, channels, counts, step=1) -> None; adds into counts"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pixels", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pixels(void) { return PyModule_Create(&module); }
