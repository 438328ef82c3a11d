"""JPEG bytes, below both packing and reading: the one header reader, DCT-scale choice, and the C code.

``header`` reads what a JPEG says of itself (size, components, orientation); ``scales`` picks the
DCT scale to decode at; ``_libjpeg`` binds the libjpeg-turbo operations recpack needs (cropped
scaled decode, the decode check, lossless grey-to-colour, --resize in YCbCr planes with the
plane resampler of ``_resample.c``); ``_jpegscan`` walks baseline files' blocks without a library.
"""
