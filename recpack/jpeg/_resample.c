/* Shrinking one 8-bit image plane: the resize of pack --resize's YCbCr path.
 *
 * Why our own: that path never leaves the JPEG's planes (luma at full size,
 * chroma at half), which skips the colour conversion and chroma resampling
 * on both sides of the resize and resizes 1.5 bytes a pixel instead of 4;
 * Pillow-SIMD is vectorised only for 4-byte pixels, and its 1-byte (L)
 * resize costs more than its RGBX one.
 *
 * The filter is Pillow's BILINEAR: a triangle whose support grows with the
 * reduction, weights normalised to 1 over the input pixels inside the image,
 * as 14-bit fixed point (so that SSE2's pmaddwd takes pixel and weight pairs
 * as 16-bit values).  Two passes: vertical first, 16 columns at a time,
 * then horizontal over the fewer rows left, four rows and a window of up to
 * 8 pixels at a time.  Without SSE2, and in the horizontal pass for windows
 * over 8 pixels (shrinking more than 3x), plain loops give the same results.
 */
#include "_resample.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define PRECISION_BITS 14 /* weights up to 1 fit int16; pixel x weight pairs summed fit int32 */
#define ROUNDING (1 << (PRECISION_BITS - 1))
#define VECTOR_TAPS 8 /* pixels a horizontal window reads at once */
#define ROW_SLACK VECTOR_TAPS /* bytes after each intermediate row, so that a window near its end stays inside */

/* One axis's windows: output i reads count[i] inputs from first[i], with weights[i * taps + k] (zero past
 * count[i]). */
struct windows {
    unsigned int *first, *count;
    int16_t *weights;
    unsigned int taps;
};

