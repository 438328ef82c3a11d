/* Shrinking one 8-bit image plane, for pack --resize's YCbCr path (see _resample.c). */
#ifndef RECPACK_RESAMPLE_H
#define RECPACK_RESAMPLE_H

#include <stddef.h>

struct plane {
    unsigned char *pixels;
    size_t stride; /* bytes from one row to the next */
    unsigned int width, height;
};

/* Where one axis's output pixels sit on the input: output i is centred on input coordinate
 * offset + (i + 0.5) * scale (offset: where a box starts, as Pillow's resize(box=) takes it), and its
 * filter spans scale input pixels each side when shrinking.  Outputs centred past edge_centre are
 * centred there instead, with a filter edge_scale wide: so that a chroma sample past an odd image edge
 * is the image's last pixel, as libjpeg's downsampler (which replicates the edge) makes it.  Windows
 * never reach outside the input: the weights left are normalised to 1, as Pillow does at its edges. */
struct axis_map {
    double scale;
    double edge_centre, edge_scale;
    double offset; /* last, so that a map written {scale, edge_centre, edge_scale} starts at 0 */
};

/* Resample in onto out's width x height with a triangle filter widened by the reduction (the filter
 * of Pillow's BILINEAR).  Returns 0, or -1 when out of memory. */
int resample_plane(const struct plane *in, const struct plane *out, const struct axis_map *x,
                   const struct axis_map *y);

/* Fill out's rows and columns beyond width x height, up to padded_width x padded_height, with copies of
 * its last column and row (what libjpeg does to pad an image to whole MCUs). */
void pad_plane(const struct plane *out, unsigned int padded_width, unsigned int padded_height);

#endif
