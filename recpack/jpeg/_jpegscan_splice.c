/* _jpegscan_splice.c: writing the grey bits between empty chroma blocks.
 * Part of _jpegscan.c, which includes it (one translation unit: its helpers stay static). */
/* Bit writer with JPEG byte stuffing: a 0x00 after every 0xFF. */
typedef struct {
    uint8_t *out;
    size_t length;
    uint64_t bits;
    int count; /* bits not yet written, at the bottom of `bits`; fewer than 32 between calls */
} bit_writer;

static inline void put_byte(bit_writer *w, uint8_t byte) {
    w->out[w->length++] = byte;
    if (byte == 0xFF)
        w->out[w->length++] = 0x00;
}

static inline void put_bits(bit_writer *w, uint64_t value, int count) { /* count <= 32 */
    w->bits = (w->bits << count) | value;
    w->count += count;
    if (w->count >= 32) {
        uint32_t word = (uint32_t)(w->bits >> (w->count - 32));
        w->count -= 32;
        if ((((~word) - 0x01010101u) & word & 0x80808080u) == 0) { /* no 0xFF byte: store all four */
            word = __builtin_bswap32(word);
            memcpy(w->out + w->length, &word, 4);
            w->length += 4;
        } else {
            put_byte(w, (uint8_t)(word >> 24)), put_byte(w, (uint8_t)(word >> 16));
            put_byte(w, (uint8_t)(word >> 8)), put_byte(w, (uint8_t)word);
        }
    }
}

static void copy_bits(bit_writer *w, const uint8_t *bytes, size_t from, size_t to) {
    for (; to - from >= 32; from += 32)
        put_bits(w, peek(bytes, from) >> 32, 32);
    if (to > from)
        put_bits(w, peek(bytes, from) >> (64 - (to - from)), (int)(to - from));
}

/* End the entropy-coded segment: 1-bits up to a byte boundary (T.81 F.1.2.3), everything written. */
static void pad_to_byte(bit_writer *w) {
    int pad = (8 - w->count % 8) % 8;
    w->bits = (w->bits << pad) | ((1u << pad) - 1);
    w->count += pad;
    while (w->count) {
        w->count -= 8;
        put_byte(w, (uint8_t)(w->bits >> w->count));
    }
}

static void put_raw(bit_writer *w, const uint8_t *bytes, size_t length) {
    memcpy(w->out + w->length, bytes, length);
    w->length += length;
}

static void put_marker_segment(bit_writer *w, int marker, const uint8_t *body, size_t length) {
    uint8_t head[4] = {0xFF, (uint8_t)marker, (uint8_t)((length + 2) >> 8), (uint8_t)((length + 2) & 0xFF)};
    put_raw(w, head, 4);
    put_raw(w, body, length);
}

/* The standard chroma tables of ITU T.81 Annex K.3 (DC: K.4, AC: K.6): a zero DC difference and an
 * end-of-block are both the 2-bit code 00. */
