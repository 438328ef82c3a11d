/* Walk a baseline JPEG's entropy-coded data block by block, without decoding it.
 *
 * scan_is_clean(data) -> bool
 *   True when every block of the file parses and libjpeg would read the file
 *   without an error or a warning; False when the walk is not sure, and the
 *   caller asks libjpeg (``_libjpeg.check``), which says what is wrong.
 *   Why: the packer's default check runs libjpeg's entropy decoder over every
 *   stored JPEG, and that is most of a pack's CPU.  Deciding decodability
 *   needs only where each block's bits end, not the coefficients: a 9-bit
 *   lookahead table gives a code's length, its extra bits and how many
 *   coefficients it covers, and nothing is written.
 *
 * gray_to_color(data) -> bytes, or None when this fast path does not apply.
 *   Grey JPEG -> colour JPEG by splicing its entropy-coded data, with no
 *   Huffman re-encoding.  recpack stores every record as 3-component JPEG,
 *   and libjpeg's lossless transcode (jpeg_read_coefficients +
 *   jpeg_write_coefficients, in _libjpeg.c) decodes every coefficient and
 *   Huffman-codes it again.  In a 4:4:4 interleaved scan the MCU is one luma
 *   block then one Cb and one Cr block, on the same block grid as the grey
 *   scan (ceil(W/8) x ceil(H/8)), and the restart interval counts the same
 *   units.  So the output's luma blocks can be the grey file's own bits,
 *   coded with its own Huffman tables, each followed by two all-zero chroma
 *   blocks (DC difference 0, then end-of-block): 2 + 2 bits each with the
 *   standard (Annex K) chroma tables, i.e. 8 zero bits per MCU.  Flat chroma
 *   means R = G = B = the grey value.  Only the quantisation and Huffman
 *   tables, the restart interval and the JFIF density are carried over; other
 *   metadata is dropped, as for every converted image.
 *
 * Scope of both (anything else is refused: False or None):
 *   baseline or extended sequential Huffman JPEGs with 8-bit samples, one
 *   scan holding every component in frame order, tables ids 0-1; 1 component
 *   (any sampling factors), or 3 with the luma factors 1-2 and chroma 1x1
 *   (4:4:4, 4:2:2, 4:4:0, 4:2:0; grey only for the splice).  The scan must
 *   parse cleanly: every code valid, every block within 64 coefficients,
 *   restart markers in order, no stray bytes, fill bytes (0xFF) only before
 *   a marker, EOI right after the scan.
 *   Headers must be ones libjpeg reads silently: only the markers it knows
 *   (APPn, COM, DQT, DHT, DRI, SOF0/SOF1, SOS), a JFIF version 1.x, an Adobe
 *   transform of 0 or 1, quantisation tables defined for every component,
 *   no DNL.  The rule behind every refusal: whatever the walk accepts,
 *   libjpeg must accept without a warning (tests/test_jpegscan.py checks it
 *   over thousands of damaged files, and the fuzz target fuzz/jpegscan_scan_is_clean.c over millions).
 *
 * Both are plain C over the file's bytes (scan_clean(), splice()); the Python bindings at the end only
 * convert arguments and results, and compiled with RECPACK_WITHOUT_PYTHON the file has none: fuzz/ links
 * it into libFuzzer targets (tools/fuzz.sh).
 */
#ifndef RECPACK_WITHOUT_PYTHON
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SOF0 = 0xC0, SOF1 = 0xC1, DHT = 0xC4, RST0 = 0xD0, SOI = 0xD8, EOI = 0xD9, SOS = 0xDA, DQT = 0xDB,
       DRI = 0xDD, APP0 = 0xE0, APP14 = 0xEE, COM = 0xFE, LOOKAHEAD = 9, WINDOW = 12, MAX_COMPONENTS = 3,
       MAX_BLOCKS_IN_MCU = 6 };

/* One decoding table, built as in ITU T.81 F.2.2.3, plus a 9-bit lookahead that says, for the
 * codes up to 9 bits long, how far to skip (the code and the extra bits after it) and how many
 * coefficients the symbol covers: the walk never needs a coefficient's value. */
