/* _libjpeg_errors.c: how the operations fail, and the setup every decode shares.
 * Part of _libjpeg.c, which includes it (one translation unit: its helpers stay static). */
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

