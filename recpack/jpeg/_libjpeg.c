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
 * check(data) -> None: the packer's decode check (see below).
 * shrink(data, ...): pack --resize in one call, for YCbCr JPEGs (see below);
 *   resample_plane(...) exposes its plane resize for tests.
 * decode_whole(data, eighths), encode(pixels, ...): pack --resize's decode and encode for the rest.
 * gray_to_color(data) -> bytes: the packer's lossless grayscale conversion (see below).
 *
 * Each operation is a plain C function over the file's bytes and its parameters (decode_region and
 * decode_whole in two calls, so that the caller allocates the pixels in between), and the Python
 * bindings at the end only convert arguments and results.  Compiled with RECPACK_WITHOUT_PYTHON, the
 * file has no bindings: fuzz/ links the operations into libFuzzer targets (tools/fuzz.sh).
 */
#ifndef RECPACK_WITHOUT_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h> /* message codes, to tell warnings apart */

#include "_resample.h"

/* ------------------------------------------------------------------------------------------------------
 * The operations, without Python: each takes the file's bytes (or pixels) and its parameters, and
 * fails by returning -1 with the reason in an error_state's message (empty when libjpeg left none).
 * The bindings at the end call them with the GIL released; fuzz/ links them without Python.
 */

struct error_state {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

/* The most memory libjpeg may take for one image, through each decompress or compress object: what its
 * whole-image coefficient buffers (2 bytes a sample) need, for progressive files, for the check of any
 * file with several scans and for gray_to_color's transcode.  1 GiB holds a 4:4:4 colour image of 179
 * million pixels, the size past which Pillow refuses to decode anything (twice its MAX_IMAGE_PIXELS) and
 * pack --resize refuses JPEGs; 1.25 GiB leaves room for the rest.  Without it a few hundred bytes claiming
 * 65500 x 65500 pixels took 12 GB and over a minute before failing (fuzzing found it).  The fuzz build
 * sets less, to stay fast. */
#ifndef RECPACK_MAX_MEMORY
#define RECPACK_MAX_MEMORY ((long)1280 << 20)
#endif

/* The most pixels of an arithmetic-coded image: 2 x Pillow's MAX_IMAGE_PIXELS, past which it refuses to
 * decode anything.  Huffman coding takes 2 bits a block at least, and libjpeg warns when the data runs
 * out (which ends the work: see on_warning_fail), so a decode of a damaged file costs what its bytes hold;
 * arithmetic coding codes a flat block in next to nothing, and libjpeg stuffs zeros without a word when
 * its data runs into a marker: 558 bytes claiming 50213 x 65495 pixels kept check() busy for 35 s (fuzzing
 * found it).  The fuzz build sets less, to stay fast. */
#ifndef RECPACK_MAX_PIXELS
#define RECPACK_MAX_PIXELS 178956970L
#endif

static void say_too_large(struct error_state *state) {
    snprintf(state->message, JMSG_LENGTH_MAX, "too large: needs over %ld MB", (long)(RECPACK_MAX_MEMORY >> 20));
}

static void on_error(j_common_ptr cinfo) {
    struct error_state *state = (struct error_state *)cinfo->err;
    if (cinfo->err->msg_code == JERR_NO_BACKING_STORE) /* what running out of RECPACK_MAX_MEMORY raises */
        say_too_large(state);
    else
        (*cinfo->err->format_message)(cinfo, state->message);
    longjmp(state->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    (void)cinfo;
    (void)level;
}

/* Bytes libjpeg skips to find a marker ("N extraneous bytes before marker").  In a file whose headers
 * passed recpack's marker walk they can only be entropy-coded data that no block used: a damaged scan
 * whose blocks came out short, with garbage pixels from there on.  A few are let through, as stray
 * padding that a file which decodes whole may carry before its end; more are damage. */
#define MAX_UNUSED_SCAN_BYTES 16

static int skipped_bytes_are_harmless(const struct jpeg_error_mgr *manager) {
    return manager->msg_code == JWRN_EXTRANEOUS_DATA && manager->msg_parm.i[0] <= MAX_UNUSED_SCAN_BYTES;
}

/* For check() and the operations that stand in for it (decode_whole, shrink, gray_to_color): the first
 * warning (recoverable corruption) is the failure, unless it is harmless skipped bytes, and it ends the
 * work at once, as an error does: reading on would only cost time, which a file claiming a huge size with
 * a few bytes of data made long (a minute, in jpeg_read_coefficients and jpeg_skip_scanlines). */
static void on_warning_fail(j_common_ptr cinfo, int level) {
    if (level < 0 && !skipped_bytes_are_harmless(cinfo->err))
        on_error(cinfo);
}

/* An error manager that longjmps to state->jump on errors and hands warnings to emit. */
static struct jpeg_error_mgr *errors_to(struct error_state *state, void (*emit)(j_common_ptr, int)) {
    struct jpeg_error_mgr *manager = jpeg_std_error(&state->manager);
    manager->error_exit = on_error;
    manager->emit_message = emit;
    state->message[0] = '\0';
    return manager;
}

/* Record why an operation fails, unless something already did (the first failure is the one to tell). */
static int fail_with(struct error_state *state, const char *why) {
    if (state->message[0] == '\0') {
        strncpy(state->message, why, JMSG_LENGTH_MAX - 1);
        state->message[JMSG_LENGTH_MAX - 1] = '\0';
    }
    return -1;
}

/* Start decompressing data: create cinfo, point it at the bytes, read the headers; refuse arithmetic-coded
 * images over RECPACK_MAX_PIXELS.  Errors longjmp, so call it under setjmp. */
static void read_header(struct jpeg_decompress_struct *cinfo, const unsigned char *data, size_t size) {
    struct error_state *state = (struct error_state *)cinfo->err;
    jpeg_create_decompress(cinfo);
    cinfo->mem->max_memory_to_use = RECPACK_MAX_MEMORY;
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    jpeg_read_header(cinfo, TRUE);
    if (cinfo->arith_code && (double)cinfo->image_width * cinfo->image_height > (double)RECPACK_MAX_PIXELS) {
        snprintf(state->message, JMSG_LENGTH_MAX, "too large: %ux%u pixels, arithmetic-coded (over %ld)",
                 (unsigned int)cinfo->image_width, (unsigned int)cinfo->image_height, (long)RECPACK_MAX_PIXELS);
        longjmp(state->jump, 1);
    }
}

/* Reads the next count output rows into out, stride bytes apart: NULL, or why it stopped short.  Errors
 * (and failing warnings) longjmp, so call it under setjmp. */
static const char *read_rows(struct jpeg_decompress_struct *cinfo, unsigned char *out, size_t stride,
                             JDIMENSION count) {
    JDIMENSION rows;
    for (rows = 0; rows < count; rows++) {
        JSAMPROW row = out + (size_t)rows * stride;
        if (jpeg_read_scanlines(cinfo, &row, 1) != 1)
            return "image data ended early";
    }
    return NULL;
}

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
    decoding_begin(decoding, on_message);
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
    decoding_begin(decoding, on_warning_fail);
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

/* Decode every iMCU row into in; under setjmp.  NULL, or why it stopped short. */
static const char *read_planes(struct jpeg_decompress_struct *cinfo, const struct planes *in) {
    unsigned int step = cinfo->max_v_samp_factor * MIN_SCALED_HEIGHT(cinfo), imcu;
    int c;
    for (imcu = 0; imcu < cinfo->total_iMCU_rows; imcu++) {
        JSAMPARRAY at[3];
        for (c = 0; c < 3; c++)
            at[c] = in->row_pointers[c] + (size_t)imcu * (in->rows[c] / cinfo->total_iMCU_rows);
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
        struct axis_map x = {luma_x / out_fraction, (out->plane[0].width - 0.5) * luma_x, luma_x};
        struct axis_map y = {luma_y / out_fraction, (out->plane[0].height - 0.5) * luma_y, luma_y};
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
            const char *short_by = read_planes(&src, &in);
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

/* gray_to_color(data) -> bytes: a grayscale JPEG as a 3-component (YCbCr 4:4:4) one, losslessly.
 *
 * The grey image's DCT coefficients become the luma plane unchanged, and both
 * chroma planes are all-zero coefficients, i.e. flat 128: exactly the colours
 * of the grey image, with no decode, no re-quantisation and no second
 * generation loss.  Only entropy coding runs (like jpegtran), so this is also
 * the decode check: damaged data fails as in check().  Chroma is not
 * subsampled because the luma blocks are reused as they are (a 2x2 luma
 * sampling would need padding blocks); flat chroma costs 4 bits per block
 * with the standard tables.  Metadata is not copied, as for every converted
 * image.  The packer tries _jpegscan.c's splice first, which does the same
 * for clean baseline files at half the cost; this handles the rest
 * (progressive and arithmetic files, and whatever the splice refuses).
 */
/* Whether the standard Huffman tables, which gray_to_color writes with, can code every block of the grey
 * image: DC differences (in raster order, from 0: the output has no restart markers) of at most 11 bits and
 * AC coefficients of at most 10, as 8-bit data has.  libjpeg decodes larger ones without a word, and its
 * encoder writes them as codes those tables lack: a corrupt file (fuzzing found it).  Errors longjmp, so
 * call it under setjmp. */
static int codable(struct jpeg_decompress_struct *src, jvirt_barray_ptr coefficients) {
    const jpeg_component_info *component = &src->comp_info[0];
    JDIMENSION row, column;
    int k, previous = 0;
    for (row = 0; row < component->height_in_blocks; row++) {
        JBLOCKARRAY blocks = (*src->mem->access_virt_barray)((j_common_ptr)src, coefficients, row, 1, FALSE);
        for (column = 0; column < component->width_in_blocks; column++) {
            const JCOEF *block = blocks[0][column];
            if (block[0] - previous < -2047 || block[0] - previous > 2047)
                return 0;
            previous = block[0];
            for (k = 1; k < DCTSIZE2; k++)
                if (block[k] < -1023 || block[k] > 1023)
                    return 0;
        }
    }
    return 1;
}

/* The grey image's coefficients as the luma plane of a YCbCr JPEG with all-zero chroma, into dst (created
 * here, written to *out).  Errors longjmp, so call it under setjmp. */
static void write_color(struct jpeg_decompress_struct *src, jvirt_barray_ptr luma, struct jpeg_compress_struct *dst,
                        unsigned char **out, unsigned long *out_size) {
    jvirt_barray_ptr planes[3];
    JDIMENSION blocks_wide = src->comp_info[0].width_in_blocks, blocks_high = src->comp_info[0].height_in_blocks;
    int c;
    jpeg_create_compress(dst);
    dst->mem->max_memory_to_use = RECPACK_MAX_MEMORY; /* the chroma planes: twice the grey coefficients */
    jpeg_mem_dest(dst, out, out_size);
    jpeg_copy_critical_parameters(src, dst); /* size, luma quantisation table */
    jpeg_set_colorspace(dst, JCS_YCbCr);
    for (c = 0; c < 3; c++) {
        dst->comp_info[c].h_samp_factor = dst->comp_info[c].v_samp_factor = 1;
        dst->comp_info[c].quant_tbl_no = 0; /* zeros quantise alike under any table */
    }
    dst->optimize_coding = FALSE;
    planes[0] = luma;
    for (c = 1; c < 3; c++)
        planes[c] = (*dst->mem->request_virt_barray)((j_common_ptr)dst, JPOOL_IMAGE, TRUE, blocks_wide, blocks_high, 1);
    jpeg_write_coefficients(dst, planes); /* realizes the zeroed chroma planes */
    jpeg_finish_compress(dst);
}

static int gray_to_color_jpeg(const unsigned char *data, size_t size, unsigned char **jpeg,
                              unsigned long *jpeg_size, struct error_state *error) {
    struct jpeg_decompress_struct src;
    struct jpeg_compress_struct dst;
    unsigned char *volatile out = NULL;
    unsigned long out_size = 0;
    volatile int failed = 0;
    memset(&src, 0, sizeof src); /* destroying them is safe from here on */
    memset(&dst, 0, sizeof dst);
    src.err = dst.err = errors_to(error, on_warning_fail);
    if (setjmp(error->jump)) {
        failed = 1;
    } else {
        read_header(&src, data, size);
        if (src.num_components != 1) {
            fail_with(error, "not a grayscale JPEG");
        } else {
            jvirt_barray_ptr *luma = jpeg_read_coefficients(&src);
            if (!codable(&src, luma[0])) {
                fail_with(error, "DCT coefficient out of range for 8-bit data");
            } else {
                write_color(&src, luma[0], &dst, (unsigned char **)&out, &out_size);
                jpeg_finish_decompress(&src);
            }
        }
        failed = error->message[0] != '\0';
    }
    jpeg_destroy_compress(&dst);
    jpeg_destroy_decompress(&src);
    if (failed) {
        free(out);
        return -1;
    }
    *jpeg = out, *jpeg_size = out_size;
    return 0;
}

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
    struct axis_map x = {(double)width / out_width, width, 1.0}, y = {(double)height / out_height, height, 1.0};
    failed = resample_plane(&in, &out, &x, &y);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&input);
    if (failed) {
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    return result;
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
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, left, top, width, height, eighths) -> (rgbx, x, y, w, h)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_libjpeg", NULL, -1, methods};

PyMODINIT_FUNC PyInit__libjpeg(void) { return PyModule_Create(&module); }

#endif /* RECPACK_WITHOUT_PYTHON */