typedef struct {
    int defined;
    int32_t maxcode[18]; /* largest code of each length, -1 if none; [17] sentinel */
    int32_t valoffset[17];
    uint8_t values[256];
    uint16_t skip[1 << LOOKAHEAD]; /* (coefficients << 8) | bits; 0: not there, take the slow path */
    /* AC tables: every whole symbol (code and extra bits) in the next WINDOW bits, at once.  One lookup
     * then stands for about two, which halves the walk's chain of dependent loads.  bits | coefficients
     * << 4 (end of block counted as 1) | end of block << 11; 0: no whole symbol, take the one-symbol path */
    uint16_t several[1 << WINDOW];
} huff_table;

typedef struct {
    int id, h, v, quant_table;
    int dc_table, ac_table; /* from the scan header */
} component;

/* What the file says, and where its pieces are. */
typedef struct {
    const uint8_t *data;
    size_t size;
    int sof_marker, width, height, components;
    component component[MAX_COMPONENTS];
    int quant_defined[4];
    int restart_interval;
    size_t scan_start; /* first byte of entropy-coded data */
    huff_table dc[2], ac[2];
    /* for the splice: source segments copied into the output (DQT and DHT, in their order) */
    size_t copied_offset[64], copied_length[64];
    int copied;
    uint8_t density[5]; /* JFIF units, Xdensity, Ydensity */
} jpeg_file;

/* Coefficients an AC symbol covers (0: end of block); -1 if 8-bit data cannot hold it. */
static int ac_coefficients(int symbol) {
    int run = symbol >> 4, size = symbol & 15;
    if (size == 0)
        return run == 15 ? 16 : run == 0 ? 0 : -1;
    return size > 10 ? -1 : run + 1;
}

/* The several-symbol lookups, from the one-symbol ones: a symbol whose bits (code and extra) lie within the
 * window was identified by those bits alone, whatever the zero padding after the window. */
static void fill_several(huff_table *table) {
    unsigned window;
    for (window = 0; window < (1u << WINDOW); window++) {
        int bits = 0, coefficients = 0, end_of_block = 0;
        while (bits < WINDOW) {
            int entry = table->skip[((window << bits) & ((1u << WINDOW) - 1)) >> (WINDOW - LOOKAHEAD)];
            int length = entry & 0xFF, covers = entry >> 8;
            if (!entry || bits + length > WINDOW || coefficients + covers > 63)
                break;
            bits += length;
            if (!covers) {
                coefficients++, end_of_block = 1;
                break;
            }
            coefficients += covers;
        }
        table->several[window] = (uint16_t)(bits ? bits | coefficients << 4 | end_of_block << 11 : 0);
    }
}

/* One DHT table from its 16 counts and the symbols after them, within `room` bytes: the bytes it takes, or 0
 * if it does not fit or is outside the scope.  Counts and symbols are read once, into locals and the table:
 * the caller's buffer may be a bytearray that another thread changes meanwhile (the GIL is released), and a
 * second read must not move a bound checked on the first. */
static size_t build_table(huff_table *table, const uint8_t *spec, size_t room, int is_ac) {
    uint8_t counts[16];
    const uint8_t *symbols = table->values;
    int length, i, k = 0, total = 0;
    int32_t code = 0;
    memset(table, 0, sizeof(*table));
    if (room < 16)
        return 0;
    memcpy(counts, spec, 16);
    for (i = 0; i < 16; i++)
        total += counts[i];
    if (total > 256 || 16 + (size_t)total > room)
        return 0;
    memcpy(table->values, spec + 16, (size_t)total);
    for (i = 0; i < total && !is_ac; i++)
        if (symbols[i] > 15)
            return 0; /* a DC category over 15: libjpeg refuses the table once a scan uses it; leave it to libjpeg */
    for (length = 1; length <= 16; length++) {
        table->valoffset[length] = k - code;
        for (i = 0; i < counts[length - 1]; i++, k++, code++) {
            int symbol = symbols[k], covers = is_ac ? ac_coefficients(symbol) : (symbol <= 11 ? 0 : -1);
            int extra = symbol & 15, shift = LOOKAHEAD - length, fill;
            if (code >= (1 << length))
                return 0; /* more codes than the length holds (checked before the fill below writes past skip[]) */
            if (length > LOOKAHEAD || covers < 0)
                continue; /* slow path: longer codes, and symbols that make the walk fail */
            for (fill = 0; fill < (1 << shift); fill++)
                table->skip[(code << shift) | fill] = (uint16_t)((covers << 8) | (length + extra));
        }
        table->maxcode[length] = counts[length - 1] ? code - 1 : -1;
        if (code >= (1 << length))
            return 0; /* an all-ones code: libjpeg refuses the table too */
        code <<= 1;
    }
    table->maxcode[17] = 0x7FFFFFFF;
    table->defined = 1;
    if (is_ac)
        fill_several(table);
    return 16 + (size_t)total;
}

