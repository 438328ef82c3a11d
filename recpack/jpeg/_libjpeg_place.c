/* _libjpeg_place.c: the reader's decode onto its canvas, inside the YCbCr planes.
 * Part of _libjpeg.c, which includes it (one translation unit: its helpers stay static). */
/* place(data, out, eighths, left, top, width, height, flip) -> bool: a JPEG's source rectangle onto a
 * target rectangle of RGB pixels, for the reader's geometry (recpack.read.decode).
 *
 * Decodes the JPEG at eighths/8 as its planes (libjpeg's raw data: no chroma
 * upsampling, no colour conversion), down to the last iMCU row the rectangle's
 * filter reaches; resamples the part of each plane under the rectangle (full-size
 * pixels, floats) straight onto the target's size with _resample.c, the filter of
 * Pillow's BILINEAR, so that chroma upsampling is the same resample; converts
 * YCbCr to RGB at the target's size, with the integer arithmetic of libjpeg's own
 * converter (jdcolor.c; SSE2 in 14-bit fixed point, at most 1 off it); and
 * writes the rows into out, stride bytes apart (the target inside a larger
 * canvas), mirrored when flip (by the resample's column map: no extra pass).
 *
 * Against decode_region + Pillow-SIMD's RGBX resize + the copy into the canvas:
 * a whole image onto a smaller target skips the upsampling and colour conversion
 * of every full-size pixel, resamples 1.5 bytes a source pixel (4:2:0) instead
 * of 4, and writes the canvas once.  What it cannot skip: raw data refuses
 * jpeg_skip_scanlines and jpeg_crop_scanline, so the iMCU rows above the
 * rectangle and the columns beside it are inverse-transformed too (decode_region
 * skips them), which is why the reader uses it where the rectangle covers most
 * of the image.
 *
 * Pixels differ slightly from decode_region + Pillow's resize, which resample
 * chroma twice (libjpeg's upsampler, then the resize): the tests hold both to a
 * float reference.  false for JPEGs it does not take (not grayscale or YCbCr:
 * RGB-coded, CMYK), which decode_region handles; corrupt data fails with
 * libjpeg's message; warnings are ignored, as decode_region ignores them.
 */

/* libjpeg's YCbCr -> RGB (jdcolor.c: build_ycc_rgb_table, ycc_rgb_convert), to the same integers. */
#define YCC_BITS 16
#define YCC_HALF ((int32_t)1 << (YCC_BITS - 1))
#define YCC_FIX(x) ((int32_t)((x) * (1L << YCC_BITS) + 0.5))

struct ycc_tables {
    int cr_r[256], cb_b[256];
    int32_t cr_g[256], cb_g[256];
};

static void make_ycc_tables(struct ycc_tables *t) {
    int i;
    for (i = 0; i < 256; i++) {
        int32_t x = i - 128;
        t->cr_r[i] = (int)((YCC_FIX(1.40200) * x + YCC_HALF) >> YCC_BITS);
        t->cb_b[i] = (int)((YCC_FIX(1.77200) * x + YCC_HALF) >> YCC_BITS);
        t->cr_g[i] = -YCC_FIX(0.71414) * x;
        t->cb_g[i] = -YCC_FIX(0.34414) * x + YCC_HALF;
    }
}

static unsigned char clamp8(int value) { return value < 0 ? 0 : value > 255 ? 255 : (unsigned char)value; }

#ifdef __SSE2__
/* libjpeg's conversion in 14-bit fixed point, 8 pixels at a time (at most 1 off its tables' result): each
 * product a pmaddwd of (chroma - 128, 1) pairs with (weight, rounding) pairs.  Each pixel is stored as 4
 * bytes 3 apart, in order, the next pixel's store overwriting the fourth: so the last pixel of a row is
 * never done here (its fourth byte is not the target's).  Returns the pixels done. */
