"""Candidate versions: save, evaluate, gate, record; and the disk they may keep.

``CandidateMaker.make`` runs every ``candidate_every`` steps:

1. reserve the next version number in a fenced transaction (a ``pending`` row);
2. write ``adapters/v<N>`` atomically, never over an existing directory, and record its
   sha256 (the row becomes a ``candidate``);
3. gather the gate's evidence (:mod:`learner.worker.evidence`) outside any transaction:
   it takes seconds, and on SQLite a write transaction would hold up ingestion;
4. run the gate, at several scales of the candidate's LoRA delta (the largest passing
   one is kept, :mod:`learner.worker.scale_search`; a scaled candidate's files are
   rewritten with the scaled weights) and, in one short fenced transaction, store every
   new per-probe answer, the verdict, the report and the scale, and promote the
   candidate if it passed;
5. prune the files of old rejected and superseded candidates (rows stay, ``retired``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft.utils import load_peft_weights
from sqlalchemy import Connection, Engine

from learner.evaluation.gate import GateConfig
from learner.evaluation.probes import ProbeAnswer, answer_probes
from learner.evaluation.refusal import RefusalDetector, make_detector
from learner.fsutil import is_no_space, remove_stale_temporaries, write_dir_atomically
from learner.model import registry
from learner.store.buckets import bucket_catalog
from learner.store.evaluations import evaluated_bucket_ids, record_results, stored_answers
from learner.store.probes import ProbeSet, load_probe_sets
from learner.training.replica import EvalReplica
from learner.training.step import Trainer
from learner.worker.evidence import Answerer, Model, References
from learner.worker.lease_holder import Fenced
from learner.worker.scale_search import (
    SearchResult,
    Weights,
    matching_reference,
    scaled_adapter,
    search_scale,
    write_scaled_weights,
)

log = logging.getLogger(__name__)


class NoSpaceLeft(RuntimeError):
    """A candidate could not be saved for want of disk space (its row is retired)."""


LEARNER_ACTOR = "learner"
REFERENCE_ADAPTER = "reference"


@dataclass(frozen=True)
class CandidateOutcome:
    """What became of a candidate: its version, the verdict and the report."""

    version: int
    verdict: str  # promote | reject | hold
    report: dict[str, Any]
    accuracy: dict[str, float]  # the candidate's probe accuracy per evaluated bucket
    answers: dict[int, bool]  # example id -> correct, over every probe it answered
    scale: float = 1.0  # the scale of the LoRA delta its saved weights hold

    @property
    def promoted(self) -> bool:
        return self.verdict == "promote"


class CandidateMaker:
    """Makes, evaluates, gates and records candidate versions for one learner."""

    def __init__(
        self,
        engine: Engine,
        trainer: Trainer,
        fenced: Fenced,
        data_dir: Path,
        gate: GateConfig,
        max_new_tokens: int,
        replica: EvalReplica | None = None,
        is_refusal: RefusalDetector | None = None,
    ) -> None:
        self.engine, self.trainer, self.fenced = engine, trainer, fenced
        self.data_dir, self.gate, self.max_new_tokens = data_dir, gate, max_new_tokens
        # Tells the alignment probes' refusals from answers (the gate's patterns by default).
        self.is_refusal = is_refusal or make_detector(gate.refusal, gate.refusals)
        # Where candidates are evaluated: a replica (while the trainer trains on) or, without
        # one, the trained model itself (training waits).
        self.replica = replica
        self._pool: ThreadPoolExecutor | None = None  # the replica's judge, made when needed
        self._judging: Future[CandidateOutcome] | None = None

    # --- files -------------------------------------------------------------------------

    def recover(self) -> None:
        """After a crash: pending rows (files half written or never recorded) are retired
        and their directories and stale temporaries removed."""
        adapters = self.data_dir / registry.ADAPTERS_DIR
        if adapters.is_dir():
            remove_stale_temporaries(adapters)
        with self.fenced() as conn:
            pending = registry.version_paths(conn, ["pending"])
            for version, stored in pending:
                shutil.rmtree(registry.resolve_path(self.data_dir, stored), ignore_errors=True)
                note = {"verdict": "abandoned", "summary": "the learner stopped while saving it"}
                registry.set_status(conn, version, "retired", note)
        if pending:
            log.warning("retired %d version(s) left pending by a crash", len(pending))

    def save(self, parent: Model, step: int, provenance: dict[str, Any]) -> int:
        """Reserve a version number, write the adapter files, record their hash."""
        base_model = str(provenance["base_model"])
        with self.fenced() as conn:
            version = registry.reserve_version(conn, parent, base_model, step)
        provenance = {**provenance, "version": version, "parent_version": parent}
        path = self.data_dir / registry.version_relpath(version)

        def fill(tmp: Path) -> None:
            self.trainer.model.save_pretrained(str(tmp))
            registry.write_provenance(tmp, provenance)

        try:
            write_dir_atomically(path, fill, replace=False)
        except Exception as exc:
            if not is_no_space(exc):
                raise
            with self.fenced() as conn:  # never servable: no files, and it says why
                note = {"verdict": "abandoned", "summary": "no space left to save it"}
                registry.set_status(conn, version, "retired", note)
            raise NoSpaceLeft(f"version {version} not saved: {exc}") from exc
        digest = registry.sha256_file(path / registry.ADAPTER_WEIGHTS)
        with self.fenced() as conn:
            registry.complete_version(conn, version, digest, provenance)
        return version

    def prune(self) -> list[int]:
        """Remove the files of rejected and never-promoted candidates beyond the newest
        ``keep_candidates`` (never the active version's); their rows become ``retired``."""
        with self.engine.connect() as conn:
            active = registry.active_version(conn)
            rows = registry.version_paths(conn, ["candidate", "rejected"], newest_first=True)
        old = [(v, stored) for v, stored in rows[self.gate.keep_candidates :] if v != active]
        if not old:
            return []
        with self.fenced() as conn:
            for version, _ in old:
                registry.set_status(conn, version, "retired")
        for _, stored in old:  # after the commit: a retired row never points at files in use
            shutil.rmtree(registry.resolve_path(self.data_dir, stored), ignore_errors=True)
        return [version for version, _ in old]

    # --- evaluation --------------------------------------------------------------------

    @property
    def _model(self) -> Any:
        return self.trainer.model if self.replica is None else self.replica.model

    def _answer_current(self, probes: ProbeSet) -> list[ProbeAnswer]:
        tokenizer = self.trainer.tokenizer if self.replica is None else self.replica.tokenizer
        return answer_probes(self._model, tokenizer, probes, self.max_new_tokens)

    def _scaled_answers(self, reference: Weights | None) -> Callable[[float], Answerer]:
        """scale -> the candidate's answers with its LoRA parameters interpolated from
        ``reference`` (the active version's; None: the base) by ``scale``."""

        def at(scale: float) -> Answerer:
            def run(probes: ProbeSet) -> list[ProbeAnswer]:
                with scaled_adapter(self._model, scale, reference):
                    return self._answer_current(probes)

            return run

        return at

    def _reference_weights(self, conn: Connection, active: Model) -> Weights | None:
        """The active version's adapter weights, where the scale search's interpolation
        starts (None: the base model, or weights the candidate cannot be interpolated
        with)."""
        if active is None:
            return None
        try:
            path = registry.verified_path(conn, self.data_dir, active)
        except registry.VersionUnavailable as exc:
            log.error("scale search from the base: the active version is unusable: %s", exc)
            return None
        weights = matching_reference(self._model, load_peft_weights(str(path), device="cpu"))
        if weights is None:
            log.warning("scale search from the base: v%d has another LoRA shape", active)
        return weights

    def _answer_base(self, probes: ProbeSet) -> list[ProbeAnswer]:
        with self._model.disable_adapter():
            return self._answer_current(probes)

    def _answer_version(self, path: Path) -> Answerer:
        """Answers of a saved version, loaded beside the trained adapter for a moment."""

        def run(probes: ProbeSet) -> list[ProbeAnswer]:
            model = self._model
            model.load_adapter(str(path), adapter_name=REFERENCE_ADAPTER)
            model.set_adapter(REFERENCE_ADAPTER)
            try:
                return self._answer_current(probes)
            finally:
                model.set_adapter("default")
                model.delete_adapter(REFERENCE_ADAPTER)
                if self.replica is None:
                    model.train()

        return run

    def _probe_sets(self, conn: Connection, active: Model, trained: list[int]) -> list[ProbeSet]:
        """Samples of every bucket the active version was evaluated on, every bucket
        trained since, every alignment bucket, and every active task bucket: a bucket the
        model already knows when it arrives never becomes a focus (the teacher's placement
        evaluation finds it mastered), and only the gate keeps it known."""
        catalog = bucket_catalog(conn).values()
        judged = {b.id for b in catalog if b.kind == "alignment" or b.status == "active"}
        ids = set(evaluated_bucket_ids(conn, active)) | set(trained) | judged
        return load_probe_sets(
            conn, sorted(ids), self.gate.eval_max_probes, self.gate.alignment_max_probes
        )

    def _references(self, conn: Connection, active: Model, sets: list[ProbeSet]) -> References:
        parents = registry.parents(conn)
        ids = [i for p in sets for i in p.ids]
        lineage: set[Model] = {None, active}
        version = active
        while version is not None and version in parents:  # the active version's ancestors
            version = parents[version]
            lineage.add(version)
        stored = {v: stored_answers(conn, v, ids) for v in lineage}
        answerers: dict[Model, Answerer] = {None: self._answer_base}
        if active is not None:
            try:
                path = registry.verified_path(conn, self.data_dir, active)
                answerers[active] = self._answer_version(path)
            except registry.VersionUnavailable as exc:
                log.error("the active version cannot be a reference: %s", exc)
        return References(stored, answerers)

    # --- the candidate -----------------------------------------------------------------

    def start(
        self, parent: Model, step: int, trained: list[int], provenance: dict[str, Any]
    ) -> int:
        """Save the trained weights as a candidate and have it judged (:meth:`judge`): on
        the replica in the background while training goes on, or without one here and now.
        :meth:`collect` takes the outcome in. One at a time: collect the previous first."""
        if self._judging is not None:
            raise RuntimeError("the previous candidate has not been collected")
        version = self.save(parent, step, provenance)
        if self.replica is None:
            outcome = self.judge(version, step, trained)  # an error leaves nothing pending
            self._judging = Future()
            self._judging.set_result(outcome)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="candidate-judge")
            self._judging = self._pool.submit(self.judge, version, step, trained)
        return version

    def collect(self, wait: bool) -> CandidateOutcome | None:
        """The started candidate's outcome once it is judged (``wait``: block until then);
        None if there is none or it is not ready. Errors of the judge (LeaseLost too)
        surface here, on the caller's thread."""
        judging = self._judging
        if judging is None or not (wait or judging.done()):
            return None
        self._judging = None
        return judging.result()

    def close(self) -> None:
        """Wait for a background judge and stop its thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def judge(self, version: int, step: int, trained: list[int]) -> CandidateOutcome:
        """Evaluate a saved candidate, run the gate, record the verdict, prune old files.

        With a replica this may run on another thread while the trainer trains on: it
        reads the candidate's weights from its saved files, never from the trainer."""
        if self.replica is None:
            return self._judge(version, step, trained)
        with self.replica.lock:
            self.replica.load(self.data_dir / registry.version_relpath(version))
            return self._judge(version, step, trained)

    def _judge(self, version: int, step: int, trained: list[int]) -> CandidateOutcome:
        with self.engine.connect() as conn:
            active = registry.active_version(conn)
            sets = self._probe_sets(conn, active, trained)
            refs = self._references(conn, active, sets)
            parents = registry.parents(conn)
            reference = self._reference_weights(conn, active)
        scaled = self._scaled_answers(reference)
        search = search_scale(
            sets, scaled, refs, active, parents, set(trained), self.gate, self.is_refusal
        )
        search.reference = "base" if reference is None else f"v{active}"
        stored = self._record(version, active, step, search, reference)
        verdict = stored["verdict"]
        evidence = search.evidence
        answers = {a.example_id: a.correct for xs in evidence.candidate.values() for a in xs}
        scale = search.scale if search.report.verdict == "promote" else 1.0
        outcome = CandidateOutcome(version, verdict, stored, evidence.accuracy, answers, scale)
        self.prune()
        # The verdict as stored: a promotion can turn into a hold in _record.
        log.info(
            "gate: candidate v%d at step %d: %s",
            version,
            step,
            stored["summary"],
            extra={
                "event": "gate",
                "version": version,
                "verdict": verdict,
                "step": step,
                "scale": scale,
            },
        )
        return outcome

    def _rescale(
        self, version: int, scale: float, search: dict[str, Any], reference: Weights | None
    ) -> tuple[str, dict[str, Any]]:
        """Rewrite a candidate's files with its delta scaled by ``scale``; the new weights'
        sha256 and provenance. Atomic: a crash leaves the old or the new directory, and
        until the registry row has the new hash a crash leaves a candidate whose files
        fail verification, never a servable broken version."""
        path = self.data_dir / registry.version_relpath(version)
        provenance = {**registry.read_provenance(path), "scale": scale, "scale_search": search}

        def fill(tmp: Path) -> None:
            write_scaled_weights(path, tmp, scale, reference)
            registry.write_provenance(tmp, provenance)

        write_dir_atomically(path, fill, replace=True)
        return registry.sha256_file(path / registry.ADAPTER_WEIGHTS), provenance

    def _record(
        self,
        version: int,
        active: Model,
        step: int,
        search: SearchResult,
        reference: Weights | None,
    ) -> dict[str, Any]:
        """Store the probe answers, the gate report and the scale; the report as stored."""
        report, evidence = search.report, search.evidence
        verdict = report.verdict
        data = report.to_dict()
        data["scale_search"] = search.to_dict()
        scaled = verdict == "promote" and search.scale != 1.0
        search_report = data["scale_search"]
        if scaled:  # the summary is logged, listed and shown: it says what is served
            where = f"scale {search.scale:g} from {search.reference}"
            data["summary"] = data["summary"].replace("promoted:", f"promoted at {where}:", 1)
        files = self._rescale(version, search.scale, search_report, reference) if scaled else None
        with self.fenced() as conn:
            for bucket_id, answers in evidence.candidate.items():
                record_results(conn, version, bucket_id, _rows(answers), step)
            for model, by_bucket in evidence.new_reference.items():
                for bucket_id, answers in by_bucket.items():
                    record_results(conn, model, bucket_id, _rows(answers), step)
            if files is not None:
                registry.update_files(conn, version, *files)
            else:
                extra = {"scale": 1.0, "scale_search": data["scale_search"]}
                registry.add_provenance(conn, version, extra)
            if verdict == "promote" and registry.active_version(conn) != active:
                verdict = "hold"
                data["summary"] = "kept as candidate: the active version changed meanwhile"
            data["verdict"] = verdict
            status = {"promote": "promoted", "reject": "rejected"}.get(verdict, "candidate")
            registry.set_status(conn, version, status, data)
            if verdict == "promote":
                registry.promote(conn, version, LEARNER_ACTOR, data["summary"])
        return data


def _rows(answers: list[ProbeAnswer]) -> list[tuple[int, bool, str]]:
    return [(a.example_id, a.correct, a.answer) for a in answers]
