"""Where bytes live: local paths and fsspec URLs (s3://, gs://, http(s)://) behind one small protocol
(``store``), with the URL check (``urls``), the one retry loop (``retry``), a bounded block cache
(``cache``), and a dataset's manifest and upload (``datasets``).  Imports ``format`` and the ground floor.
"""
