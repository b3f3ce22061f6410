"""CapFilt (BLIP Sec. 3.3): the captioner writes synthetic captions for web images, the filter scores
web and synthetic captions, a policy selects, and the kept captions are resharded.

Every per-shard step is a pure function (one input shard in, one file out, named by a hash of
everything that determines it), so a re-run skips finished shards, a killed run resumes exactly,
and Prefect, Dask or Ray can map the steps over shards and machines.
"""

# the files and folders of a CapFilt work folder (and its quality report), named once
CAPTIONS, SCORES, SELECTION, SHARDS = "captions", "scores", "selection.parquet", "shards"
CALIBRATION, SELECTION_META, SCORE_INDEX = "calibration", "selection.json", "scores.json"
"""`scores.json`: which score files the last scoring run wrote (and with which checkpoints), so
`select` and `reshard` read what the filter step produced and need no model paths."""
AUDIT, AUDIT_PAGE = "audit", "index.html"
"""The audit page's folder and its page file (blip_core.capfilt.audit): every caption with its
image, scores and decision."""
QUALITY_FILE = "capfilt_quality.json"
"""The selection's quality figures against the world's labelled noise (a DVC metrics file)."""