static double triangle(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static void free_windows(struct windows *w) {
    free(w->first);
    free(w->count);
    free(w->weights);
}

/* A triangle of unit support, widened when shrinking: the filter's half-width in input pixels. */
static double half_width(double scale) {
    return scale > 1.0 ? scale : 1.0;
}

static int make_windows(struct windows *w, unsigned int in_size, unsigned int out_size, const struct axis_map *map) {
    double needed = ceil(fmax(half_width(fabs(map->scale)), half_width(map->edge_scale))) * 2 + 1, *raw;
    unsigned int i, k;
    if (needed > in_size + 2.0) /* no window is wider than the input */
        needed = in_size + 2.0;
    w->taps = needed > VECTOR_TAPS ? (unsigned int)needed : VECTOR_TAPS;
    w->first = malloc(out_size * sizeof *w->first);
    w->count = malloc(out_size * sizeof *w->count);
    w->weights = calloc((size_t)out_size * w->taps, sizeof *w->weights);
    raw = malloc(w->taps * sizeof *raw);
    if (w->first == NULL || w->count == NULL || w->weights == NULL || raw == NULL) {
        free_windows(w);
        free(raw);
        return -1;
    }
    for (i = 0; i < out_size; i++) {
        double centre = map->offset + (i + 0.5) * map->scale, support = half_width(fabs(map->scale)), total = 0.0;
        if (centre > map->edge_centre)
            centre = map->edge_centre, support = half_width(map->edge_scale);
        int low = (int)(centre - support + 0.5), high = (int)(centre + support + 0.5);
        if (low < 0)
            low = 0;
        if (high > (int)in_size)
            high = (int)in_size;
        if (high <= low) /* an output centred beyond the input: take its nearest pixel */
            low = high - 1 >= 0 ? high - 1 : 0, high = low + 1;
        w->first[i] = (unsigned int)low;
        w->count[i] = (unsigned int)(high - low);
        for (k = 0; k < w->count[i]; k++)
            total += raw[k] = triangle((low + k - centre + 0.5) / support);
        for (k = 0; k < w->count[i]; k++)
            w->weights[(size_t)i * w->taps + k] =
                (int16_t)(0.5 + (total > 0.0 ? raw[k] / total : 1.0 / w->count[i]) * (1 << PRECISION_BITS));
    }
    free(raw);
    return 0;
}

static unsigned char clip8(int32_t sum) {
    sum >>= PRECISION_BITS;
    return sum < 0 ? 0 : sum > 255 ? 255 : (unsigned char)sum;
}

/* Columns [from, width) of out row = weighted sum of in rows. */
static void vertical_columns(const struct plane *in, const struct windows *rows, unsigned int y,
                             unsigned char *target, unsigned int from) {
    const int16_t *weights = rows->weights + (size_t)y * rows->taps;
    unsigned int x, k;
    for (x = from; x < in->width; x++) {
        int32_t sum = ROUNDING;
        for (k = 0; k < rows->count[y]; k++)
            sum += weights[k] * in->pixels[(rows->first[y] + k) * in->stride + x];
        target[x] = clip8(sum);
    }
}

#ifdef __SSE2__
/* 16 columns at a time: two rows' pixels interleaved as 16-bit pairs, one pmaddwd per pair of rows and 4
 * columns.  Returns the columns done. */
static unsigned int vertical_vectors(const struct plane *in, const struct windows *rows, unsigned int y,
                                     unsigned char *target, __m128i *weight_pairs) {
    const int16_t *weights = rows->weights + (size_t)y * rows->taps;
    const unsigned char *top = in->pixels + rows->first[y] * in->stride;
    const __m128i zero = _mm_setzero_si128();
    unsigned int x, k, pairs = (rows->count[y] + 1) / 2;
    for (k = 0; k < pairs; k++) { /* an odd count pairs its last row with nothing */
        int16_t second = 2 * k + 1 < rows->count[y] ? weights[2 * k + 1] : 0;
        weight_pairs[k] =
            _mm_set1_epi32((int32_t)((uint32_t)(uint16_t)weights[2 * k] | (uint32_t)(uint16_t)second << 16));
    }
    for (x = 0; x + 16 <= in->width; x += 16) {
        __m128i sums[4];
        for (k = 0; k < 4; k++)
            sums[k] = _mm_set1_epi32(ROUNDING);
        for (k = 0; k < pairs; k++) {
            const unsigned char *row = top + 2 * k * in->stride + x;
            __m128i first = _mm_loadu_si128((const __m128i *)row);
            __m128i second =
                2 * k + 1 < rows->count[y] ? _mm_loadu_si128((const __m128i *)(row + in->stride)) : zero;
            __m128i low = _mm_unpacklo_epi8(first, second), high = _mm_unpackhi_epi8(first, second);
            sums[0] = _mm_add_epi32(sums[0], _mm_madd_epi16(_mm_unpacklo_epi8(low, zero), weight_pairs[k]));
            sums[1] = _mm_add_epi32(sums[1], _mm_madd_epi16(_mm_unpackhi_epi8(low, zero), weight_pairs[k]));
            sums[2] = _mm_add_epi32(sums[2], _mm_madd_epi16(_mm_unpacklo_epi8(high, zero), weight_pairs[k]));
            sums[3] = _mm_add_epi32(sums[3], _mm_madd_epi16(_mm_unpackhi_epi8(high, zero), weight_pairs[k]));
        }
        for (k = 0; k < 4; k++)
            sums[k] = _mm_srai_epi32(sums[k], PRECISION_BITS);
        _mm_storeu_si128((__m128i *)(target + x),
                         _mm_packus_epi16(_mm_packs_epi32(sums[0], sums[1]), _mm_packs_epi32(sums[2], sums[3])));
    }
    return x;
}
#endif

static int vertical_pass(const struct plane *in, const struct windows *rows, unsigned char *out, size_t out_stride,
                         unsigned int out_height) {
    unsigned int y;
#ifdef __SSE2__
    __m128i *weight_pairs = malloc((rows->taps / 2 + 1) * sizeof *weight_pairs); /* one row's, in turn */
    if (weight_pairs == NULL)
        return -1;
#endif
    for (y = 0; y < out_height; y++) {
        unsigned int done = 0;
#ifdef __SSE2__
        done = vertical_vectors(in, rows, y, out + y * out_stride, weight_pairs);
#endif
        vertical_columns(in, rows, y, out + y * out_stride, done);
    }
#ifdef __SSE2__
    free(weight_pairs);
#endif
    return 0;
}

/* One output pixel from its window of one row. */
static unsigned char window_sum(const unsigned char *window, const int16_t *weights, unsigned int count) {
    int32_t sum = ROUNDING;
    unsigned int k;
    for (k = 0; k < count; k++)
        sum += weights[k] * window[k];
    return clip8(sum);
}

static void horizontal_rows(const unsigned char *in, size_t in_stride, const struct windows *columns,
                            const struct plane *out, unsigned int from) {
    unsigned int y, x;
    for (y = from; y < out->height; y++) {
        const unsigned char *source = in + y * in_stride;
        unsigned char *target = out->pixels + y * out->stride;
        for (x = 0; x < out->width; x++)
            target[x] = window_sum(source + columns->first[x], columns->weights + (size_t)x * columns->taps,
                                   columns->count[x]);
    }
}

#ifdef __SSE2__
/* Windows of at most 4 pixels (shrinking less than 1.5x, or enlarging: what the reader's whole-image
 * placements mostly are): one row at a time, four outputs from two pmaddwd of two windows each, stored
 * together.  Needs the 4-tap weights (four16, zero past each count).  Returns the outputs done per row. */
static unsigned int horizontal_fours(const unsigned char *in, size_t in_stride, const struct windows *columns,
                                     const int16_t *four16, const struct plane *out) {
    const __m128i zero = _mm_setzero_si128(), rounding = _mm_set1_epi32(ROUNDING);
    unsigned int y, x = 0;
    for (y = 0; y < out->height; y++) {
        const unsigned char *source = in + y * in_stride;
        unsigned char *target = out->pixels + y * out->stride;
        for (x = 0; x + 4 <= out->width; x += 4) {
            uint32_t w[4];
            unsigned int k;
            for (k = 0; k < 4; k++)
                memcpy(&w[k], source + columns->first[x + k], 4);
            __m128i ab = _mm_unpacklo_epi8(_mm_unpacklo_epi32(_mm_cvtsi32_si128((int)w[0]), _mm_cvtsi32_si128((int)w[1])), zero);
            __m128i cd = _mm_unpacklo_epi8(_mm_unpacklo_epi32(_mm_cvtsi32_si128((int)w[2]), _mm_cvtsi32_si128((int)w[3])), zero);
            /* [a01, a23, b01, b23] and [c01, c23, d01, d23] -> [a, b, c, d] */
            __m128i s0 = _mm_madd_epi16(ab, _mm_loadu_si128((const __m128i *)(four16 + (size_t)x * 4)));
            __m128i s1 = _mm_madd_epi16(cd, _mm_loadu_si128((const __m128i *)(four16 + (size_t)x * 4 + 8)));
            s0 = _mm_shuffle_epi32(s0, _MM_SHUFFLE(3, 1, 2, 0));
            s1 = _mm_shuffle_epi32(s1, _MM_SHUFFLE(3, 1, 2, 0));
            __m128i totals = _mm_add_epi32(_mm_unpacklo_epi64(s0, s1), _mm_unpackhi_epi64(s0, s1));
            totals = _mm_srai_epi32(_mm_add_epi32(totals, rounding), PRECISION_BITS);
            totals = _mm_packs_epi32(totals, totals);
            uint32_t bytes = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(totals, totals));
            memcpy(target + x, &bytes, 4);
        }
        for (; x < out->width; x++)
            target[x] = window_sum(source + columns->first[x], columns->weights + (size_t)x * columns->taps,
                                   columns->count[x]);
    }
    return out->height;
}

