"""The Gradio demo (``anygen demo``): a multimodal chat over a pipeline, and a ``generate`` API endpoint.

:mod:`anygen.demo.backend` (uploads, streaming, saving) needs no Gradio; :mod:`anygen.demo.app` builds the
app and needs the ``demo`` extra (``pip install anygen[demo]``).
"""
