"""Measuring: ``recpack bench`` (``bench``), the epoch-time model (``iomodel``), the page cache
(``pagecache``), process-tree statistics (``procstats``) and a dataset's own statistics
(``stats``: ``recpack stats``).  Sits above pack and read.
"""
