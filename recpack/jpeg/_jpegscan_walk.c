/* _jpegscan_walk.c: the entropy-coded data, destuffed, walked block by block.
 * Part of _jpegscan.c, which includes it (one translation unit: its helpers stay static). */
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

