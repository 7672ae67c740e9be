"""NExT-GPT's batching: every batch holds one modality group, mixing the sets that share it.

Each example carries a share of its set's mixing weight (``weight / len(set)``); a batch first draws a group
(image, video, audio, text... with the groups' total shares as probabilities), then its examples within the
group (by share, without repeats when the group is large enough).

Batch ``k`` is drawn from a random generator seeded with ``(seed, k)`` alone, so the sampler has no state:
resuming at step ``k`` draws what an uninterrupted run would, and every process draws the same global batch
and keeps its own slice (``batch(k)[rank * per_process : (rank + 1) * per_process]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anygen.train.data import DataSet, Example


class ModalityBatchSampler:
    def __init__(self, sets: Sequence[DataSet], batch_size: int, seed: int = 0) -> None:
        """``batch_size``: examples per global batch (all processes together)."""
        self.examples: list[Example] = [e for s in sets for e in s.examples]
        self.batch_size = batch_size
        self.seed = seed
        total = sum(s.weight for s in sets if s.examples)
        shares = np.concatenate(
            [np.full(len(s.examples), s.weight / total / len(s.examples)) for s in sets if s.examples]
        )
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(self.examples):
            groups.setdefault(e.group, []).append(i)
        self.groups = sorted(groups)
        self._members = [np.asarray(groups[g]) for g in self.groups]
        self._within = [shares[idx] / shares[idx].sum() for idx in self._members]
        mass = np.asarray([shares[idx].sum() for idx in self._members])
        self.group_probs = mass / mass.sum()

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, k: int) -> list[int]:
        """Indices (into :attr:`examples`) of global batch ``k``."""
        rng = np.random.default_rng([self.seed, k])
        g = int(rng.choice(len(self.groups), p=self.group_probs))
        members, probs = self._members[g], self._within[g]
        replace = len(members) < self.batch_size
        picked = rng.choice(len(members), size=self.batch_size, replace=replace, p=probs)
        return members[picked].tolist()

    def local_batch(self, k: int, rank: int, num_processes: int) -> list[int]:
        per = self.batch_size // num_processes
        return self.batch(k)[rank * per : (rank + 1) * per]

    def describe(self) -> str:
        parts = [
            f"{g} {p:.0%} ({len(m)} examples)"
            for g, p, m in zip(self.groups, self.group_probs, self._members, strict=True)
        ]
        return ", ".join(parts)
