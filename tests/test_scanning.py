"""The streaming scan keeps per-input labels and scores equal to those of a whole-tensor pass
that holds every logit, and its report counts equal the whole-tensor ones."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mitigate.counting import summarize
from mitigate.data.evalset import Batch, Group
from mitigate.scanning import Predictions, scan
from mitigate.selectors.scores import SCORES, score_logits

GROUPS = [Group("clean"), Group("noise/1", "noise", 1), Group("noise/2", "noise", 2)]
SCORE_NAMES = ("margin", "random", "kl")


def _batches(seed: int, sizes: list[int], batch_size: int) -> list[Batch]:
    """Every group's inputs in batches, positions unique across groups (as iter_batches)."""
    generator = torch.Generator().manual_seed(seed)
    batches, offset = [], 0
    for g, n in enumerate(sizes):
        x = torch.randn(n, 6, generator=generator) * (1 + g)
        y = torch.randint(0, 4, (n,), generator=generator)
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            batches.append(Batch(x[index], y[index], g, index, offset + index))
        offset += n
    return batches


def _whole_tensor(reference, variants, batches, seed) -> Predictions:
    """Keep every logit, then label and score all inputs at once: what a scan avoids."""
    with torch.no_grad():
        fp = torch.cat([reference(b.x) for b in batches])
        q = {k: torch.cat([m(b.x) for b in batches]) for k, m in variants.items()}
    index = torch.cat([b.index for b in batches])
    position = torch.cat([b.position for b in batches])
    fp_only = [SCORES[s] for s in SCORE_NAMES if not SCORES[s].needs_quantized]
    scores = {k: v.numpy() for k, v in score_logits(fp_only, fp, index=position, seed=seed).items()}
    for name, logits in q.items():
        kl = score_logits([SCORES["kl"]], fp, logits, index=index, seed=seed)["kl"]
        scores[f"kl@{name}"] = kl.numpy()
    return Predictions(
        groups=GROUPS,
        group=np.concatenate([np.full(len(b.y), b.group, dtype=np.int32) for b in batches]),
        index=index.numpy(),
        label=torch.cat([b.y for b in batches]).numpy(),
        reference=fp.argmax(1).numpy(),
        variants={k: v.argmax(1).numpy() for k, v in q.items()},
        scores=scores,
    )


@settings(max_examples=15, deadline=None, database=None)
@given(
    st.integers(0, 2**31 - 1),
    st.lists(st.integers(1, 40), min_size=3, max_size=3),
    st.integers(1, 16),
)
def test_streamed_scan_equals_a_whole_tensor_pass(seed, sizes, batch_size):
    torch.manual_seed(seed)
    reference = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    # Copies that answer differently on some inputs: the reference with perturbed weights.
    variants = {}
    for name, scale in (("a", 0.3), ("b", 0.6)):
        copy = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
        copy.load_state_dict(
            {k: v + scale * torch.randn_like(v) for k, v in reference.state_dict().items()}
        )
        variants[name] = copy
    batches = _batches(seed, sizes, batch_size)
    streamed = scan(reference, variants, batches, groups=GROUPS, scores=SCORE_NAMES, seed=seed)
    whole = _whole_tensor(reference, variants, batches, seed)

    for field in ("group", "index", "label", "reference"):
        got, want = getattr(streamed, field), getattr(whole, field)
        assert got.dtype == want.dtype and np.array_equal(got, want), field
    assert streamed.variants.keys() == whole.variants.keys()
    for name in whole.variants:
        assert np.array_equal(streamed.variants[name], whole.variants[name])
    assert streamed.scores.keys() == whole.scores.keys()
    for name in whole.scores:
        # Row-wise scores: a batch of 1 and all inputs at once round alike only up to float32.
        np.testing.assert_allclose(streamed.scores[name], whole.scores[name], rtol=1e-5, atol=1e-6)
    assert summarize(streamed) == summarize(whole)
