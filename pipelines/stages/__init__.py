"""One thin function per pipeline stage.

Each reads its config, calls ``modules/``, owns its MLflow child run and carbon tracker,
and returns a small typed record (``records``: paths, fingerprint, run id, metrics). The
cached ones (prep, pretrain, finetune, distill) supply their build to one skeleton (``cached``).
They run and test without Prefect; the flows only order them.
"""

from pipelines.stages.distill import distill
from pipelines.stages.evaluate import evaluate
from pipelines.stages.finetune import finetune
from pipelines.stages.prep import prep
from pipelines.stages.pretrain import pretrain

__all__ = ["prep", "pretrain", "finetune", "distill", "evaluate"]
