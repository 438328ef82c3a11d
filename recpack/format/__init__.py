"""The on-disk contract: every byte recpack writes, specified here and nowhere else.

Only this package knows the layout; it imports nothing of recpack but ``errors``, and of
other libraries numpy, crc32c (the checksum the format names) and lmdb (the key index's file).

A dataset is one folder::

    recpack.json        the manifest (``manifest``), written last: its presence means "complete"
    shard-00000.rec  \\
    shard-00000.idx   > one shard, as many as the manifest lists
    shard-00000.rpi  /
    keys.lmdb/          source key -> (shard, record, offset), for ``recpack get`` (``keyindex``)
    dataset.idx         one MXNet index over all the shards, for DALI (below)
    bad_inputs.tsv      inputs a pack skipped, with the reason (may hold only its header)
    stats-mean-224-<crc32c>.npy   the average image, once ``recpack stats`` ran (``stats``)
    .recpack-pack/      only while a pack runs, or after one was interrupted

``shard-NNNNN.rec``: the records, in order, in dmlc RecordIO framing (``framing``), which
MXNet's ``MXIndexedRecordIO``/``ImageRecordIter`` and DALI's ``readers.mxnet`` read as is.
Each record is one or more *parts*::

    uint32 magic = 0xced7230a           (little endian, as every integer here)
    uint32 lrec  = cflag << 29 | length (length < 2**29)
    length bytes of data, then zero padding to a multiple of 4

cflag 0 means "the whole record is in this part".  The writer looks at the payload at
offsets that are multiples of 4; wherever those 4 bytes equal the magic, the record is cut:
the bytes before go into a part (cflag 1 for the first, 2 for a middle one), the magic is
dropped, and the last part gets cflag 3.  A reader joins the parts, putting the magic back
between each pair.  So a magic found at an aligned file offset always starts a part.

A record's *payload* (``schema``) is MXNet's IRHeader, struct ``<IfQQ``::

    uint32  flag     0: ``label`` is the one label.  n > 0: n float32 labels follow the header
    float32 label
    uint64  id       recpack: the record's line number in the source list
    uint64  id2      recpack: 0

then (flag > 0) the ``flag`` float32 labels, then the image (a JPEG), then the trailing
fields of ``schema.TRAILING_FIELDS`` (today only the segmentation mask, a PNG; empty when
the dataset has none), whose lengths the per-record index holds.

``shard-NNNNN.idx``: MXNet's text index, one ``key<TAB>offset`` line per record (key = the
record's position in the shard, offset = where its first part starts).  recpack writes it
only so that MXNet and DALI can read the shard (``index_files``).

``shard-NNNNN.rpi``: recpack's per-record index, a NumPy ``.npy`` file of one structured row
per record (``schema.RECORD_INDEX_DTYPE``: offset, payload length, payload CRC32C, and the
length of each trailing field), 20 bytes a record, memory-mapped and read only when the
shard is (``index_files``).

``dataset.idx``: the same text format over the whole dataset: one ``key<TAB>offset`` line
per record of every shard, in the manifest's shard order, keyed 0..N-1, each offset moved by
the sizes of the ``.rec`` files before its shard, as if the shards were one file.  DALI's
``readers.mxnet`` takes many ``.rec`` paths but exactly one index, whose offsets it reads
that way.  Written at pack and import time from the ``.rpi`` files and the shard sizes
(``index_files.dataset_idx_bytes``), after the shards and before the manifest; not listed in
the manifest, since it is derived from what is (``recpack verify`` rebuilds and compares it).
A dataset written before it existed has none.

The manifest holds only what is per dataset or per shard, never per record, so that
opening a 14M-record dataset reads one small JSON file: see ``manifest`` for its fields,
and ``stats`` for its ``stats`` field (on the 0-1 scale) and the average image beside it.
"""
