"""The training lineage: which version the learner's weights descend from.

- After a candidate is saved, the lineage continues from it (the next version's parent).
- When someone else changes the active version (a rollback, an admin's promotion), the
  learner continues from the new active version: its weights are loaded and it becomes the
  parent; the abandoned lineage stays listed in the registry.
- After ``reset_after_rejections`` consecutive rejected candidates the learner resets its
  weights to the active version, logged as a ``reset`` registry event, so that a drifting
  lineage cannot keep drifting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection

from learner.model import registry
from learner.training.step import Trainer
from learner.worker.candidates import LEARNER_ACTOR, CandidateOutcome
from learner.worker.lease_holder import Fenced

log = logging.getLogger(__name__)


@dataclass
class LineageState:
    """Saved with every checkpoint, so that a restarted learner keeps its lineage."""

    parent: int | None = None  # the version the current weights descend from
    event_id: int = 0  # the newest registry event seen
    rejections: int = 0  # consecutive rejected candidates
    trained: list[int] = field(default_factory=list)  # bucket ids trained since the active


class Lineage:
    """Keeps the learner's weights on the right lineage."""

    def __init__(
        self,
        trainer: Trainer,
        data_dir: Path,
        fenced: Fenced,
        reset_after: int,
    ) -> None:
        self.trainer, self.data_dir = trainer, data_dir
        self.fenced, self.reset_after = fenced, reset_after
        self.state = LineageState()
        self._unloadable: set[int] = set()
        # Buckets trained since the newest candidate was saved: while it is judged in the
        # background, training goes on, and a promotion must not forget them.
        self._since_save: list[int] = []
        self._replaced_since_save = False  # weights loaded from elsewhere meanwhile

    def trained_on(self, bucket_id: int) -> None:
        if bucket_id not in self.state.trained:
            self.state.trained.append(bucket_id)
        if bucket_id not in self._since_save:
            self._since_save.append(bucket_id)

    def saved(self) -> None:
        """A candidate was saved from the current weights."""
        self._since_save = []
        self._replaced_since_save = False

    def follow(self, conn: Connection) -> bool:
        """Take in registry events made by others; True when the weights were replaced."""
        events = registry.events_since(conn, self.state.event_id)
        if not events:
            return False
        self.state.event_id = events[-1].id
        changes = [
            e for e in events if e.action in registry.ACTIVE_CHANGES and e.actor != LEARNER_ACTOR
        ]
        if not changes:
            return False
        target = registry.active_version(conn)
        if target == self.state.parent or target in self._unloadable:
            return False
        reason = f"{changes[-1].action} by {changes[-1].actor}"
        return self._continue_from(conn, target, reason)

    def _continue_from(self, conn: Connection, version: int | None, reason: str) -> bool:
        path = None
        if version is not None:
            try:
                path = registry.verified_path(conn, self.data_dir, version)
            except registry.VersionUnavailable as exc:
                self._unloadable.add(version)  # logged once, not at every tick
                log.error("cannot continue from v%s (%s): %s", version, reason, exc)
                return False
        self.trainer.load_version(path)
        self.state.parent = version
        self.state.rejections = 0
        self.state.trained = []
        self._since_save = []
        self._replaced_since_save = True
        log.info(
            "continuing from %s after a %s", "base" if version is None else f"v{version}", reason
        )
        return True

    def after_candidate(self, outcome: CandidateOutcome) -> str | None:
        """Move the lineage on after a candidate; reset it after too many rejections.

        Returns why the training weights were replaced (a reset, or a promotion at a scale
        below 1, whose scaled weights training continues from), None when they were not:
        the teacher must hear of both, or a bucket's next evaluations, on the replaced
        weights, read as a stall. A candidate judged after the weights were replaced (a
        rollback while it was evaluated in the background) moves nothing: the weights no
        longer descend from it."""
        if self._replaced_since_save:
            return None
        self.state.parent = outcome.version
        if outcome.promoted:
            self.state.rejections = 0
            self.state.trained = list(self._since_save)
            if outcome.scale != 1.0:
                self._follow_scaled(outcome)
                return f"the weights followed v{outcome.version}, promoted at scale {outcome.scale}"
        elif outcome.verdict == "reject":
            self.state.rejections += 1
            if self.state.rejections >= self.reset_after:
                why = f"{self.state.rejections} consecutive rejected candidates"
                if self.reset(f"{why} (the last: v{outcome.version})"):
                    return "the weights were reset after rejections"
        return None

    def _follow_scaled(self, outcome: CandidateOutcome) -> None:
        """After a promotion at scale s < 1 the weights become the promoted ones (read
        back from its files), so that the lineage's weights are what is served and the
        next candidate is judged from there (continuing from the unscaled weights would
        take the lineage ever further from the served model). AdamW keeps its moments:
        they belong to the same parameters, a little moved. A candidate judged in the
        background gives up the steps trained since its save."""
        path = self.data_dir / registry.version_relpath(outcome.version)
        self.trainer.load_weights(path)
        if self._since_save:
            self._since_save = []
            self.state.trained = []
        log.info("continuing from the promoted v%d (scale %s)", outcome.version, outcome.scale)

    def reset(self, why: str) -> bool:
        """Go back to the active version's weights and log it as a registry event."""
        with self.fenced() as conn:
            active = registry.active_version(conn)
            if not self._continue_from(conn, active, "reset"):
                return False
            registry.log_reset(conn, LEARNER_ACTOR, f"reset to the active version: {why}")
            self.state.event_id = registry.last_event_id(conn)
        return True
