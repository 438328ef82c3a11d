/* _libjpeg_shrink.c: pack --resize inside the YCbCr planes.
 * Part of _libjpeg.c, which includes it (one translation unit: its helpers stay static). */
/* shrink(data, eighths, width, height, quality) -> bytes, or None: pack --resize without leaving YCbCr.
 *
 * Decodes a YCbCr JPEG at eighths/8 as its planes (libjpeg's raw data: no
 * chroma upsampling, no colour conversion), shrinks each plane to width x
 * height (chroma to half that, rounded up: 4:2:0) with _resample.c, and
 * encodes the planes at quality as encode() would.  Any damage fails as in
 * check().  None for JPEGs whose planes it does not take (RGB- or otherwise
 * coded, or chroma not sampled 1x1): decode_whole() and encode() do those
 * through RGB.
 *
 * Against decode_whole + Pillow-SIMD's RGBX resize + encode, it skips the
 * colour work on both sides and resizes 1.5 bytes a pixel instead of 4.
 */
#if JPEG_LIB_VERSION >= 70
#define SCALED_WIDTH(component) ((component)->DCT_h_scaled_size)
#define SCALED_HEIGHT(component) ((component)->DCT_v_scaled_size)
#define MIN_SCALED_WIDTH(cinfo) ((cinfo)->min_DCT_h_scaled_size)
#define MIN_SCALED_HEIGHT(cinfo) ((cinfo)->min_DCT_v_scaled_size)
#else
#define SCALED_WIDTH(component) ((component)->DCT_scaled_size)
#define SCALED_HEIGHT(component) ((component)->DCT_scaled_size)
#define MIN_SCALED_WIDTH(cinfo) ((cinfo)->min_DCT_scaled_size)
#define MIN_SCALED_HEIGHT(cinfo) ((cinfo)->min_DCT_scaled_size)
#endif

static int planes_taken(const struct jpeg_decompress_struct *cinfo) {
    int c;
    if (cinfo->num_components != 3 || cinfo->jpeg_color_space != JCS_YCbCr)
        return 0;
    for (c = 1; c < 3; c++)
        if (cinfo->comp_info[c].h_samp_factor != 1 || cinfo->comp_info[c].v_samp_factor != 1)
            return 0;
    return 1;
}

/* Three planes in one allocation, with a row pointer for each of their rows. */
struct planes {
    struct plane plane[3];
    unsigned int rows[3]; /* rows allocated: whole iMCU rows */
    unsigned char *memory;
    JSAMPROW *row_pointers[3];
};

static int allocate_planes(struct planes *p, const unsigned int strides[3], const unsigned int rows[3],
                           struct error_state *error) {
    size_t bytes = 0, pointers = 0;
    int c;
    unsigned int y;
    for (c = 0; c < 3; c++) {
        bytes += (size_t)strides[c] * rows[c];
        pointers += rows[c];
    }
    if (bytes + pointers * sizeof(JSAMPROW) > (size_t)RECPACK_MAX_MEMORY) { /* as for libjpeg's own buffers */
        say_too_large(error);
        return -1;
    }
    p->memory = malloc(bytes + pointers * sizeof(JSAMPROW));
    if (p->memory == NULL)
        return fail_with(error, "out of memory");
    JSAMPROW *next_pointer = (JSAMPROW *)p->memory;
    unsigned char *next_row = p->memory + pointers * sizeof(JSAMPROW);
    for (c = 0; c < 3; c++) {
        p->plane[c].pixels = next_row;
        p->plane[c].stride = strides[c];
        p->rows[c] = rows[c];
        p->row_pointers[c] = next_pointer;
        for (y = 0; y < rows[c]; y++)
            *next_pointer++ = next_row + (size_t)y * strides[c];
        next_row += (size_t)strides[c] * rows[c];
    }
    return 0;
}

/* Planes for what libjpeg will decode (whole iMCU rows, its padded widths); needs jpeg_start_decompress.
 * 0, or -1 with the failure in error. */
