/* Shrinking one 8-bit image plane, for pack --resize's YCbCr path (see _resample.c). */
#ifndef RECPACK_RESAMPLE_H
#define RECPACK_RESAMPLE_H

#include <stddef.h>

struct plane {
    unsigned char *pixels;
    size_t stride; /* bytes from one row to the next */
    unsigned int width, height;
};

/* Resample in onto out's width x height with a triangle filter widened by the reduction (the filter
 * of Pillow's BILINEAR); output pixel (x, y) is centred on input ((x + 0.5) * scale_x, (y + 0.5) *
 * scale_y).  Returns 0, or -1 when out of memory. */
int resample_plane(const struct plane *in, const struct plane *out, double scale_x, double scale_y);

/* Fill out's rows and columns beyond width x height, up to padded_width x padded_height, with copies of
 * its last column and row (what libjpeg does to pad an image to whole MCUs). */
void pad_plane(const struct plane *out, unsigned int padded_width, unsigned int padded_height);

#endif
