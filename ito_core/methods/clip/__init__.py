"""CLIP (arXiv 2103.00020): ITO's model and objective at one view, one caption, InfoNCE and no fusion
(``configs/method/clip.yaml`` sets ito=clip, loss=clip), so method=clip trains exactly what method=ito ito=clip does
and keeps its run key."""

from ito_core.methods.spec import RUN_KEY_NONE, MethodSpec

SPEC = MethodSpec(name="clip", builders="ito_core.methods.ito.model", run_key=RUN_KEY_NONE, view_options=True)
