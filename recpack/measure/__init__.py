"""Measuring: ``recpack bench`` (``bench``), the epoch-time model (``iomodel``), the page cache
(``pagecache``) and process-tree statistics (``procstats``).  Sits above pack and read.
"""