static int read_u16(const uint8_t *p) { return (p[0] << 8) | p[1]; }

/* The frame header (SOF0/SOF1); 0 if outside the scope. */
static int parse_frame(jpeg_file *file, const uint8_t *body, int length, int marker) {
    int c, max_h = 1, max_v = 1;
    if (length < 6 || body[0] != 8)
        return 0;
    file->sof_marker = marker;
    file->height = read_u16(body + 1);
    file->width = read_u16(body + 3);
    file->components = body[5];
    /* what libjpeg refuses stays refused: sizes over 65500, and a height of 0 (a DNL marker would give it
     * later) */
    if ((file->components != 1 && file->components != 3) || length != 6 + 3 * file->components ||
        file->height == 0 || file->width == 0 || file->height > 65500 || file->width > 65500)
        return 0;
    for (c = 0; c < file->components; c++) {
        component *comp = &file->component[c];
        int i;
        comp->id = body[6 + 3 * c];
        comp->h = body[7 + 3 * c] >> 4;
        comp->v = body[7 + 3 * c] & 15;
        comp->quant_table = body[8 + 3 * c];
        if (comp->quant_table > 3 || comp->h < 1 || comp->h > 4 || comp->v < 1 || comp->v > 4)
            return 0;
        for (i = 0; i < c; i++)
            if (file->component[i].id == comp->id)
                return 0;
        if (comp->h > max_h) max_h = comp->h;
        if (comp->v > max_v) max_v = comp->v;
    }
    /* three components: luma at most 2x2, chroma 1x1 (integer upsampling ratios, at most 6 blocks per MCU) */
    for (c = 0; c < file->components && file->components == 3; c++)
        if (c == 0 ? (file->component[0].h > 2 || file->component[0].v > 2)
                   : (file->component[c].h != 1 || file->component[c].v != 1))
            return 0;
    return 1;
}

/* The scan header; 0 if outside the scope. */
static int parse_scan(jpeg_file *file, const uint8_t *body, int length) {
    int c;
    if (length != 4 + 2 * file->components || body[0] != file->components)
        return 0;
    for (c = 0; c < file->components; c++) {
        component *comp = &file->component[c];
        if (body[1 + 2 * c] != comp->id || !file->quant_defined[comp->quant_table])
            return 0;
        comp->dc_table = body[2 + 2 * c] >> 4;
        comp->ac_table = body[2 + 2 * c] & 15;
        if (comp->dc_table > 1 || comp->ac_table > 1 || !file->dc[comp->dc_table].defined ||
            !file->ac[comp->ac_table].defined)
            return 0;
    }
    body += 1 + 2 * file->components;
    return body[0] == 0 && body[1] == 63 && body[2] == 0; /* sequential: Ss 0, Se 63, Ah Al 0 */
}

