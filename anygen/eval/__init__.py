"""Evaluation suites behind one runner (``anygen eval``). ``world``: the shapes-and-tones world, judged
analytically (:mod:`anygen.eval.world`, :mod:`anygen.eval.judges`)."""