#define YCC14(x) ((int)((x) * (1 << 14) + 0.5))
static unsigned int rgb_vectors(const unsigned char *luma, const unsigned char *cb, const unsigned char *cr,
                                unsigned int width, unsigned char *at) {
    const __m128i zero = _mm_setzero_si128(), centre = _mm_set1_epi16(128), one = _mm_set1_epi16(1);
    const __m128i r_weights = _mm_set1_epi32((int32_t)((uint32_t)(uint16_t)YCC14(1.40200) | 8192u << 16));
    const __m128i b_weights = _mm_set1_epi32((int32_t)((uint32_t)(uint16_t)YCC14(1.77200) | 8192u << 16));
    const __m128i g_weights = _mm_set1_epi32(
        (int32_t)((uint32_t)(uint16_t)(int16_t)-YCC14(0.34414) | (uint32_t)(uint16_t)(int16_t)-YCC14(0.71414) << 16));
    const __m128i g_rounding = _mm_set1_epi32(8192);
    unsigned int x, k;
    for (x = 0; x + 8 < width; x += 8) { /* "<": the row's last pixel is left to the caller */
        __m128i l = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(luma + x)), zero);
        __m128i b = _mm_sub_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(cb + x)), zero), centre);
        __m128i r = _mm_sub_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(cr + x)), zero), centre);
#define PRODUCT(pairs_lo, pairs_hi, weights, rounding)                                                               \
    _mm_packs_epi32(_mm_srai_epi32(_mm_add_epi32(_mm_madd_epi16(pairs_lo, weights), rounding), 14),                \
                    _mm_srai_epi32(_mm_add_epi32(_mm_madd_epi16(pairs_hi, weights), rounding), 14))
        __m128i red = _mm_add_epi16(l, PRODUCT(_mm_unpacklo_epi16(r, one), _mm_unpackhi_epi16(r, one), r_weights, zero));
        __m128i blue = _mm_add_epi16(l, PRODUCT(_mm_unpacklo_epi16(b, one), _mm_unpackhi_epi16(b, one), b_weights, zero));
        __m128i green =
            _mm_add_epi16(l, PRODUCT(_mm_unpacklo_epi16(b, r), _mm_unpackhi_epi16(b, r), g_weights, g_rounding));
#undef PRODUCT
        __m128i rg = _mm_unpacklo_epi8(_mm_packus_epi16(red, red), _mm_packus_epi16(green, green));
        __m128i bx = _mm_unpacklo_epi8(_mm_packus_epi16(blue, blue), zero);
        uint32_t rgbx[8];
        _mm_storeu_si128((__m128i *)rgbx, _mm_unpacklo_epi16(rg, bx));
        _mm_storeu_si128((__m128i *)(rgbx + 4), _mm_unpackhi_epi16(rg, bx));
        for (k = 0; k < 8; k++)
            memcpy(at + (size_t)(x + k) * 3, &rgbx[k], 4);
    }
    return x;
}
#endif

/* The target's planes (one for grey, three for colour, width x height each) as RGB rows into out. */
static void write_rgb(const unsigned char *const planes[3], int components, unsigned int width, unsigned int height,
                      unsigned char *out, size_t stride) {
    struct ycc_tables t;
    unsigned int x, y;
    if (components == 3)
        make_ycc_tables(&t);
    for (y = 0; y < height; y++) {
        const unsigned char *luma = planes[0] + (size_t)y * width;
        unsigned char *row = out + (size_t)y * stride;
        if (components == 1) {
            for (x = 0; x < width; x++)
                row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = luma[x];
            continue;
        }
        const unsigned char *cb = planes[1] + (size_t)y * width, *cr = planes[2] + (size_t)y * width;
        x = 0;
#ifdef __SSE2__
        x = rgb_vectors(luma, cb, cr, width, row);
#endif
        for (; x < width; x++) {
            int l = luma[x];
            row[3 * x] = clamp8(l + t.cr_r[cr[x]]);
            row[3 * x + 1] = clamp8(l + (int)((t.cb_g[cb[x]] + t.cr_g[cr[x]]) >> YCC_BITS));
            row[3 * x + 2] = clamp8(l + t.cb_b[cb[x]]);
        }
    }
}

/* Grey, or YCbCr in any sampling: the planes place() takes. */
static int place_taken(const struct jpeg_decompress_struct *cinfo) {
    return (cinfo->num_components == 1 && cinfo->jpeg_color_space == JCS_GRAYSCALE) ||
           (cinfo->num_components == 3 && cinfo->jpeg_color_space == JCS_YCbCr);
}