/* Walk the markers up to the scan; 0 if this file is outside the scope. */
static int parse_headers(jpeg_file *file) {
    const uint8_t *d = file->data;
    size_t pos = 2, size = file->size;
    int have_frame = 0;
    if (size < 4 || d[0] != 0xFF || d[1] != SOI)
        return 0;
    file->density[0] = 0, file->density[1] = 0, file->density[2] = 1, file->density[3] = 0, file->density[4] = 1;
    for (;;) {
        int marker, length;
        const uint8_t *body;
        if (pos + 4 > size || d[pos] != 0xFF)
            return 0;
        marker = d[pos + 1];
        if (marker == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (!(marker == SOF0 || marker == SOF1 || marker == DHT || marker == DQT || marker == DRI ||
              marker == SOS || marker == COM || (marker >= APP0 && marker <= APP0 + 15)))
            return 0; /* other frame types, arithmetic tables, DNL, stray RST/SOI/EOI, markers libjpeg rejects */
        length = read_u16(d + pos + 2);
        if (length < 2 || pos + 2 + (size_t)length > size)
            return 0;
        body = d + pos + 4;
        length -= 2;
        if (marker == SOF0 || marker == SOF1) {
            if (have_frame || !parse_frame(file, body, length, marker))
                return 0;
            have_frame = 1;
        } else if (marker == DQT) {
            size_t at = 0;
            while (at < (size_t)length) {
                int spec = body[at]; /* read once: see build_table */
                size_t table_length = (spec >> 4) ? 129 : 65;
                if ((spec >> 4) > 1 || (spec & 15) > 3 || at + table_length > (size_t)length)
                    return 0;
                file->quant_defined[spec & 15] = 1;
                at += table_length;
            }
        } else if (marker == DHT) {
            size_t at = 0;
            while (at < (size_t)length) {
                int spec = body[at], kind = spec >> 4, id = spec & 15;
                size_t taken;
                if (kind > 1 || id > 1)
                    return 0;
                taken = build_table(kind ? &file->ac[id] : &file->dc[id], body + at + 1, (size_t)length - at - 1, kind);
                if (!taken)
                    return 0;
                at += 1 + taken;
            }
        } else if (marker == DRI) {
            if (length != 2)
                return 0;
            file->restart_interval = read_u16(body);
        } else if (marker == APP0 && length >= 14 && memcmp(body, "JFIF\0", 5) == 0) {
            if (body[5] != 1)
                return 0; /* libjpeg warns about any other JFIF major version */
            memcpy(file->density, body + 7, 5);
        } else if (marker == APP14 && length >= 12 && memcmp(body, "Adobe", 5) == 0) {
            if (body[11] > 1)
                return 0; /* libjpeg warns about an unknown colour transform */
        } else if (marker == SOS) {
            if (!have_frame || !parse_scan(file, body, length))
                return 0;
            file->scan_start = pos + 2 + (size_t)length + 2;
            return 1;
        }
        if (marker == DQT || marker == DHT) {
            if (file->copied == 64)
                return 0;
            file->copied_offset[file->copied] = pos;
            file->copied_length[file->copied] = (size_t)length + 4;
            file->copied++;
        }
        pos += 2 + (size_t)length + 2;
    }
}

/* Zero bytes after the destuffed data: a damaged block can read past its end before it is caught (a
 * block is at most 64 codes of 16 bits plus 11 extra bits each), and peek() loads 8 bytes at a time. */
enum { READ_AHEAD = 512 };

/* The entropy-coded data with its stuffing removed (plus READ_AHEAD zero bytes), and where
 * each restart interval starts in it.  0 if the segment is malformed or not followed by EOI. */
typedef struct {
    uint8_t *bytes;
    size_t length;
    size_t *interval_start; /* byte offset of each interval in bytes[]; [count] = length */
    size_t intervals;
} scan_data;

static int destuff(const jpeg_file *file, size_t expected_intervals, scan_data *scan) {
    const uint8_t *d = file->data;
    size_t pos = file->scan_start, size = file->size, out = 0;
    int ended = 0;
    scan->bytes = malloc(size - pos + READ_AHEAD);
    scan->interval_start = malloc((expected_intervals + 1) * sizeof(size_t));
    if (!scan->bytes || !scan->interval_start)
        return 0;
    scan->interval_start[0] = 0;
    scan->intervals = 1;
    while (pos < size) {
        const uint8_t *marker = memchr(d + pos, 0xFF, size - pos);
        size_t run = (marker ? (size_t)(marker - d) : size) - pos, fills;
        uint8_t byte;
        memcpy(scan->bytes + out, d + pos, run); /* about 256 bytes between two 0xFF in coded data */
        out += run, pos += run + 1;
        if (!marker)
            break;
        for (fills = 0; pos < size && d[pos] == 0xFF; fills++)
            pos++; /* fill bytes before a marker */
        if (pos == size)
            return 0;
        byte = d[pos++];
        if (byte == 0x00) {
            /* FF FF 00: fill bytes belong before a marker only (T.81 B.1.1.2).  libjpeg reads one 0xFF data
             * byte, and so would the splice, but libjpeg-turbo's fast Huffman path takes FF FF for a marker and
             * leaves coefficients decoded from zero bits in the block, which its slow path's redo does not
             * clear: other pixels.  Before RST and EOI fills are harmless: the data before them is complete. */
            if (fills)
                return 0;
            scan->bytes[out++] = 0xFF;
        } else if (byte >= RST0 && byte < RST0 + 8) {
            if (scan->intervals == expected_intervals || byte != RST0 + (scan->intervals - 1) % 8)
                return 0;
            scan->interval_start[scan->intervals++] = out;
        } else {
            if (byte != EOI)
                return 0;
            ended = 1;
            break;
        }
    }
    if (!ended || scan->intervals != expected_intervals)
        return 0;
    scan->interval_start[scan->intervals] = out;
    scan->length = out;
    memset(scan->bytes + out, 0, READ_AHEAD);
    return 1;
}

static inline uint64_t peek(const uint8_t *bytes, size_t bit) {
    uint64_t word;
    memcpy(&word, bytes + (bit >> 3), 8);
    return __builtin_bswap64(word) << (bit & 7); /* the next bits at the top; at least 57 valid */
}

/* The slow path, by T.81 F.2.2.3 (codes longer than the lookahead, symbols the walk refuses); the
 * symbol, or -1 for a code the table does not have. */
static int decode_long(const huff_table *table, uint64_t word, int *length_out) {
    int length;
    for (length = 1; length <= 16; length++) {
        int32_t code = (int32_t)(word >> (64 - length));
        if (code <= table->maxcode[length]) {
            *length_out = length;
            return table->values[table->valoffset[length] + code];
        }
    }
    return -1;
}

/* Skip one 8x8 block's bits from *bit; 0 if they do not parse. */
static int skip_block(const huff_table *dc, const huff_table *ac, const uint8_t *bytes, size_t *bit) {
    const uint8_t *at = bytes + (*bit >> 3);
    int used = (int)(*bit & 7), k = 1, entry, length, symbol, covers;
    uint64_t word;
#define REFILL()                                                                                                \
    if (used > 32) {                                                                                            \
        at += used >> 3;                                                                                        \
        used &= 7;                                                                                              \
        memcpy(&word, at, 8);                                                                                   \
        word = __builtin_bswap64(word);                                                                         \
    }
    memcpy(&word, at, 8);
    word = __builtin_bswap64(word); /* the next bits at the top, from bit `used` on; 32 or more valid */
    entry = dc->skip[(word << used) >> (64 - LOOKAHEAD)];
    if (!entry) {
        symbol = decode_long(dc, word << used, &length);
        if (symbol < 0 || symbol > 11)
            return 0;
        entry = length + symbol;
    }
    used += entry & 0xFF;
    while (k < 64) {
        REFILL();
        entry = ac->several[(word << used) >> (64 - WINDOW)];
        if (entry && k + ((entry >> 4) & 0x7F) <= 64) { /* never past the block's end: the next block's bits */
            used += entry & 15;
            k += (entry >> 4) & 0x7F;
            if (entry >> 11)
                break; /* end of block, counted as one coefficient */
            continue;
        }
        entry = ac->skip[(word << used) >> (64 - LOOKAHEAD)];
        if (!entry) {
            symbol = decode_long(ac, word << used, &length);
            covers = symbol < 0 ? -1 : ac_coefficients(symbol);
            if (covers < 0)
                return 0;
            entry = (covers << 8) | (length + (symbol & 15));
        }
        used += entry & 0xFF;
        if (!(entry >> 8))
            break; /* end of block */
        k += entry >> 8;
    }
#undef REFILL
    *bit = (size_t)(at - bytes) * 8 + (size_t)used;
    return k <= 64;
}

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

/* scan_is_clean's answer. */
static int scan_clean(const uint8_t *data, size_t size) {
    jpeg_file file;
    return parse(data, size, &file) && walk_scan(&file, NULL);
}

/* ------------------------------------------------------------------------------------------------------
 * The Python bindings, with the GIL released around the work.
 */
#ifndef RECPACK_WITHOUT_PYTHON

static PyObject *gray_to_color(PyObject *self, PyObject *args) {
    Py_buffer input;
    uint8_t *out = NULL;
    size_t length = 0;
    int ok;
    PyObject *result;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &input))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    ok = splice((const uint8_t *)input.buf, (size_t)input.len, &out, &length);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&input);
    if (!ok)
        Py_RETURN_NONE;
    result = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)length);
    free(out);
    return result;
}

static PyObject *scan_is_clean(PyObject *self, PyObject *args) {
    Py_buffer input;
    int clean;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &input))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    clean = scan_clean((const uint8_t *)input.buf, (size_t)input.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&input);
    return PyBool_FromLong(clean);
}

static PyMethodDef methods[] = {
    {"gray_to_color", gray_to_color, METH_VARARGS,
     "gray_to_color(data) -> 3-component JPEG bytes spliced losslessly from a baseline grey JPEG, or None"},
    {"scan_is_clean", scan_is_clean, METH_VARARGS,
     "scan_is_clean(data) -> True if every block parses and libjpeg reads the file silently; False: ask libjpeg"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpegscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpegscan(void) { return PyModule_Create(&module); }

#endif /* RECPACK_WITHOUT_PYTHON */
