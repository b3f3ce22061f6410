"""CapFilt (BLIP Sec. 3.3): the captioner writes synthetic captions for web images, the filter scores
web and synthetic captions, a policy selects, and the kept captions are resharded.

Every per-shard step is a pure function (one input shard in, one file out, named by a hash of
everything that determines it), so a re-run skips finished shards, a killed run resumes exactly,
and Prefect, Dask or Ray can map the steps over shards and machines.
"""
