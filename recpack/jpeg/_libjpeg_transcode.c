/* _libjpeg_transcode.c: lossless grey-to-colour transcoding.
 * Part of _libjpeg.c, which includes it (one translation unit: its helpers stay static). */
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