static int allocate_decoded(const struct jpeg_decompress_struct *cinfo, struct planes *in, struct error_state *error) {
    unsigned int strides[3], rows[3];
    int c;
    for (c = 0; c < 3; c++) {
        const jpeg_component_info *component = &cinfo->comp_info[c];
        strides[c] = component->width_in_blocks * SCALED_WIDTH(component);
        rows[c] = cinfo->total_iMCU_rows * component->v_samp_factor * SCALED_HEIGHT(component);
    }
    if (allocate_planes(in, strides, rows, error) != 0)
        return -1;
    for (c = 0; c < 3; c++) {
        in->plane[c].width = cinfo->comp_info[c].downsampled_width;
        in->plane[c].height = cinfo->comp_info[c].downsampled_height;
    }
    return 0;
}

/* 4:2:0 planes of width x height, padded to whole MCUs as the encoder reads them.  0, or -1 with the
 * failure in error. */
static int allocate_shrunk(struct planes *out, unsigned int width, unsigned int height, struct error_state *error) {
    unsigned int mcu_columns = (width + 15) / 16, mcu_rows = (height + 15) / 16, c;
    unsigned int strides[3] = {mcu_columns * 16, mcu_columns * 8, mcu_columns * 8};
    unsigned int rows[3] = {mcu_rows * 16, mcu_rows * 8, mcu_rows * 8};
    if (allocate_planes(out, strides, rows, error) != 0)
        return -1;
    for (c = 0; c < 3; c++) {
        out->plane[c].width = c == 0 ? width : (width + 1) / 2;
        out->plane[c].height = c == 0 ? height : (height + 1) / 2;
    }
    return 0;
}

/* Decode the iMCU rows before end into in, whose planes hold those from first on (in->rows[c] / (end -
 * first) rows each); the rows before first go to first's place, overwritten in turn: raw data cannot be
 * skipped.  Under setjmp.  NULL, or why it stopped short. */
static const char *read_planes(struct jpeg_decompress_struct *cinfo, const struct planes *in, unsigned int first,
                               unsigned int end) {
    unsigned int step = cinfo->max_v_samp_factor * MIN_SCALED_HEIGHT(cinfo), imcu;
    int c;
    for (imcu = 0; imcu < end; imcu++) {
        JSAMPARRAY at[3];
        for (c = 0; c < cinfo->num_components; c++)
            at[c] = in->row_pointers[c] + (size_t)(imcu < first ? 0 : imcu - first) * (in->rows[c] / (end - first));
        if (jpeg_read_raw_data(cinfo, at, step) != step)
            return "image data ended early";
    }
    return NULL;
}

/* Shrink the decoded planes into out's, then pad those to whole MCUs; -1 when out of memory.  Reads
 * cinfo's component info, which lives until jpeg_finish_decompress. */
static int shrink_planes(const struct jpeg_decompress_struct *cinfo, const struct planes *in,
                         const struct planes *out) {
    int c;
    for (c = 0; c < 3; c++) {
        const jpeg_component_info *component = &cinfo->comp_info[c];
        /* this plane's resolution in and out, as a fraction of the image's */
        double in_x = (double)(component->h_samp_factor * SCALED_WIDTH(component)) /
                      (cinfo->max_h_samp_factor * MIN_SCALED_WIDTH(cinfo));
        double in_y = (double)(component->v_samp_factor * SCALED_HEIGHT(component)) /
                      (cinfo->max_v_samp_factor * MIN_SCALED_HEIGHT(cinfo));
        double out_fraction = c == 0 ? 1.0 : 0.5;
        double luma_x = (double)cinfo->output_width / out->plane[0].width * in_x; /* per output luma pixel */
        double luma_y = (double)cinfo->output_height / out->plane[0].height * in_y;
        /* a chroma sample past an odd width or height is the last luma column or row's */
        struct axis_map x = {luma_x / out_fraction, (out->plane[0].width - 0.5) * luma_x, luma_x, 0.0};
        struct axis_map y = {luma_y / out_fraction, (out->plane[0].height - 0.5) * luma_y, luma_y, 0.0};
        if (resample_plane(&in->plane[c], &out->plane[c], &x, &y) != 0)
            return -1;
        pad_plane(&out->plane[c], (unsigned int)out->plane[c].stride, out->rows[c]);
    }
    return 0;
}