/* Four rows at a time, each window of 8 pixels (zero weights past its count, ROW_SLACK readable past a
 * row's end) in one pmaddwd; the four rows' partial sums are reduced together.  Returns rows done. */
static unsigned int horizontal_vectors(const unsigned char *in, size_t in_stride, const struct windows *columns,
                                       const struct plane *out) {
    const __m128i zero = _mm_setzero_si128(), rounding = _mm_set1_epi32(ROUNDING);
    unsigned int y, x, r;
    if (columns->taps != VECTOR_TAPS)
        return 0;
    for (y = 0; y + 4 <= out->height; y += 4) {
        const unsigned char *source = in + y * in_stride;
        unsigned char *target = out->pixels + y * out->stride;
        for (x = 0; x < out->width; x++) {
            const unsigned char *window = source + columns->first[x];
            __m128i weights = _mm_loadu_si128((const __m128i *)(columns->weights + (size_t)x * VECTOR_TAPS));
            __m128i sums[4];
            for (r = 0; r < 4; r++) {
                __m128i pixels = _mm_loadl_epi64((const __m128i *)(window + r * in_stride));
                sums[r] = _mm_madd_epi16(_mm_unpacklo_epi8(pixels, zero), weights);
            }
            /* [a0+a2, b0+b2, a1+a3, b1+b3] for rows a, b; then the four rows' totals side by side */
            __m128i rows01 = _mm_add_epi32(_mm_unpacklo_epi32(sums[0], sums[1]), _mm_unpackhi_epi32(sums[0], sums[1]));
            __m128i rows23 = _mm_add_epi32(_mm_unpacklo_epi32(sums[2], sums[3]), _mm_unpackhi_epi32(sums[2], sums[3]));
            __m128i totals = _mm_add_epi32(_mm_unpacklo_epi64(rows01, rows23), _mm_unpackhi_epi64(rows01, rows23));
            totals = _mm_srai_epi32(_mm_add_epi32(totals, rounding), PRECISION_BITS);
            totals = _mm_packs_epi32(totals, totals);
            uint32_t bytes = (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(totals, totals));
            for (r = 0; r < 4; r++)
                target[r * out->stride + x] = (unsigned char)(bytes >> (8 * r));
        }
    }
    return y;
}
#endif

