"""Image-text retrieval recall@k with CLIP_benchmark's metric names; an image may have several captions.

A caption and an image match when the caption's text is one of the image's captions, not only when the caption
came with that image. Eval sets repeat captions: in the procedural shapes, images with the same shapes, sizes and
positions share their caption set ("a large red circle at the top left" belongs to many images); in Tux Paint,
"A pumpkin." describes several stamps. Whichever of those images a caption retrieves is correct, and every one
of those captions is correct for each of them. Matching by index alone would make them count as misses, capping
recall below 1 for a perfect model. Texts are "the same" when the caller gives them the same ``text_ids_T``: the
eval suite uses the tokenizer's output, so two captions match exactly when the text tower cannot tell them
apart (case and spacing differences included).

Shape legend: N = images, T = texts (captions), U = distinct texts, D = embedding dim, q = a chunk of queries.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ito_core.eval.ranking import match_ranks


def retrieval_metrics(
    image_features_ND: torch.Tensor,
    text_features_TD: torch.Tensor,
    text_to_image_T: torch.Tensor,
    *,
    text_ids_T: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """`image_retrieval_recall@k`: a caption finds an image it describes in the top k. `text_retrieval_recall@k`:
    an image finds a caption that describes it in the top k. `text_to_image_T[t]` is the image index of caption
    t; `text_ids_T[t]` names its text (equal ids = the same text; default: every caption a text of its own, so a
    caption describes only its own image). Ties in score count as misses (a collapsed model scores 0)."""
    num_images = len(image_features_ND)
    device = image_features_ND.device
    text_to_image_T = text_to_image_T.to(device)
    _check_captions(num_images, len(text_features_TD), text_to_image_T)
    if any(k < 1 for k in ks):
        raise ValueError(f"retrieval ks={tuple(ks)}; every k must be >= 1")
    text_ids_T = dense_text_ids(text_ids_T, len(text_to_image_T), device=device)
    describes_UN = describes(text_ids_T, text_to_image_T, num_images)
    describes_NU = describes_UN.t().coalesce()
    images_ND = F.normalize(image_features_ND.float(), dim=-1)
    texts_TD = F.normalize(text_features_TD.float(), dim=-1)
    text_query_ranks_T = match_ranks(
        texts_TD, images_ND, matches=lambda rows: _dense_rows(describes_UN, text_ids_T[rows])
    )
    image_query_ranks_N = match_ranks(
        images_ND, texts_TD,
        matches=lambda rows: _dense_rows(describes_NU, torch.arange(num_images, device=device)[rows])[:, text_ids_T],
    )
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = (text_query_ranks_T < k).float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = (image_query_ranks_N < k).float().mean().item()
    return metrics


def dense_text_ids(text_ids_T: torch.Tensor | None, num_texts: int, *, device: torch.device) -> torch.Tensor:
    """Text ids renumbered 0..U-1 (same id = same text); None = every caption a text of its own."""
    if text_ids_T is None:
        return torch.arange(num_texts, device=device)
    if len(text_ids_T) != num_texts:
        raise ValueError(f"got {len(text_ids_T)} text ids for {num_texts} captions; need one per caption")
    return torch.unique(text_ids_T.to(device), return_inverse=True)[1]


def describes(text_ids_T: torch.Tensor, text_to_image_T: torch.Tensor, num_images: int) -> torch.Tensor:
    """Sparse [U, N] 0/1 matrix: text u describes image n when some caption of n has the text u (ids 0..U-1)."""
    num_texts = int(text_ids_T.max()) + 1 if len(text_ids_T) else 0
    ones_T = torch.ones(len(text_ids_T), device=text_ids_T.device)
    pairs = torch.stack([text_ids_T, text_to_image_T])
    # coalesce sums repeated (text, image) pairs (an image captioned twice with one text): > 0 is the relation.
    return torch.sparse_coo_tensor(pairs, ones_T, (num_texts, num_images), check_invariants=True).coalesce()


def _dense_rows(sparse_RC: torch.Tensor, rows_q: torch.Tensor) -> torch.Tensor:
    """Rows ``rows_q`` of a sparse 0/1 matrix as a dense bool [q, C]: memory stays one chunk of queries."""
    return sparse_RC.index_select(0, rows_q).to_dense() > 0


def _check_captions(num_images: int, num_texts: int, text_to_image_T: torch.Tensor) -> None:
    if num_images == 0 or num_texts == 0 or len(text_to_image_T) != num_texts:
        raise ValueError(f"got {num_images} images, {num_texts} text features and {len(text_to_image_T)} "
                         "text_to_image entries; need > 0 of each and one entry per text")
    if text_to_image_T.min() < 0 or text_to_image_T.max() >= num_images:
        raise ValueError(f"text_to_image must hold image indices in [0, {num_images})")
    captions_per_image_N = text_to_image_T.bincount(minlength=num_images)
    if (captions_per_image_N == 0).any():
        missing = (captions_per_image_N == 0).nonzero().flatten().tolist()
        raise ValueError(f"every image needs at least one caption; images {missing[:5]} have none")
