"""Evaluation suites behind one runner (``anygen eval``). ``world``: the shapes-and-tones world, judged
analytically (:mod:`anygen.eval.world`, :mod:`anygen.eval.judges`). ``pairs``: real NExT-GPT pair lists, scored with
CLIP/CLAP scores and BLEU-4/CIDEr-D (:mod:`anygen.eval.pairs`, :mod:`anygen.eval.scores`)."""
