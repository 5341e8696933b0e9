"""Regenerate the bundled sample data in ``napari_medseg/_sample_files/``.

Run from the repository root::

    python sample_data/make_samples.py                      # downloads the nilearn wheel
    python sample_data/make_samples.py --nilearn-wheel /tmp/nl/nilearn-0.14.1-py3-none-any.whl

Why a script and not just files: the samples must be redistributable, so every pixel has to be
traceable either to a permissively licensed source or to this code. The outputs are committed so
that users never need the network; the script exists so that anyone can check where they came
from and rebuild them bit for bit.

Sources
-------
MRI: the ICBM 2009a nonlinear symmetric T1 template with its grey- and white-matter probability
maps, in the 1 mm uint8 form that nilearn (BSD-3-Clause) ships inside its wheel
(``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``, nilearn
0.14.1). Upstream notice: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University; permission to use, copy, modify and
distribute for any purpose without fee, provided the notice appears in all copies.
nilearn is used only as a file archive here, never imported, and is not a dependency.

RGB: one synthetic dermoscopy-like image (skin, an irregular pigmented lesion, hairs)
generated procedurally below from a fixed seed; no external pixels at all.

Scribbles for both are drawn by code (below) from the dense truth: a few thin, smoothed,
slightly wobbly strokes per class that follow the anatomy, the way an annotator traces
cortex or circles a lesion. They never leave their class, and stay well under 5 % of pixels.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage.draw import line
from skimage.morphology import skeletonize

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "napari_medseg" / "_sample_files"

NILEARN_VERSION = "0.14.1"
NILEARN_MEMBERS = {
    "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# sha256 of the members above in nilearn 0.14.1, so a changed upstream file is noticed
# instead of silently producing different samples.
NILEARN_SHA256 = {
    "t1": "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
    "gm": "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed",
    "wm": "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db",
}

# MRI: axial slices at MNI z = -8, 0, +8, +16, +24 mm (voxel k = z + 72): from the temporal
# lobes and midbrain up through the lateral ventricles, so every slice has all four classes.
MRI_SLICES_K = (64, 72, 80, 88, 96)
# crop in voxels (x: left-right, y: posterior-anterior) around the brain, giving 192 x 160
MRI_CROP_X = slice(18, 178)
MRI_CROP_Y = slice(21, 213)
MRI_SEED = 20240601
RGB_SEED = 1
RGB_SIZE = 256


# --------------------------------------------------------------------------- scribbles


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise: the building block of all textures."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-12)


_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _trace_skeleton(
    skel: np.ndarray, start: np.ndarray, length: int, rng: np.random.Generator
) -> np.ndarray:
    """Walk along a skeleton from ``start`` preferring to keep going straight.

    Following the medial line of a class is how people trace a ribbon such as the cortex or a
    ventricle; keeping the heading makes the walk pass through branch points like a pen would.
    """
    h, w = skel.shape
    path = [tuple(start)]
    seen = {tuple(start)}
    heading = None
    for _ in range(length):
        r, c = path[-1]
        options = []
        for dr, dc in _NEIGHBOURS:
            q = (r + dr, c + dc)
            if 0 <= q[0] < h and 0 <= q[1] < w and skel[q] and q not in seen:
                if heading is None:
                    cost = rng.random()
                else:
                    cost = -(dr * heading[0] + dc * heading[1]) / np.hypot(dr, dc)
                    cost += 0.05 * rng.random()
                options.append((cost, q, (dr, dc)))
        if not options:
            break
        _, q, step = min(options)
        if heading is None:
            heading = step
        else:  # a short memory of the direction, so the pen glides through branch points
            heading = (0.6 * heading[0] + step[0], 0.6 * heading[1] + step[1])
        seen.add(q)
        path.append(q)
    return np.asarray(path, dtype=float)


def _free_curve(
    core: np.ndarray, start: np.ndarray, length: int, rng: np.random.Generator
) -> np.ndarray:
    """A hand-like curve inside a blob: constant speed, smoothly varying curvature.

    Used for wide regions (skin, lesion interior) where there is no ribbon to trace; the walk
    bounces back from the border instead of leaving the region.
    """
    h, w = core.shape
    curvature = ndi.gaussian_filter1d(rng.standard_normal(length), 8) * 0.25
    theta = rng.uniform(0, 2 * np.pi)
    p = start.astype(float)
    path = [p.copy()]
    for k in range(length):
        theta += curvature[k]
        for _ in range(8):
            q = p + (np.sin(theta), np.cos(theta))
            ri, ci = int(round(q[0])), int(round(q[1]))
            if 0 <= ri < h and 0 <= ci < w and core[ri, ci]:
                break
            theta += rng.choice([-1, 1]) * 0.4
        else:
            break
        p = q
        path.append(p.copy())
    return np.asarray(path)


def _rasterise(path: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, width: int):
    """Smooth the polyline, add a little low-frequency tremor and draw it ``width`` px wide."""
    out = np.zeros(shape, dtype=bool)
    if len(path) < 3:
        return out
    path = ndi.gaussian_filter1d(path, 2.0, axis=0, mode="nearest")
    tremor = ndi.gaussian_filter1d(rng.standard_normal(path.shape), 5.0, axis=0) * 1.2
    path = path + tremor
    pts = np.rint(path).astype(int)
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:]):
        rr, cc = line(r0, c0, r1, c1)
        for dr in range(width):
            for dc in range(width):
                r, c = rr + dr, cc + dc
                ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
                out[r[ok], c[ok]] = True
    return out


def draw_scribbles(
    truth: np.ndarray, rng: np.random.Generator, plan: dict[int, list[dict]]
) -> np.ndarray:
    """Sparse strokes per class of a 2-D ``truth`` (values 1..K) following ``plan``.

    plan[value] is a list of stroke groups, each dict(core=bool mask where strokes may run,
    mode="trace" (follow the medial line of ``core``) or "free" (wander inside it), n=strokes,
    length=(lo, hi) steps, width=px, weight=optional start-point weights, spread=px).
    Strokes are clipped to their own class so that scribbles never contradict the truth, and
    start points keep ``spread`` px from earlier strokes of the class so strokes cover the
    image rather than pile up.
    """
    scrib = np.zeros(truth.shape, dtype=np.uint8)
    for value, groups in plan.items():
        own = truth == value
        drawn = np.zeros(truth.shape, dtype=bool)
        for spec in groups:
            core = spec["core"] & own
            if not core.any():  # tiny class on this slice: fall back to the class itself
                core = own
            line_mask = skeletonize(core) if spec["mode"] == "trace" else core
            cand = np.argwhere(line_mask)
            if len(cand) == 0:
                continue
            weight = spec.get("weight")
            p = np.ones(len(cand)) if weight is None else weight[tuple(cand.T)] + 1e-6
            for _ in range(spec["n"]):
                pp = p
                if drawn.any():
                    far = ndi.distance_transform_edt(~drawn)[tuple(cand.T)] > spec["spread"]
                    pp = p * far if (p * far).sum() > 0 else p
                length = int(rng.integers(*spec["length"]))
                # a walk can dead-end on a skeleton spur or in a narrow bay: retry a few
                # starts and keep the longest, as a person would redraw a botched stroke
                path = np.zeros((0, 2))
                for _attempt in range(8):
                    start = cand[rng.choice(len(cand), p=pp / pp.sum())]
                    if spec["mode"] == "trace":
                        trial = _trace_skeleton(line_mask, start, length, rng)
                    else:
                        trial = _free_curve(core, start, length, rng)
                    if len(trial) > len(path):
                        path = trial
                    if len(path) >= 0.7 * length:
                        break
                drawn |= _rasterise(path, truth.shape, rng, spec.get("width", 1)) & own
        scrib[drawn] = value
    return scrib


# --------------------------------------------------------------------------- MRI


def _load_nilearn_volumes(wheel: Path) -> dict[str, np.ndarray]:
    """Read the three template volumes straight out of the wheel (a zip), checking sha256."""
    vols = {}
    with zipfile.ZipFile(wheel) as zf:
        for key, member in NILEARN_MEMBERS.items():
            raw = zf.read(member)
            digest = hashlib.sha256(raw).hexdigest()
            if digest != NILEARN_SHA256[key]:
                sys.exit(
                    f"{member} in {wheel} differs from nilearn {NILEARN_VERSION}; "
                    f"pass the {NILEARN_VERSION} wheel with --nilearn-wheel."
                )
            img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
            vols[key] = np.asarray(img.dataobj)
    return vols


def make_mri(wheel: Path) -> dict[str, np.ndarray]:
    """Five axial T1 slices, tissue truth by argmax of the probability maps, and scribbles.

    Classes (napari Labels values, 0 = unlabelled): 1 background (outside the brain),
    2 CSF, 3 grey matter, 4 white matter. The template is brain-extracted, so "outside the
    brain" is every voxel where the T1 is 0; inside, P(CSF) = 1 - P(GM) - P(WM).
    """
    vols = _load_nilearn_volumes(wheel)
    rng = np.random.default_rng(MRI_SEED)
    images, truths, scribs = [], [], []
    for k in MRI_SLICES_K:
        # (x, y) voxel plane -> (row = anterior at top, col = subject's right on the left,
        # the radiological convention clinicians read axial slices in)
        def cut(vol, k=k):
            return np.flipud(vol[MRI_CROP_X, MRI_CROP_Y, k].T)

        t1 = cut(vols["t1"])
        gm = cut(vols["gm"]).astype(np.float32) / 255
        wm = cut(vols["wm"]).astype(np.float32) / 255
        brain = t1 > 0
        csf = np.clip(1 - gm - wm, 0, 1)
        truth = (np.stack([csf, gm, wm]).argmax(0) + 2).astype(np.uint8)
        truth[~brain] = 1

        dist_out = ndi.distance_transform_edt(~brain)
        plan = {
            # arcs around the head, a few mm outside the brain, like circling it
            1: [
                dict(
                    core=(dist_out >= 4) & (dist_out <= 10),
                    mode="trace",
                    n=2,
                    length=(50, 90),
                    width=2,
                    spread=40,
                )
            ],
            # start preferably in thick CSF (ventricles) rather than the sulcal rim
            2: [
                dict(
                    core=truth == 2,
                    mode="trace",
                    n=3,
                    length=(12, 30),
                    width=1,
                    weight=ndi.distance_transform_edt(truth == 2) ** 3,
                    spread=20,
                )
            ],
            # along the cortical ribbon
            3: [dict(core=truth == 3, mode="trace", n=3, length=(30, 55), width=1, spread=30)],
            # along the white-matter core of the hemispheres
            4: [
                dict(
                    core=ndi.distance_transform_edt(truth == 4) >= 3,
                    mode="trace",
                    n=3,
                    length=(30, 55),
                    width=1,
                    spread=30,
                )
            ],
        }
        images.append(t1)
        truths.append(truth)
        scribs.append(draw_scribbles(truth, rng, plan))
    return {"image": np.stack(images), "truth": np.stack(truths), "scribbles": np.stack(scribs)}


# --------------------------------------------------------------------------- RGB


def _lesion_shape(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance-like field of an irregular lesion: radius r(theta) from random harmonics.

    Returns (d, theta): d < 0 inside, in pixels, and the polar angle, used for a border whose
    sharpness varies around the lesion as in real pigmented lesions.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cy, cx = size / 2 + rng.uniform(-0.07, 0.07, 2) * size
    radius = rng.uniform(0.22, 0.3) * size
    theta = np.arctan2(yy - cy, xx - cx)
    rho = np.hypot(yy - cy, xx - cx)
    r = np.ones_like(theta)
    for m in range(2, 9):
        r += rng.normal(0, 0.16 / m**0.8) * np.cos(m * theta + rng.uniform(0, 2 * np.pi))
    # fine raggedness of the border
    r += 0.03 * _smooth_noise(rng, (size, size), 3.5)
    return rho - radius * r, theta


def _one_dermoscopy(seed: int, size: int = RGB_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic dermoscopy-like RGB image (uint8) and its lesion mask (bool)."""
    rng = np.random.default_rng(seed)
    shape = (size, size)

    # skin: warm base tone, slow colour drift, fine furrow texture, pores
    tone = np.array([222.0, 172.0, 150.0]) + rng.normal(0, 6, 3)
    skin = np.ones((*shape, 3)) * tone
    skin += 8 * _smooth_noise(rng, shape, 20)[..., None] * np.array([1.0, 0.9, 0.8])
    furrow = np.abs(_smooth_noise(rng, shape, 3.0)) < 0.12
    skin -= 14 * ndi.gaussian_filter(furrow.astype(float), 0.7)[..., None]
    pores = ndi.gaussian_filter((rng.random(shape) < 0.004).astype(float), 0.8) * 60
    skin -= np.minimum(pores, 12)[..., None]

    # lesion: irregular outline, border sharpness varying around it
    d, theta = _lesion_shape(rng, size)
    softness = 0.6 + 1.8 * (0.5 + 0.5 * np.sin(theta * rng.integers(1, 4) + rng.uniform(0, 6)))
    alpha = 1 / (1 + np.exp(d / softness))
    truth = d < 0

    # pigment: brown with variegation, a darker eccentric centre, a reticular network
    depth = np.clip(-d / np.abs(d[truth]).max(), 0, 1) if truth.any() else np.zeros(shape)
    light = np.array([165.0, 110.0, 75.0])
    dark = np.array([80.0, 48.0, 32.0])
    mix = np.clip(0.35 + 0.5 * depth + 0.2 * _smooth_noise(rng, shape, 8), 0, 1)[..., None]
    lesion = light * (1 - mix) + dark * mix
    network = np.abs(_smooth_noise(rng, shape, 2.2)) < 0.18
    lesion -= 28 * ndi.gaussian_filter(network.astype(float), 0.6)[..., None]
    # blue-grey veil in one sector (regression-like structure)
    veil_dir = rng.uniform(-np.pi, np.pi)
    veil = np.clip(np.cos(theta - veil_dir) - 0.5, 0, None) * 2 * depth
    veil = ndi.gaussian_filter(veil, 4)[..., None] * rng.uniform(0.3, 0.6)
    lesion = lesion * (1 - veil) + np.array([110.0, 110.0, 130.0]) * veil
    # dark globules near the rim
    glob = (rng.random(shape) < 0.0012) & (depth > 0.05) & (depth < 0.45)
    lesion -= 70 * np.clip(ndi.gaussian_filter(glob.astype(float), 1.2) * 10, 0, 1)[..., None]

    img = skin * (1 - alpha[..., None]) + lesion * alpha[..., None]

    # a few hairs: thin dark quadratic curves crossing the field (they do not change the truth)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(0, 4)):
        p0, p1, p2 = rng.uniform(-20, size + 20, (3, 2))
        t = np.linspace(0, 1, 4 * size)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        hair = np.zeros(shape)
        rc = np.rint(curve).astype(int)
        ok = (rc[:, 0] >= 0) & (rc[:, 0] < size) & (rc[:, 1] >= 0) & (rc[:, 1] < size)
        hair[rc[ok, 0], rc[ok, 1]] = 1
        hair = np.clip(ndi.gaussian_filter(hair, 0.5) * 2.5, 0, 1)[..., None]
        hair *= rng.uniform(0.5, 0.8)
        img = img * (1 - hair) + np.array([50.0, 32.0, 24.0]) * hair

    # dermatoscope optics: radial vignetting, slight blur, sensor noise
    rad = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    img *= (1 - 0.18 * rad**2)[..., None]
    img = ndi.gaussian_filter(img, (0.6, 0.6, 0))
    img += rng.normal(0, 2.5, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), truth