/* Encode 4:2:0 planes padded to whole MCUs, with encode()'s settings; under setjmp. */
static void write_planes(struct jpeg_compress_struct *cinfo, const struct planes *out, int quality) {
    unsigned int row;
    cinfo->image_width = out->plane[0].width;
    cinfo->image_height = out->plane[0].height;
    cinfo->input_components = 3;
    cinfo->in_color_space = JCS_YCbCr;
    set_encoding(cinfo, quality);
    cinfo->raw_data_in = TRUE;
    jpeg_start_compress(cinfo, TRUE);
    for (row = 0; cinfo->next_scanline < cinfo->image_height; row += 16) {
        JSAMPARRAY at[3] = {out->row_pointers[0] + row, out->row_pointers[1] + row / 2,
                            out->row_pointers[2] + row / 2};
        jpeg_write_raw_data(cinfo, at, 16);
    }
    jpeg_finish_compress(cinfo);
}

static int shrink_jpeg(const unsigned char *data, size_t size, unsigned int eighths, unsigned int width,
                       unsigned int height, int quality, unsigned char **jpeg, unsigned long *jpeg_size,
                       int *taken_out, struct error_state *error) {
    struct jpeg_decompress_struct src;
    struct jpeg_compress_struct dst;
    struct planes in = {0}, out = {0};
    unsigned char *volatile encoded = NULL;
    unsigned long encoded_size = 0;
    volatile int failed = 0, taken = 1;
    error->message[0] = '\0';
    *taken_out = 0;
    if (eighths < 1 || eighths > 16 || width == 0 || height == 0 || width > JPEG_MAX_DIMENSION ||
        height > JPEG_MAX_DIMENSION || quality < 1 || quality > 100)
        return fail_with(error, "shrink needs eighths 1-16, a size a JPEG can have and quality 1-100");
    memset(&src, 0, sizeof src); /* destroying them is safe from here on */
    memset(&dst, 0, sizeof dst);
    src.err = dst.err = errors_to(error, on_warning_fail);
    /* three steps, so that the planes are allocated where no longjmp can lose them */
    if (setjmp(error->jump)) {
        failed = 1;
    } else {
        read_header(&src, data, size);
        taken = planes_taken(&src);
        if (taken) {
            src.scale_num = eighths;
            src.scale_denom = 8;
            src.raw_data_out = TRUE;
            src.dct_method = JDCT_ISLOW;
            jpeg_start_decompress(&src);
        }
        failed = error->message[0] != '\0';
    }
    if (!failed && taken &&
        (allocate_decoded(&src, &in, error) != 0 || allocate_shrunk(&out, width, height, error) != 0))
        failed = 1;
    if (!failed && taken) {
        if (setjmp(error->jump)) {
            failed = 1;
        } else {
            const char *short_by = read_planes(&src, &in, 0, src.total_iMCU_rows);
            if (short_by != NULL)
                fail_with(error, short_by);
            if (error->message[0] == '\0' && shrink_planes(&src, &in, &out) != 0)
                fail_with(error, "out of memory");
            if (error->message[0] == '\0')
                jpeg_finish_decompress(&src); /* reads on to the end: damage after the last row fails too */
            if (error->message[0] == '\0') {
                jpeg_create_compress(&dst);
                jpeg_mem_dest(&dst, (unsigned char **)&encoded, &encoded_size);
                write_planes(&dst, &out, quality);
            }
            failed = error->message[0] != '\0';
        }
    }
    jpeg_destroy_compress(&dst);
    jpeg_destroy_decompress(&src);
    free(in.memory);
    free(out.memory);
    if (failed) {
        free(encoded);
        return -1;
    }
    *jpeg = encoded, *jpeg_size = encoded_size, *taken_out = taken;
    return 0;
}

/* The sizes resample_plane() takes from Python: ones a JPEG can have, and size bytes holding the input. */
static int resample_sizes_ok(unsigned int width, unsigned int height, unsigned int out_width,
                             unsigned int out_height, size_t size) {
    return width != 0 && height != 0 && out_width != 0 && out_height != 0 && width <= JPEG_MAX_DIMENSION &&
           height <= JPEG_MAX_DIMENSION && out_width <= JPEG_MAX_DIMENSION && out_height <= JPEG_MAX_DIMENSION &&
           size >= (size_t)width * height;
}