static int horizontal_pass(const unsigned char *in, size_t in_stride, const struct windows *columns,
                           const struct plane *out) {
    unsigned int done = 0;
#ifdef __SSE2__
    unsigned int x, k, widest = 0;
    for (x = 0; x < out->width; x++)
        widest = columns->count[x] > widest ? columns->count[x] : widest;
    if (widest <= 4 && out->width >= 4) {
        int16_t *four16 = malloc((size_t)out->width * 4 * sizeof *four16);
        if (four16 == NULL)
            return -1;
        for (x = 0; x < out->width; x++)
            for (k = 0; k < 4; k++)
                four16[(size_t)x * 4 + k] = columns->weights[(size_t)x * columns->taps + k];
        done = horizontal_fours(in, in_stride, columns, four16, out);
        free(four16);
    } else {
        done = horizontal_vectors(in, in_stride, columns, out);
    }
#endif
    horizontal_rows(in, in_stride, columns, out, done);
    return 0;
}

int resample_plane(const struct plane *in, const struct plane *out, const struct axis_map *x,
                   const struct axis_map *y) {
    struct windows rows = {0}, columns = {0};
    size_t between_stride = (size_t)in->width + ROW_SLACK;
    unsigned char *between = calloc(between_stride, out->height); /* zeroed: the slack is read, times 0 */
    int result = -1;
    if (between != NULL && make_windows(&rows, in->height, out->height, y) == 0) {
        if (make_windows(&columns, in->width, out->width, x) == 0) {
            if (vertical_pass(in, &rows, between, between_stride, out->height) == 0)
                result = horizontal_pass(between, between_stride, &columns, out);
            free_windows(&columns);
        }
        free_windows(&rows);
    }
    free(between);
    return result;
}

void pad_plane(const struct plane *out, unsigned int padded_width, unsigned int padded_height) {
    unsigned int y;
    for (y = 0; y < out->height; y++) {
        unsigned char *row = out->pixels + y * out->stride;
        memset(row + out->width, row[out->width - 1], padded_width - out->width);
    }
    for (; y < padded_height; y++)
        memcpy(out->pixels + y * out->stride, out->pixels + (out->height - 1) * out->stride, padded_width);
}