static const uint8_t chroma_dc_counts[16] = {0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
static const uint8_t chroma_dc_values[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const uint8_t chroma_ac_counts[16] = {0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77};
static const uint8_t chroma_ac_values[162] = {
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
    0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1,
    0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36,
    0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
    0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
    0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a,
    0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
    0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};

static void put_headers(bit_writer *w, const jpeg_file *file) {
    uint8_t jfif[14] = {'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 0, 0, 0, 0, 0};
    uint8_t frame[17], dht[2 * 17 + 12 + 162], sos[10];
    const component *grey = &file->component[0];
    int c, chroma_dc = 1 - grey->dc_table, chroma_ac = 1 - grey->ac_table;
    size_t at = 0;
    put_raw(w, (const uint8_t *)"\xFF\xD8", 2);
    memcpy(jfif + 7, file->density, 5);
    put_marker_segment(w, APP0, jfif, sizeof(jfif));
    for (c = 0; c < file->copied; c++) /* DQT and DHT as they were: the luma tables */
        put_raw(w, file->data + file->copied_offset[c], file->copied_length[c]);
    dht[at++] = (uint8_t)chroma_dc;
    memcpy(dht + at, chroma_dc_counts, 16), at += 16;
    memcpy(dht + at, chroma_dc_values, 12), at += 12;
    dht[at++] = (uint8_t)(0x10 | chroma_ac);
    memcpy(dht + at, chroma_ac_counts, 16), at += 16;
    memcpy(dht + at, chroma_ac_values, 162), at += 162;
    put_marker_segment(w, DHT, dht, at);
    if (file->restart_interval) {
        uint8_t dri[2] = {(uint8_t)(file->restart_interval >> 8), (uint8_t)(file->restart_interval & 0xFF)};
        put_marker_segment(w, DRI, dri, 2);
    }
    frame[0] = 8;
    frame[1] = (uint8_t)(file->height >> 8), frame[2] = (uint8_t)file->height;
    frame[3] = (uint8_t)(file->width >> 8), frame[4] = (uint8_t)file->width;
    frame[5] = 3;
    for (c = 0; c < 3; c++)
        frame[6 + 3 * c] = (uint8_t)(c + 1), frame[7 + 3 * c] = 0x11, frame[8 + 3 * c] = (uint8_t)grey->quant_table;
    put_marker_segment(w, file->sof_marker, frame, 15);
    sos[0] = 3;
    sos[1] = 1, sos[2] = (uint8_t)(grey->dc_table << 4 | grey->ac_table);
    sos[3] = 2, sos[4] = (uint8_t)(chroma_dc << 4 | chroma_ac);
    sos[5] = 3, sos[6] = sos[4];
    sos[7] = 0, sos[8] = 63, sos[9] = 0;
    put_marker_segment(w, SOS, sos, 10);
}

/* Walk the scan, MCU by MCU and block by block; 0 if any of it does not parse.  With a writer (the
 * splice, grey files only), each block's bits are copied out, followed by two empty chroma blocks. */
static int walk_scan(const jpeg_file *file, bit_writer *out) {
    const huff_table *dc[MAX_BLOCKS_IN_MCU], *ac[MAX_BLOCKS_IN_MCU];
    const component *luma = &file->component[0];
    scan_data scan = {NULL, 0, NULL, 0};
    size_t mcus, intervals, interval, done = 0, bit = 0, room = file->size - file->scan_start;
    int per_mcu = 0, c, b, ok = 0;
    if (file->components == 1) { /* one block per MCU whatever the sampling factors (T.81 A.2.2) */
        mcus = (size_t)((file->width + 7) / 8) * (size_t)((file->height + 7) / 8);
    } else { /* chroma is 1x1, so the luma factors are the largest */
        mcus = (size_t)((file->width + 8 * luma->h - 1) / (8 * luma->h)) *
               (size_t)((file->height + 8 * luma->v - 1) / (8 * luma->v));
    }
    for (c = 0; c < file->components; c++) {
        const component *comp = &file->component[c];
        int count = file->components == 1 ? 1 : comp->h * comp->v;
        for (b = 0; b < count; b++, per_mcu++)
            dc[per_mcu] = &file->dc[comp->dc_table], ac[per_mcu] = &file->ac[comp->ac_table];
    }
    intervals = file->restart_interval ? (mcus + file->restart_interval - 1) / file->restart_interval : 1;
    /* a block takes 2 bits at least and a restart marker 2 bytes: a header that promises more than the
     * data can hold is a truncated file, refused before any size-derived allocation */
    if (mcus * (size_t)per_mcu / 4 + (intervals - 1) * 2 > room)
        return 0;
    if (!destuff(file, intervals, &scan))
        goto out;
    for (interval = 0; interval < intervals; interval++) {
        size_t end = scan.interval_start[interval + 1] * 8;
        size_t count = file->restart_interval ? (size_t)file->restart_interval : mcus;
        if (count > mcus - done)
            count = mcus - done;
        bit = scan.interval_start[interval] * 8;
        for (; count; count--, done++)
            for (b = 0; b < per_mcu; b++) {
                size_t start = bit;
                if (!skip_block(dc[b], ac[b], scan.bytes, &bit) || bit > end)
                    goto out; /* checked per block: a damaged one reads at most READ_AHEAD bytes past the end */
                if (out) {
                    copy_bits(out, scan.bytes, start, bit);
                    put_bits(out, 0, 8); /* Cb and Cr: DC difference 0, end of block */
                }
            }
        if ((bit + 7) / 8 != end / 8) /* bytes left over in this interval: not a clean scan */
            goto out;
        if (out) {
            pad_to_byte(out);
            if (interval + 1 < intervals) {
                uint8_t restart[2] = {0xFF, (uint8_t)(RST0 + interval % 8)};
                put_raw(out, restart, 2);
            }
        }
    }
    ok = done == mcus;
out:
    free(scan.bytes);
    free(scan.interval_start);
    return ok;
}

static int parse(const uint8_t *data, size_t size, jpeg_file *file) {
    memset(file, 0, sizeof(*file));
    file->data = data, file->size = size;
    return parse_headers(file);
}

/* The whole splice; the output buffer in *result (malloc'd), or 0 if out of scope. */
static int splice(const uint8_t *data, size_t size, uint8_t **result, size_t *result_length) {
    jpeg_file file;
    bit_writer w = {NULL, 0, 0, 0};
    size_t blocks, intervals, copied = 0;
    int c;
    if (!parse(data, size, &file) || file.components != 1)
        return 0;
    blocks = (size_t)((file.width + 7) / 8) * (size_t)((file.height + 7) / 8);
    intervals = file.restart_interval ? (blocks + file.restart_interval - 1) / file.restart_interval : 1;
    if (blocks / 4 > size - file.scan_start)
        return 0; /* before the allocation below: walk_scan refuses it too */
    for (c = 0; c < file.copied; c++)
        copied += file.copied_length[c];
    /* stuffing at most doubles the entropy bytes (one chroma byte per block among them); a restart marker
     * and its padding per interval; the copied tables; the other headers are under 1 KB */
    w.out = malloc(2 * (size + blocks) + 4 * intervals + copied + 1024);
    if (!w.out)
        return 0;
    put_headers(&w, &file);
    if (!walk_scan(&file, &w)) {
        free(w.out);
        return 0;
    }
    put_raw(&w, (const uint8_t *)"\xFF\xD9", 2);
    *result = w.out;
    *result_length = w.length;
    return 1;
}

