/* _libjpeg_decode.c: cropped and whole decodes, the decode check, encoding pixels.
 * Part of _libjpeg.c, which includes it (one translation unit: its helpers stay static). */
/* A decode in two calls, so that the caller can allocate the pixels between them (as a Python object,
 * with the GIL held): decode_region's and decode_whole's.  decoding_end() always follows, whatever the
 * calls returned. */
struct decoding {
    struct jpeg_decompress_struct cinfo;
    struct error_state error;
};

static void decoding_begin(struct decoding *decoding, void (*emit)(j_common_ptr, int)) {
    memset(&decoding->cinfo, 0, sizeof decoding->cinfo); /* destroying it is safe from here on */
    decoding->cinfo.err = errors_to(&decoding->error, emit);
}

static void decoding_end(struct decoding *decoding) { jpeg_destroy_decompress(&decoding->cinfo); }

/* Both decodes' start: headers read, a grey or 3-component JPEG, RGBX output at eighths/8 started.
 * A libjpeg error longjmps here only: the caller sets its own jump before calling libjpeg again. */
static int rgbx_start(struct decoding *decoding, const unsigned char *data, size_t size, unsigned int eighths,
                      void (*emit)(j_common_ptr, int)) {
    struct jpeg_decompress_struct *cinfo = &decoding->cinfo;
    decoding_begin(decoding, emit);
    if (eighths < 1 || eighths > 16)
        return fail_with(&decoding->error, "eighths must be between 1 and 16");
    if (setjmp(decoding->error.jump))
        return fail_with(&decoding->error, "");
    read_header(cinfo, data, size);
    if (cinfo->num_components != 1 && cinfo->num_components != 3)
        return fail_with(&decoding->error, "not a grayscale or YCbCr/RGB JPEG");
    cinfo->scale_num = eighths;
    cinfo->scale_denom = 8;
    cinfo->out_color_space = JCS_EXT_RGBX;
    cinfo->dct_method = JDCT_ISLOW;
    jpeg_start_decompress(cinfo);
    return 0;
}

/* The part of the scaled image that decode_region delivers. */
struct region {
    JDIMENSION x, y, width, height;
};

/* decode_region's first call: headers, scale, the crop's columns, the rows above it skipped; region says
 * what the second call will deliver (region->width x region->height RGBX pixels). */
static int region_start(struct decoding *decoding, const unsigned char *data, size_t size, unsigned int left,
                        unsigned int top, unsigned int width, unsigned int height, unsigned int eighths,
                        struct region *region) {
    struct jpeg_decompress_struct *cinfo = &decoding->cinfo;
    if (rgbx_start(decoding, data, size, eighths, on_message) != 0)
        return -1;
    if (setjmp(decoding->error.jump))
        return fail_with(&decoding->error, "");
    if (left >= cinfo->output_width || top >= cinfo->output_height || width == 0 || height == 0)
        return fail_with(&decoding->error, "crop region outside the image");
    /* clipped to the image; left + width could wrap around (fuzzing found 3 + 4294967293 taken for 0) */
    region->x = left, region->y = top;
    region->width = width < cinfo->output_width - left ? width : cinfo->output_width - left;
    region->height = height < cinfo->output_height - top ? height : cinfo->output_height - top;
    if (region->x > 0 || region->width < cinfo->output_width) jpeg_crop_scanline(cinfo, &region->x, &region->width);
    if (top > 0) jpeg_skip_scanlines(cinfo, top);
    return 0;
}

/* decode_region's second call: the region's rows into out (region->width * 4 bytes each). */
static int region_read(struct decoding *decoding, const struct region *region, unsigned char *out) {
    const char *short_by;
    if (setjmp(decoding->error.jump))
        return fail_with(&decoding->error, "");
    short_by = read_rows(&decoding->cinfo, out, (size_t)region->width * 4, region->height);
    return short_by != NULL ? fail_with(&decoding->error, short_by) : 0; /* the rows below stay undecoded */
}

/* decode_whole(data, eighths) -> (pixels, width, height): pack --resize's decode for JPEGs that shrink()
 * does not take, which is also their check.
 *
 * The whole image at eighths/8 scale as a bytearray of RGBX rows (Pillow
 * wraps it without a copy), read to the end of the image, and any warning
 * fails as in check().  With encode() below it replaced PyTurboJPEG: the
 * same bytes out, and pack --resize 8% faster through them alone (whole
 * process, wall and CPU time alike: 3,000 corpus images, 2 workers).
 */
static int whole_start(struct decoding *decoding, const unsigned char *data, size_t size, unsigned int eighths,
                       JDIMENSION *width, JDIMENSION *height) {
    struct jpeg_decompress_struct *cinfo = &decoding->cinfo;
    if (rgbx_start(decoding, data, size, eighths, on_warning_fail) != 0)
        return -1;
    *width = cinfo->output_width;
    *height = cinfo->output_height;
    return 0;
}

