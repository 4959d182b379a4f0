"""The learner worker (``lifelong learner``): a thin loop over small parts.

- :mod:`learner.worker.loop`: the loop (:class:`Learner`);
- :mod:`learner.worker.session`: its configuration, set-up parts, checkpoints, candidates;
- :mod:`learner.worker.parts`: the parts built once the lease is held;
- :mod:`learner.worker.resume`: the loop state in a checkpoint, and restoring it;
- :mod:`learner.worker.report`: the status document and a candidate's provenance;
- :mod:`learner.worker.lease_holder`: the training lease and fenced writes;
- :mod:`learner.worker.rounds`: the teacher's rounds (focus, round-end evaluation);
- :mod:`learner.worker.candidates`: save, evaluate, gate and record candidate versions;
- :mod:`learner.worker.evidence`: the gate's evidence (candidate and reference answers);
- :mod:`learner.worker.lineage`: which version the weights descend from (rollback, reset).
"""

from learner.worker.lease_holder import LeaseLost
from learner.worker.loop import Learner
from learner.worker.resume import LoopState

__all__ = ["Learner", "LeaseLost", "LoopState"]