def make_rgb(seed: int = RGB_SEED, size: int = RGB_SIZE) -> dict[str, np.ndarray]:
    """One synthetic dermoscopy image; classes 1 background (skin), 2 lesion.

    A single 2-D RGB image rather than a stack: that is what a dermoscopy user opens, and
    the engine's RGB kind is (H, W, 3).
    """
    img, lesion = _one_dermoscopy(seed, size)
    truth = np.where(lesion, 2, 1).astype(np.uint8)
    rng = np.random.default_rng(seed + 1000)
    dist_in = ndi.distance_transform_edt(lesion)
    dist_out = ndi.distance_transform_edt(~lesion)
    frame = np.zeros(lesion.shape, dtype=bool)
    frame[8:-8, 8:-8] = True
    plan = {
        # an arc partly around the lesion, plus a few strokes on clear skin
        1: [
            dict(
                core=(dist_out >= 9) & (dist_out <= 12) & frame,
                mode="trace",
                n=1,
                length=(90, 150),
                width=2,
                spread=40,
            ),
            dict(
                core=(dist_out >= 16) & frame, mode="free", n=3, length=(40, 80), width=2, spread=40
            ),
        ],
        2: [dict(core=dist_in >= 7, mode="free", n=3, length=(35, 70), width=2, spread=20)],
    }
    return {"image": img, "truth": truth, "scribbles": draw_scribbles(truth, rng, plan)}


