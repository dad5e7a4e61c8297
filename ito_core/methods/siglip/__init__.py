"""SigLIP (arXiv 2303.15343): ITO's model and objective at one view, one caption, the pairwise sigmoid loss with a
learnable bias and no fusion (``configs/method/siglip.yaml`` sets ito=clip, loss=siglip)."""

from ito_core.methods.spec import RUN_KEY_NONE, MethodSpec

SPEC = MethodSpec(name="siglip", builders="ito_core.methods.ito.model", run_key=RUN_KEY_NONE, view_options=True)
