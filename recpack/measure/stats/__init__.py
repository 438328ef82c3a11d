"""Statistics of a dataset in one pass (``recpack stats``): exact mergeable tallies (``tally``), the
manifest's ``stats`` made from them (``summary``), the pass on every core (``run``), the picture
(``plot``); the per-pixel arithmetic in C (``_pixels``).
"""
