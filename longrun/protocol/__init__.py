"""The run protocol: the checkpoint document, its statuses, and what each allows next.

One JSON document per run holds everything a later invocation needs. This package is the one
place that knows its shape and its rules (``document``, ``validate``, ``rules``):

* :class:`Checkpoint` is the document as a typed structure. :func:`decode` validates every
  field at every load (types, ranges, the run id against the key it was read from, finite
  numbers, bounded nesting, known format versions) and raises :class:`CheckpointCorrupt`
  naming the field; nothing is written from a document that failed.
* :class:`Status` is the one enumeration of statuses; no other module spells them.
* The decisions are pure functions without I/O (decide, then the caller executes, as in
  tenacity): :func:`decide_claim` (may this invocation claim the run), :func:`claim_live`,
  :func:`decide_next` (what follows a hop that ended early), :func:`why_not_resumable` and
  :func:`may_cancel` (may the run be resumed or cancelled from outside).
* Every conditional write carries a fresh ``write_id`` (:func:`new_write_id`): a writer whose
  reply was lost finds its own write on the conflict and carries on (:func:`is_own_write`).

It depends only on the errors and the codec (``checkpoint.py``). The statuses and
transitions are drawn in ``docs/concepts.md``.
"""

from .document import (
    FORMAT,
    Answer,
    Checkpoint,
    Claim,
    Cursor,
    ErrorRecord,
    Escalation,
    HopEntry,
    Notice,
    Status,
    answer,
    new_write_id,
)
from .rules import (
    Act,
    ClaimDecision,
    NextStep,
    claim_live,
    decide_claim,
    decide_new_run,
    decide_next,
    fargate_request_id,
    holds_live_claim,
    is_own_write,
    may_cancel,
    notice_due,
    why_not_resumable,
)
from .validate import decode, from_json, parse

__all__ = [
    "FORMAT",
    "Act",
    "Answer",
    "Checkpoint",
    "Claim",
    "ClaimDecision",
    "Cursor",
    "ErrorRecord",
    "Escalation",
    "HopEntry",
    "NextStep",
    "Notice",
    "Status",
    "answer",
    "claim_live",
    "decide_claim",
    "decide_new_run",
    "decide_next",
    "decode",
    "fargate_request_id",
    "from_json",
    "holds_live_claim",
    "is_own_write",
    "may_cancel",
    "new_write_id",
    "notice_due",
    "parse",
    "why_not_resumable",
]