/* One axis of one plane: where the source rectangle [start, start + length) (in the scaled image's pixels)
 * lies on the plane (resolution fraction of the scaled image's; size pixels), mapped onto out pixels. */
struct plane_span {
    unsigned int first, end; /* the plane's pixels the filter reaches */
    struct axis_map map;     /* relative to first */
};

static struct plane_span span_on_plane(double start, double length, double fraction, unsigned int size,
                                       unsigned int out, int mirror) {
    struct plane_span span;
    double scale = length * fraction / out, from = start * fraction, reach = (scale > 1.0 ? scale : 1.0) + 1.0;
    double low = floor(from - reach), high = ceil(from + length * fraction + reach);
    span.first = low <= 0 ? 0 : low >= size ? size - 1 : (unsigned int)low;
    span.end = high >= size ? size : high <= span.first ? span.first + 1 : (unsigned int)high;
    /* mirrored: output i centred at the far end minus (i + 0.5) * scale, so the flip costs nothing */
    span.map = mirror ? (struct axis_map){-scale, HUGE_VAL, 1.0, from + length * fraction - span.first}
                      : (struct axis_map){scale, HUGE_VAL, 1.0, from - span.first};
    return span;
}

/* This component's resolution as a fraction of the scaled image's, across (x) or down. */
static double plane_fraction(const struct jpeg_decompress_struct *cinfo, int c, int down) {
    const jpeg_component_info *component = &cinfo->comp_info[c];
    return down ? (double)(component->v_samp_factor * SCALED_HEIGHT(component)) /
                      (cinfo->max_v_samp_factor * MIN_SCALED_HEIGHT(cinfo))
                : (double)(component->h_samp_factor * SCALED_WIDTH(component)) /
                      (cinfo->max_h_samp_factor * MIN_SCALED_WIDTH(cinfo));
}

/* What one place() call needs between its steps. */
struct placing {
    struct plane_span across[3], down[3];
    unsigned int first_imcu, end_imcu;
};

/* The spans of every plane, and the iMCU rows that hold them; needs jpeg_start_decompress. */
static void plan_placing(const struct jpeg_decompress_struct *cinfo, const double box[4], unsigned int eighths,
                         unsigned int out_width, unsigned int out_height, int flip, struct placing *p) {
    double scale = eighths / 8.0;
    int c;
    p->first_imcu = cinfo->total_iMCU_rows, p->end_imcu = 1;
    for (c = 0; c < cinfo->num_components; c++) {
        const jpeg_component_info *component = &cinfo->comp_info[c];
        unsigned int per_imcu = component->v_samp_factor * SCALED_HEIGHT(component);
        p->across[c] = span_on_plane(box[0] * scale, box[2] * scale, plane_fraction(cinfo, c, 0),
                                     component->downsampled_width, out_width, flip);
        p->down[c] = span_on_plane(box[1] * scale, box[3] * scale, plane_fraction(cinfo, c, 1),
                                   component->downsampled_height, out_height, 0);
        if (p->down[c].first / per_imcu < p->first_imcu)
            p->first_imcu = p->down[c].first / per_imcu;
        if ((p->down[c].end + per_imcu - 1) / per_imcu > p->end_imcu)
            p->end_imcu = (p->down[c].end + per_imcu - 1) / per_imcu;
    }
    if (p->end_imcu > cinfo->total_iMCU_rows)
        p->end_imcu = cinfo->total_iMCU_rows;
}

/* Planes for the iMCU rows [first_imcu, end_imcu) of every component (none for the missing ones of grey). */
static int allocate_placing(const struct jpeg_decompress_struct *cinfo, const struct placing *p, struct planes *in,
                            struct error_state *error) {
    unsigned int strides[3] = {0, 0, 0}, rows[3] = {0, 0, 0};
    int c;
    for (c = 0; c < cinfo->num_components; c++) {
        const jpeg_component_info *component = &cinfo->comp_info[c];
        strides[c] = component->width_in_blocks * SCALED_WIDTH(component);
        rows[c] = (p->end_imcu - p->first_imcu) * component->v_samp_factor * SCALED_HEIGHT(component);
    }
    return allocate_planes(in, strides, rows, error);
}

/* Resample each decoded plane's spans onto width x height bytes of target (components planes, one after
 * the other), then write them as RGB.  -1 when out of memory. */
