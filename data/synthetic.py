"""Seeded synthetic stand-in for the GlaS (MICCAI 2015 Gland Segmentation) dataset.

The real GlaS data cannot be shipped with the repository and is slow to work with in unit tests
and benchmarks, so this module writes a small look-alike that exercises exactly the same loading
code paths. It reproduces the dataset *as distributed*, quirks included:

* one flat folder with ``train_i.bmp``, ``testA_i.bmp`` and ``testB_i.bmp`` (24-bit RGB BMP), each
  paired with ``NAME_anno.bmp``, an 8-bit single-channel instance mask (0 = background,
  1..K = gland instances);
* ``Grade.csv`` with bare-CR line endings, no terminator after the last row, a space after every
  comma, the typo ``moderately-to-poorly differentated`` and rows sorted by name as strings;
* mixed image sizes (most images share one size, about one in five is ~0.8x smaller per side,
  like the 522x775 vs ~430x570 images of the real set);
* benign and malignant images in every split prefix.

The images imitate H&E staining: pink textured stroma with scattered nuclei, glands made of a
dark-purple epithelial rim around a pale lumen. Benign glands are regular and well separated,
malignant ones irregular, crowded, partly fused and with a thicker, more cellular epithelium.
Everything is vectorised numpy/scipy so that a default dataset takes a fraction of a second.

Usage: ``python -m data.synthetic --out data/synthetic [--n-train 16] [--seed 0] ...``; with
``--slides N_MASKED`` it writes a ``dataset=folder`` with masks for only some images instead,
the pool that ``active.py suggest`` ranks.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from data.folder import save_png
from data.glas import GRADE_HEADER_LINE

# Reference geometry of the real data: all length scales below are in pixels of a 522x775 image
# and are rescaled so that small test images keep the same tissue layout, just coarser.
_REF_H, _REF_W = 522, 775
_SMALL_FACTOR = 0.8

_SUBGRADES = {
    "benign": ("healthy", "adenomatous"),
    # "differentated" is a typo in the official Grade.csv; kept so parsers are tested against it.
    "malignant": (
        "moderately differentiated",
        "moderately-to-poorly differentated",
        "poorly differentiated",
    ),
}

# Approximate H&E colours (RGB in [0, 1]).
_STROMA = np.array([0.90, 0.64, 0.80], dtype=np.float32)
_EPITHELIUM = np.array([0.74, 0.52, 0.76], dtype=np.float32)
_LUMEN = np.array([0.97, 0.94, 0.96], dtype=np.float32)
_NUCLEUS = np.array([0.30, 0.17, 0.50], dtype=np.float32)


def _split_grades(n: int, min_each: int, rng: np.random.Generator) -> list[str]:
    """About half malignant, but at least ``min_each`` of each class whenever ``n`` allows it."""
    n_mal = n // 2 + int(n % 2 == 1 and rng.random() < 0.5)
    lo = min(min_each, n // 2)
    n_mal = int(np.clip(n_mal, lo, n - lo))
    grades = ["malignant"] * n_mal + ["benign"] * (n - n_mal)
    rng.shuffle(grades)
    return grades


def _gland_candidate(
    rng: np.random.Generator,
    labels: np.ndarray,
    scale: float,
    malignant: bool,
    gap: float,
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, float] | None:
    """Sample one star-shaped gland; return its bbox, mask, halo mask and radius (px).

    Returns None early when the centre lands on an existing gland, which rejects most doomed
    candidates before any per-pixel work.
    """
    h, w = labels.shape
    if malignant:
        r = rng.uniform(28.0, 95.0) * scale
        elong = rng.uniform(1.0, 1.9)
        n_harm, amp = 6, rng.uniform(0.06, 0.16)
    else:
        r = rng.uniform(40.0, 95.0) * scale
        elong = rng.uniform(1.0, 1.45)
        n_harm, amp = 3, 0.03
    r = max(r, 3.0)
    # Centres may fall slightly outside the frame: real tiles cut glands at the border.
    cy = rng.uniform(-0.3 * r, h + 0.3 * r)
    cx = rng.uniform(-0.3 * r, w + 0.3 * r)
    iy, ix = min(max(int(cy), 0), h - 1), min(max(int(cx), 0), w - 1)
    if labels[iy, ix]:
        return None
    theta = rng.uniform(0.0, math.pi)
    k = np.arange(2, 2 + n_harm)
    amps = amp * rng.standard_normal(n_harm) / np.sqrt(k - 1)
    phases = rng.uniform(0.0, 2 * math.pi, n_harm)

    ext = r * elong * (1.0 + np.abs(amps).sum()) + gap + 1.0
    y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 1, h)
    x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return None
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    u = (dx * c + dy * s) / np.float32(r * elong)
    v = (dy * c - dx * s) / np.float32(r / elong)
    rho = np.hypot(u, v)
    # Radius wobble sum_k a_k cos(k phi + p_k) = Re(sum_k a_k e^{i p_k} z^k), z = e^{i phi}:
    # powers of z are cheaper than arctan2 plus one cos per harmonic.
    z = (u + 1j * v) / np.maximum(rho, 1e-6)
    zk = z * z
    wobble = np.zeros(rho.shape, dtype=np.complex64)
    for a_k, p_k in zip(amps, phases, strict=True):
        wobble += np.complex64(a_k * np.exp(1j * p_k)) * zk
        zk = zk * z
    norm = rho / np.maximum(1.0 + wobble.real, 0.35)
    inside = norm <= 1.0
    halo = norm <= 1.0 + gap / r
    return (slice(y0, y1), slice(x0, x1)), inside, halo, r


def _place_glands(
    rng: np.random.Generator, shape: tuple[int, int], scale: float, malignant: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection-sample glands until a target foreground fraction; return labels, rim widths."""
    h, w = shape
    labels = np.zeros(shape, dtype=np.uint8)
    rim_widths = [0.0]
    target = rng.uniform(0.38, 0.55) if malignant else rng.uniform(0.32, 0.48)
    fg = 0
    for _ in range(400):
        if fg >= target * h * w or len(rim_widths) > 255:
            break
        # Benign glands keep a stroma gap; malignant ones may touch and fuse.
        touching = malignant and rng.random() < 0.5
        gap = 0.0 if touching else (4.0 if malignant else rng.uniform(8.0, 20.0)) * scale
        cand = _gland_candidate(rng, labels, scale, malignant, gap)
        if cand is None:
            continue
        box, inside, halo, r = cand
        sub = labels[box]
        taken = sub > 0
        if touching:
            if (inside & taken).sum() > 0.3 * inside.sum():
                continue
        elif (halo & taken).any():
            continue
        new = inside & ~taken
        if new.sum() < max(0.25 * math.pi * r * r, 12.0):
            continue
        comp, n_comp = ndimage.label(new)
        if n_comp > 1:
            # Keep instances connected: a gland split by a neighbour keeps its largest piece.
            sizes = np.bincount(comp.ravel())[1:]
            new = comp == (int(np.argmax(sizes)) + 1)
        sub[new] = len(rim_widths)
        fg += int(new.sum())
        # Malignant epithelium is stratified, hence thicker; always leave room for some lumen.
        rim = (rng.uniform(26.0, 38.0) if malignant else rng.uniform(18.0, 26.0)) * scale
        rim_widths.append(max(min(rim, 0.6 * r), 1.5))
    return labels, np.asarray(rim_widths, dtype=np.float32)


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> np.ndarray:
    """Unit-variance Gaussian random field with correlation length ``sigma`` (px)."""
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (2,))
    # Large kernels are slow: draw the field on a coarse grid and upsample, which is equivalent
    # for a smooth field.
    f = max(1, int(sig.min() / 3.0))
    coarse = tuple(-(-n // f) + 2 for n in shape)
    n = ndimage.gaussian_filter(
        rng.standard_normal(coarse, dtype=np.float32), tuple(sig / f), mode="wrap"
    )
    if f > 1:
        n = ndimage.zoom(n, f, order=1, prefilter=False)
    n = n[: shape[0], : shape[1]]
    return n / (n.std() + 1e-8)


def _nuclei(
    rng: np.random.Generator,
    density: np.ndarray,
    sigma: float | tuple[float, float],
    gain: float = 2.5,
) -> np.ndarray:
    """Opacity map of blob nuclei dropped as a Bernoulli field and blurred to disc size."""
    hit = rng.random(density.shape, dtype=np.float32) < density
    seeds = hit * rng.uniform(0.7, 1.2, density.shape).astype(np.float32)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (2,))
    blobs = ndimage.gaussian_filter(seeds, tuple(sig)) * np.float32(2 * math.pi * sig.prod() * gain)
    return np.clip(blobs, 0.0, 1.0)


def _blend(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return img * (1.0 - a) + colour * a


def _render(
    rng: np.random.Generator,
    labels: np.ndarray,
    rim_widths: np.ndarray,
    scale: float,
    malignant: bool,
) -> np.ndarray:
    h, w = labels.shape
    fg = labels > 0
    # Gland boundary = pixel whose 4-neighbour has another label; the edge padding means glands
    # cut by the frame get no epithelium along the cut, as in a real tile.
    pad = np.pad(labels, 1, mode="edge")
    centre = pad[1:-1, 1:-1]
    differs = (
        (pad[:-2, 1:-1] != centre)
        | (pad[2:, 1:-1] != centre)
        | (pad[1:-1, :-2] != centre)
        | (pad[1:-1, 2:] != centre)
    )
    boundary = fg & differs
    if boundary.any():
        dist = ndimage.distance_transform_edt(~boundary).astype(np.float32)
    else:
        dist = np.full(labels.shape, np.inf, dtype=np.float32)
    # Depth into the epithelium in units of its local thickness, with a ragged luminal edge.
    depth = dist / np.maximum(rim_widths[labels], 1e-6)
    depth += 0.15 * _smooth_noise(rng, labels.shape, max(1.0, 4.0 * scale))
    epi = fg & (depth < 1.0)
    lumen = fg & ~epi
    soft = max(0.5, 1.0 * scale)
    epi_a = ndimage.gaussian_filter(epi.astype(np.float32), soft)
    lumen_a = ndimage.gaussian_filter(lumen.astype(np.float32), soft)

    # Stroma: collagen fibres (anisotropic noise along a random axis) plus loose, paler areas.
    vertical = rng.random() < 0.5
    fib_sigma = (1.0 * scale + 0.5, 3.0 * scale + 0.5)
    fib_sigma = fib_sigma[::-1] if vertical else fib_sigma
    fibres = _smooth_noise(rng, (h, w), fib_sigma) + 0.6 * _smooth_noise(rng, (h, w), 1.5 * scale)
    loose = _smooth_noise(rng, (h, w), 25.0 * scale + 1.0)
    img = _STROMA * (1.0 + 0.035 * fibres[..., None])
    img = _blend(img, _LUMEN, np.clip(loose - 0.7, 0.0, 1.0) * 0.45)

    epi_col = _EPITHELIUM - (0.05 if malignant else 0.0)
    texture = 1.0 + 0.05 * _smooth_noise(rng, (h, w), max(0.7, 2.0 * scale))[..., None]
    img = img * (1.0 - epi_a[..., None]) + epi_col * texture * epi_a[..., None]
    lum_col = _LUMEN - 0.03 * np.abs(_smooth_noise(rng, (h, w), 3.0 * scale + 0.5))[..., None]
    if malignant:
        # Necrotic debris: pink specks inside malignant lumens.
        debris = np.clip(_smooth_noise(rng, (h, w), 2.0 * scale + 0.5) - 1.2, 0.0, 1.0)
        lum_col = _blend(lum_col, _STROMA, debris)
    img = img * (1.0 - lumen_a[..., None]) + lum_col * lumen_a[..., None]

    # Nuclei: densities are coverage fractions divided by nucleus area, so the look does not
    # depend on resolution. Benign epithelium is a palisade of basal nuclei under mucin-filled
    # goblet cells; malignant epithelium is crowded with larger nuclei throughout.
    sig = max(0.6, 2.6 * scale)
    disc = math.pi * (1.5 * sig) ** 2
    if malignant:
        epi_cov = np.where(epi, np.float32(0.6), np.float32(0.0))
        sig_epi = sig * 1.25
    else:
        goblet_cov = np.where(epi & (depth > 0.45), np.float32(0.35), np.float32(0.0))
        goblets = _nuclei(rng, goblet_cov / (4.0 * disc), 2.0 * sig, gain=1.5)
        img = _blend(img, _LUMEN, 0.8 * goblets)
        epi_cov = np.where(epi & (depth < 0.5), np.float32(1.1), np.float32(0.0))
        sig_epi = sig * 0.9
    nuc = _nuclei(rng, epi_cov / np.float32(math.pi * (1.5 * sig_epi) ** 2), sig_epi)
    # Stromal fibroblasts are spindle-shaped along the fibres; lymphocytes are small and round.
    spindle = (max(0.6, 1.3 * sig), max(0.5, 0.65 * sig))
    spindle = spindle if vertical else spindle[::-1]
    stroma_cov = np.where(fg, np.float32(0.0), np.float32(0.05 if malignant else 0.035))
    nuc = np.maximum(nuc, _nuclei(rng, stroma_cov / disc, spindle))
    nuc = np.maximum(nuc, _nuclei(rng, stroma_cov / disc * 0.5, 0.8 * sig))
    nuc_col = _NUCLEUS * (1.0 + 0.12 * _smooth_noise(rng, (h, w), 2.0 * scale + 0.5))[..., None]
    img = _blend(img, nuc_col, 0.92 * nuc)

    # Per-slide stain variation acts on optical density so that white stays white; then sensor
    # noise and slight optical blur.
    od = -np.log(np.clip(img, 1e-3, 1.0))
    od *= (1.0 + 0.06 * rng.standard_normal(3)).astype(np.float32)
    img = np.exp(-od) + 0.015 * rng.standard_normal(img.shape, dtype=np.float32)
    img = ndimage.gaussian_filter(img, (0.5, 0.5, 0))
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _make_image(
    rng: np.random.Generator, shape: tuple[int, int], malignant: bool
) -> tuple[np.ndarray, np.ndarray]:
    scale = math.sqrt(shape[0] * shape[1] / (_REF_H * _REF_W))
    labels, rim_widths = _place_glands(rng, shape, scale, malignant)
    return _render(rng, labels, rim_widths, scale, malignant), labels


def rare_stain(rgb: np.ndarray) -> np.ndarray:
    """The rare tissue style: an under-stained, faded slide (30 % of the stain left, blended
    towards a pale grey), as happens with short staining times or old sections.

    Colour jitter does not bridge a contrast loss this large, so a model that has never seen
    such an image segments it badly and is unsure where; one labelled example teaches it the
    style.
    """
    return (0.3 * rgb.astype(np.float32) + 0.7 * 200.0).astype(np.uint8)


def _rare_plan(plan: list[tuple[str, str]], fraction: float, seed: int) -> set[str]:
    """Names in the rare style: ``fraction`` of train images (at least one), half of the test.

    Drawn from their own generator so that ``fraction=0`` leaves every other draw unchanged.
    """
    if fraction <= 0:
        return set()
    rng = np.random.default_rng([seed, 2017])
    train = [name for name, _ in plan if name.startswith("train_")]
    test = [name for name, _ in plan if not name.startswith("train_")]
    n_train = min(len(train), max(1, round(fraction * len(train))))
    chosen = rng.choice(len(train), size=n_train, replace=False) if train else []
    rare = {train[i] for i in chosen}
    if test:
        rare |= {test[i] for i in rng.choice(len(test), size=len(test) // 2, replace=False)}
    return rare


def generate_synthetic_glas(
    out_dir: str | Path,
    *,
    n_train: int = 16,
    n_test_a: int = 6,
    n_test_b: int = 4,
    height: int = 96,
    width: int = 128,
    seed: int = 0,
    rare_fraction: float = 0.0,
) -> Path:
    """Write a synthetic GlaS-layout dataset into ``out_dir`` and return it as a Path.

    Creates ``{train,testA,testB}_i.bmp`` + ``_anno.bmp`` pairs and ``Grade.csv`` (see the module
    docstring for the format). ``height``/``width`` is the common image size; about one image in
    five gets the smaller variant (0.8x per side). The same ``seed`` gives byte-identical files.
    ``rare_fraction`` > 0 renders that share of the train images, and half of the test images,
    in a rare style (``rare_stain``); ``rare.txt`` lists them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    splits = (("train", n_train, 2), ("testA", n_test_a, 1), ("testB", n_test_b, 1))
    plan: list[tuple[str, str]] = []
    for prefix, n, min_each in splits:
        grades = _split_grades(n, min_each, rng)
        plan += [(f"{prefix}_{i + 1}", g) for i, g in enumerate(grades)]

    n_total = len(plan)
    small = np.zeros(n_total, dtype=bool)
    if n_total:
        small[rng.choice(n_total, size=max(1, round(n_total / 5)), replace=False)] = True
    small_hw = (max(8, round(height * _SMALL_FACTOR)), max(8, round(width * _SMALL_FACTOR)))

    # Patients have a single (sub)grade, like the real cohort; IDs are disjoint small ints.
    n_pat = {g: max(1, math.ceil(sum(p[1] == g for p in plan) / 4)) for g in _SUBGRADES}
    ids = rng.permutation(np.arange(1, sum(n_pat.values()) + 1)).tolist()
    patients: dict[str, list[tuple[int, str]]] = {}
    for g, k in n_pat.items():
        subs, first = _SUBGRADES[g], int(rng.integers(len(_SUBGRADES[g])))
        patients[g] = [(ids.pop(), subs[(first + j) % len(subs)]) for j in range(k)]

    # One independent stream per image keeps images stable if generation order ever changes.
    image_seeds = rng.integers(0, 2**63, size=n_total)
    rare = _rare_plan(plan, rare_fraction, seed)
    rows = []
    for (name, grade), is_small, img_seed in zip(plan, small, image_seeds, strict=True):
        img_rng = np.random.default_rng(int(img_seed))
        hw = small_hw if is_small else (height, width)
        rgb, labels = _make_image(img_rng, hw, grade == "malignant")
        if name in rare:
            rgb = rare_stain(rgb)
        Image.fromarray(rgb).save(out / f"{name}.bmp", format="BMP")
        Image.fromarray(labels).save(out / f"{name}_anno.bmp", format="BMP")
        pid, sub = patients[grade][int(img_rng.integers(len(patients[grade])))]
        rows.append((name, f"{name},{pid}, {grade}, {sub}"))

    rows.sort()
    # Bare CR separators and no trailing terminator, exactly like the official file.
    csv = "\r".join([GRADE_HEADER_LINE] + [r for _, r in rows])
    (out / "Grade.csv").write_bytes(csv.encode("ascii"))
    if rare:
        (out / "rare.txt").write_text("".join(f"{name}\n" for name in sorted(rare)))
    return out


def write_slides_folder(
    out_dir: str | Path,
    n_images: int,
    n_masked: int,
    height: int = 96,
    width: int = 128,
    seed: int = 0,
) -> Path:
    """A ``dataset=folder`` for ``active.py suggest``: ``n_images`` synthetic train images in
    ``images/``, gland masks (0/1) in ``masks/`` for the first ``n_masked`` of them only, and
    their grades as ``groups.csv``; the rest is the pool that suggest ranks."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as glas:
        generate_synthetic_glas(
            glas, n_train=n_images, n_test_a=0, n_test_b=0, height=height, width=width, seed=seed
        )
        grades = {
            line.split(",")[0]: line.split(",")[2].strip()
            for line in (Path(glas) / "Grade.csv").read_text().splitlines()[1:]
        }
        names = sorted(grades, key=lambda n: int(n.split("_")[1]))
        for i, name in enumerate(names):
            save_png(out / "images" / f"{name}.png", np.asarray(Image.open(f"{glas}/{name}.bmp")))
            if i < n_masked:
                labels = np.asarray(Image.open(f"{glas}/{name}_anno.bmp"))
                save_png(out / "masks" / f"{name}.png", (labels > 0).astype(np.uint8))
    rows = "".join(f"{name},{grades[name]}\n" for name in names)
    (out / "groups.csv").write_text("image,group\n" + rows)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Generate a synthetic GlaS-layout dataset.")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--n-train", type=int, default=16)
    p.add_argument("--n-test-a", type=int, default=6)
    p.add_argument("--n-test-b", type=int, default=4)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rare-fraction", type=float, default=0.0, help="share in the rare style")
    p.add_argument(
        "--slides",
        type=int,
        metavar="N_MASKED",
        help="write instead a dataset=folder of the --n-train images, masks for N_MASKED of them",
    )
    a = p.parse_args(argv)
    if a.slides is not None:
        out = write_slides_folder(a.out, a.n_train, a.slides, a.height, a.width, a.seed)
        print(f"wrote {a.n_train} images, {a.slides} with masks, to {out}")
        return
    out = generate_synthetic_glas(
        a.out,
        n_train=a.n_train,
        n_test_a=a.n_test_a,
        n_test_b=a.n_test_b,
        height=a.height,
        width=a.width,
        seed=a.seed,
        rare_fraction=a.rare_fraction,
    )
    n = a.n_train + a.n_test_a + a.n_test_b
    print(
        f"wrote {n} images + masks ({a.n_train} train, {a.n_test_a} testA, {a.n_test_b} testB, "
        f"{a.height}x{a.width} HxW, seed {a.seed}) and Grade.csv to {out}"
    )


if __name__ == "__main__":
    main()
