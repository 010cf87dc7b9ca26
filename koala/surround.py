"""The picture apart from its surround: find the print in a scan.

Archive scans often hold more than the photograph: the white or cream paper margin, the mount,
rounded or torn corners and edges showing the scanner bed (white, or black under a closed lid),
black film borders, and things laid beside the print (a colour target, a ruler, a note). None
of that is evidence of what the photograph is. :func:`picture_mask` marks the photograph on a
small CIE Lab thumbnail: the surround is every flat, paper-like (pale and neutral-to-cream) or
near-black region that reaches the scan's edge; what is left apart from the print's own body
(small islands beside it: targets, rulers, ink on the mount) is surround too.
"""

from __future__ import annotations

import cv2
import numpy as np

#: local change of L* (per thumbnail pixel) under which a region counts as flat
FLAT_STEP = 4.0
#: paper and scanner bed: at least this light, and a*, b* within the paper range below
PAPER_MIN_L = 72.0
PAPER_A = (-4.0, 9.0)
PAPER_B = (-5.0, 26.0)
#: near-black (a closed lid, film borders) at most this light
BLACK_MAX_L = 14.0
#: islands apart from the print smaller than this share of its body are dropped as surround
ISLAND_SHARE = 0.25
#: layers of surround (bed, mount, margin, ...) followed inward, and the widest edge between
#: two of them (thumbnail pixels)
LAYERS = 4
GAP = 3
#: a scan has a surround only when at least this share of its edge is paper-like
MIN_EDGE_SHARE = 0.25
#: when less than this share of the thumbnail is left, the whole thumbnail is the picture
#: (a high-key or night photograph, not a print on a bed)
MIN_PICTURE_SHARE = 0.3


def _paper_like(lab: np.ndarray) -> np.ndarray:
    """Flat pixels that are pale paper-coloured or near-black."""
    light, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    step = np.abs(cv2.Sobel(light, cv2.CV_32F, 0, 1)) + np.abs(cv2.Sobel(light, cv2.CV_32F, 1, 0))
    flat = step < FLAT_STEP * 8  # a Sobel pair sums 8 times the per-pixel change
    paper = (light >= PAPER_MIN_L) & (a >= PAPER_A[0]) & (a <= PAPER_A[1])
    paper &= (b >= PAPER_B[0]) & (b <= PAPER_B[1])
    return flat & (paper | (light <= BLACK_MAX_L))


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` grown by ``steps`` pixels (4-connected steps)."""
    return cv2.dilate(mask.view(np.uint8), _CROSS, iterations=steps).view(bool)


def _reaching_edge(mask: np.ndarray) -> np.ndarray:
    """The parts of ``mask`` connected to the thumbnail's edge, directly or across the thin
    edge (up to :data:`GAP` pixels) between one layer of surround and the next: bed, mount,
    margin."""
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=4)
    if n <= 1:
        return mask
    keep = np.zeros(n, dtype=bool)
    keep[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    for _ in range(LAYERS):
        keep[0] = False
        reached = keep[labels]
        ring = _dilate(reached, GAP) & ~reached
        more = np.unique(labels[ring])
        if keep[more].all():
            break
        keep[more] = True
    keep[0] = False
    return keep[labels]


def picture_mask(lab: np.ndarray) -> np.ndarray:
    """True where ``lab`` (H, W, 3 CIE Lab thumbnail) shows the photograph, not its surround."""
    paper = _paper_like(lab)
    ring = np.concatenate([paper[0], paper[-1], paper[:, 0], paper[:, -1]])
    if ring.mean() < MIN_EDGE_SHARE:  # the picture runs to the edge: no surround to find
        return np.ones(lab.shape[:2], dtype=bool)
    surround = _reaching_edge(paper)
    surround = _dilate(surround, 1)  # the print's edge fringe
    picture = ~surround
    n, labels = cv2.connectedComponents(picture.view(np.uint8), connectivity=4)
    if n > 2:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.concatenate([[False], sizes >= ISLAND_SHARE * sizes.max()])
        picture = keep[labels]
    if picture.mean() < MIN_PICTURE_SHARE:
        return np.ones(lab.shape[:2], dtype=bool)
    return picture