/* decode_whole's second call: every row into out (width * 4 bytes each), then on to the end of the image. */
static int whole_read(struct decoding *decoding, unsigned char *out) {
    struct jpeg_decompress_struct *cinfo = &decoding->cinfo;
    const char *short_by;
    if (setjmp(decoding->error.jump))
        return fail_with(&decoding->error, "");
    short_by = read_rows(cinfo, out, (size_t)cinfo->output_width * 4, cinfo->output_height);
    if (short_by != NULL)
        return fail_with(&decoding->error, short_by);
    jpeg_finish_decompress(cinfo); /* reads on to the end: damage after the last row fails too */
    return 0;
}

/* check(data) -> None: entropy-decode every scan of a JPEG, or raise ValueError naming the damage.
 *
 * Decodability is decided by the entropy decoder (Huffman codes, restart
 * markers, data running out); the inverse DCT and colour conversion cannot
 * fail, so they are skipped: grey output at 1/8 scale, every row but the last
 * passed to jpeg_skip_scanlines(), which parses the coded data without
 * reconstructing it.
 */
static int check_jpeg(const unsigned char *data, size_t size, struct error_state *error) {
    struct jpeg_decompress_struct cinfo;
    JSAMPROW volatile row = NULL;
    volatile int failed = 0;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = errors_to(error, on_warning_fail);
    if (setjmp(error->jump)) {
        failed = 1;
    } else {
        read_header(&cinfo, data, size);
        cinfo.scale_num = 1;
        cinfo.scale_denom = 8;
        cinfo.out_color_space = JCS_GRAYSCALE;
        jpeg_start_decompress(&cinfo);
        /* skipping to the very end would skip the parse too: stop one row short, then read it */
        jpeg_skip_scanlines(&cinfo, cinfo.output_height - 1);
        row = malloc(cinfo.output_width);
        if (row == NULL) {
            fail_with(error, "out of memory");
        } else {
            jpeg_read_scanlines(&cinfo, (JSAMPARRAY)&row, 1);
            jpeg_finish_decompress(&cinfo);
        }
        failed = error->message[0] != '\0';
    }
    free(row);
    jpeg_destroy_decompress(&cinfo);
    return failed ? -1 : 0;
}

/* The settings of every JPEG recpack encodes: 4:2:0 YCbCr at quality, DCT as tjCompress2 chooses it.
 * Needs the input's size, components and colour space set. */
static void set_encoding(struct jpeg_compress_struct *cinfo, int quality) {
    jpeg_set_defaults(cinfo); /* YCbCr, luma sampled 2x2, chroma 1x1: 4:2:0 */
    jpeg_set_quality(cinfo, quality, TRUE);
    cinfo->dct_method = quality >= 96 ? JDCT_ISLOW : JDCT_IFAST;
}

/* encode(pixels, width, height, channels, quality) -> bytes: RGB (3) or RGBX (4) rows as a 4:2:0 JPEG.
 *
 * The same bytes as TurboJPEG's tjCompress2 with TJSAMP_420 (unless its
 * TJ_* environment variables change its settings), whose settings these are:
 * its fast forward DCT below quality 96, which it found costs next to
 * nothing in accuracy.  Pillow hands over its own pixel layout.
 */
static int encode_pixels(const unsigned char *pixels, size_t size, unsigned int width, unsigned int height,
                         unsigned int channels, int quality, unsigned char **jpeg, unsigned long *jpeg_size,
                         struct error_state *error) {
    struct jpeg_compress_struct cinfo;
    unsigned char *volatile out = NULL;
    unsigned long out_size = 0;
    volatile int failed = 0;
    error->message[0] = '\0';
    if ((channels != 3 && channels != 4) || width == 0 || height == 0 || quality < 1 || quality > 100 ||
        size < (size_t)width * height * channels)
        return fail_with(error, "encode needs 3 or 4 channels, a non-empty size, quality 1-100 and that many pixels");
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = errors_to(error, on_message);
    if (setjmp(error->jump)) {
        failed = 1;
    } else {
        jpeg_create_compress(&cinfo);
        jpeg_mem_dest(&cinfo, (unsigned char **)&out, &out_size);
        cinfo.image_width = width;
        cinfo.image_height = height;
        cinfo.input_components = (int)channels;
        cinfo.in_color_space = channels == 4 ? JCS_EXT_RGBX : JCS_EXT_RGB;
        set_encoding(&cinfo, quality);
        jpeg_start_compress(&cinfo, TRUE);
        while (cinfo.next_scanline < height) {
            JSAMPROW row = (unsigned char *)pixels + (size_t)cinfo.next_scanline * width * channels;
            jpeg_write_scanlines(&cinfo, &row, 1);
        }
        jpeg_finish_compress(&cinfo);
    }
    jpeg_destroy_compress(&cinfo);
    if (failed) {
        free(out);
        return -1;
    }
    *jpeg = out, *jpeg_size = out_size;
    return 0;
}