static int place_planes(const struct jpeg_decompress_struct *cinfo, const struct placing *p, const struct planes *in,
                        unsigned char *target, unsigned int width, unsigned int height, unsigned char *out,
                        size_t stride) {
    const unsigned char *done[3] = {target, target, target};
    int c;
    for (c = 0; c < cinfo->num_components; c++) {
        const jpeg_component_info *component = &cinfo->comp_info[c];
        unsigned int above = p->first_imcu * component->v_samp_factor * SCALED_HEIGHT(component);
        struct plane part = {in->plane[c].pixels + (size_t)(p->down[c].first - above) * in->plane[c].stride +
                                 p->across[c].first,
                             in->plane[c].stride, p->across[c].end - p->across[c].first,
                             p->down[c].end - p->down[c].first};
        struct plane onto = {target + (size_t)c * width * height, width, width, height};
        if (resample_plane(&part, &onto, &p->across[c].map, &p->down[c].map) != 0)
            return -1;
        done[c] = onto.pixels;
    }
    write_rgb(done, cinfo->num_components, width, height, out, stride);
    return 0;
}

/* box: left, top, width, height in the full-size image (inside it); out: height rows of width RGB pixels,
 * stride bytes apart.  0 (taken_out says whether it was done), or -1 with the failure in error. */
static int place_jpeg(const unsigned char *data, size_t size, unsigned int eighths, const double box[4],
                      unsigned char *out, size_t stride, unsigned int width, unsigned int height, int flip,
                      int *taken_out, struct error_state *error) {
    struct jpeg_decompress_struct cinfo;
    struct planes in = {0};
    struct placing placing;
    unsigned char *volatile target = NULL;
    volatile int failed = 0, taken = 1;
    error->message[0] = '\0';
    *taken_out = 0;
    if (eighths < 1 || eighths > 16 || width == 0 || height == 0 || width > JPEG_MAX_DIMENSION ||
        height > JPEG_MAX_DIMENSION || stride < (size_t)width * 3)
        return fail_with(error, "place needs eighths 1-16 and a target a JPEG's size can have");
    if (!(box[0] >= 0 && box[1] >= 0 && box[2] > 0 && box[3] > 0 && box[2] <= JPEG_MAX_DIMENSION &&
          box[3] <= JPEG_MAX_DIMENSION)) /* also refuses NaN */
        return fail_with(error, "source rectangle outside the image");
    memset(&cinfo, 0, sizeof cinfo); /* destroying it is safe from here on */
    cinfo.err = errors_to(error, on_message);
    /* three steps, so that the planes are allocated where no longjmp can lose them */
    if (setjmp(error->jump)) {
        failed = 1;
    } else {
        read_header(&cinfo, data, size);
        taken = place_taken(&cinfo);
        if (taken && (box[0] >= cinfo.image_width || box[1] >= cinfo.image_height))
            fail_with(error, "source rectangle outside the image");
        if (taken && error->message[0] == '\0') {
            cinfo.scale_num = eighths;
            cinfo.scale_denom = 8;
            cinfo.raw_data_out = TRUE;
            cinfo.dct_method = JDCT_ISLOW;
            jpeg_start_decompress(&cinfo);
            plan_placing(&cinfo, box, eighths, width, height, flip, &placing);
        }
        failed = error->message[0] != '\0';
    }
    if (!failed && taken && allocate_placing(&cinfo, &placing, &in, error) != 0)
        failed = 1;
    if (!failed && taken && (target = malloc((size_t)width * height * cinfo.num_components)) == NULL)
        failed = fail_with(error, "out of memory");
    if (!failed && taken) {
        if (setjmp(error->jump)) {
            failed = 1;
        } else {
            const char *short_by = read_planes(&cinfo, &in, placing.first_imcu, placing.end_imcu);
            if (short_by != NULL)
                fail_with(error, short_by); /* the rows below stay undecoded, as in decode_region */
            else if (place_planes(&cinfo, &placing, &in, target, width, height, out, stride) != 0)
                fail_with(error, "out of memory");
            failed = error->message[0] != '\0';
        }
    }
    jpeg_destroy_decompress(&cinfo);
    free(in.memory);
    free(target);
    if (failed)
        return -1;
    *taken_out = taken;
    return 0;
}
