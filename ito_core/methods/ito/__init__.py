"""ITO (arXiv 2603.02767) as released: multiple alignment of M image views x N captions plus the training-time
fusion loss (``model.py``); the ``ito`` and ``loss`` groups choose its settings, so they alone name its runs."""

from ito_core.methods.spec import RUN_KEY_NONE, MethodSpec

SPEC = MethodSpec(name="ito", builders="ito_core.methods.ito.model", run_key=RUN_KEY_NONE, view_options=True)
