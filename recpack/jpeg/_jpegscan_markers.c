/* _jpegscan_markers.c: the file's markers: Huffman tables, frame and scan headers.
 * Part of _jpegscan.c, which includes it (one translation unit: its helpers stay static). */
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

