"""Workflows built from the stages below them: data -> per-example quantities -> selectors.

- :mod:`jaxsubset.workflows.score_pass`: a streaming, sharded (one shard per JAX process),
  resumable scoring pass over a random-access source, its score artifacts, and reading them back.
"""

from jaxsubset.workflows.score_pass import (PER_EXAMPLE, check_manifest, data_fingerprint, load_scores,
                                            model_fingerprint, read_manifest, score_pass)

__all__ = ["score_pass", "load_scores", "read_manifest", "check_manifest", "data_fingerprint",
           "model_fingerprint", "PER_EXAMPLE"]