# --------------------------------------------------------------------------- main


def _save(prefix: str, arrays: dict[str, np.ndarray], out_dir: Path) -> None:
    for key, arr in arrays.items():
        path = out_dir / f"{prefix}_{key}.tif"
        rgb = arr.ndim >= 3 and arr.shape[-1] == 3
        tifffile.imwrite(
            path, arr, compression="zlib", photometric="rgb" if rgb else None, metadata=None
        )
        print(f"  {path.name}  {arr.shape} {arr.dtype}  {path.stat().st_size} B")


def _fetch_wheel(tmp: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"nilearn=={NILEARN_VERSION}",
        "-d",
        str(tmp),
    ]
    print("  " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    return next(tmp.glob("nilearn-*.whl"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--nilearn-wheel",
        type=Path,
        help=f"nilearn {NILEARN_VERSION} wheel; downloaded with pip if omitted",
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.nilearn_wheel or _fetch_wheel(Path(tmp))
        print("MRI sample (ICBM152 2009a via nilearn wheel)")
        _save("mri_t1_axial", make_mri(wheel), args.out)
    print(f"RGB sample (synthetic dermoscopy, seed {RGB_SEED})")
    _save("dermoscopy_synthetic", make_rgb(), args.out)


if __name__ == "__main__":
    main()
