"""Recognise a dataset folder's layout and list its samples (file paths, sizes, bands, classes).

Layouts, tried in this order in DIR (or, for a split, in DIR/<split>):

- generic: `opt/`, `sar/`, `label/`; classes from `classes.json` at the dataset root (see `load_classes_json`),
  else label value k = class k for the values found in the labels.
- WHU-OPT-SAR as distributed: `optical/`, `sar/` and `lab/`, `lbl/` or `label/`.
- Hunan as distributed: `s2/`, `s1/`, `lc/`, files named `s2_<id>.tif`, `s1_<id>.tif`, `lc_<id>.tif`.
- stacked tiles as the MambaDiffusion authors made them: `cat/` or `cat1/` + `label/`, `lbl/` or `lab/`, one
  multi-band file per sample; also `cat/<split>/` + `label/<split>/`. 5 bands are read as WHU (4 + 1), 15 as
  Hunan (13 + 2); other counts need the optical / SAR band lists.

Splits: a folder per split (`DIR/train/…`), or a text file of sample names, one per line (`DIR/<split>.txt`, or
the path of any text file). Without a split: all files when DIR itself holds a layout, else `train`. A dataset
without splits (WHU-OPT-SAR and Hunan as distributed) gets one drawn by `mdseg train` (see `mdseg.data.splits`),
written as list files into its run folder.
A `classes.json` at the dataset root overrides the known datasets' classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import rasterio

from mdseg.data import catalog
from mdseg.data.classes import ClassScheme, identity_scheme, load_classes_json
from mdseg.data.normalise import Normalisation
from mdseg.data.pairing import pair_files, prefix_key, raster_files, stem_key
from mdseg.errors import DatasetError, DatasetLayoutError
from mdseg.geo.pair import select_bands
from mdseg.io.raster import distinct_values, open_raster

CLASSES_FILE = "classes.json"

# kind → {role: candidate folder names}; roles "opt", "sar", "label" (stacked: "image", "label").
_LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "generic": {"opt": ("opt",), "sar": ("sar",), "label": ("label",)},
    "whu-opt-sar": {"opt": ("optical",), "sar": ("sar",), "label": ("lab", "lbl", "label")},
    "hunan": {"opt": ("s2",), "sar": ("s1",), "label": ("lc",)},
    "stacked": {"image": ("cat", "cat1"), "label": ("label", "lbl", "lab")},
}
_STACKED_DEFAULTS = {  # band count → (optical bands, SAR bands) of the authors' tiles, 1-based
    5: ((1, 2, 3, 4), (5,)),
    15: (tuple(range(1, 14)), (14, 15)),
}


@dataclass(frozen=True)
class SampleFiles:
    """One sample: its name, the optical, SAR and label files (the same file for opt and SAR when stacked), and
    its size in pixels."""

    name: str
    opt: Path
    sar: Path
    label: Path
    height: int
    width: int


@dataclass(frozen=True)
class DatasetLayout:
    """A recognised dataset split: where its files are and how to read them.

    `opt_bands` / `sar_bands`: 1-based bands read from the optical / SAR files. `normalisation`: the dataset's
    published constants when it has them and the default bands are read, else None (compute with `band_stats`).
    """

    kind: str
    root: Path
    split: str | None
    samples: tuple[SampleFiles, ...]
    opt_bands: tuple[int, ...]
    sar_bands: tuple[int, ...]
    opt_band_names: tuple[str, ...]
    sar_band_names: tuple[str, ...]
    classes: ClassScheme
    normalisation: Normalisation | None

    def subset(self, names: Sequence[str], split: str) -> DatasetLayout:
        """This layout restricted to the samples `names` (in that order), called `split`; `DatasetError` for a
        name it does not hold."""
        by_name = {s.name: s for s in self.samples}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
            raise DatasetError(f"split '{split}' lists {len(unknown)} sample(s) '{self.root}' does not hold: {shown}.")
        return replace(self, split=split, samples=tuple(by_name[n] for n in dict.fromkeys(names)))

    def provenance(self) -> dict:
        """JSON-ready facts about where the data came from."""
        return {
            "root": str(self.root),
            "layout": self.kind,
            "split": self.split,
            "files": len(self.samples),
            "opt_bands": list(self.opt_bands),
            "sar_bands": list(self.sar_bands),
        }


def find_dataset(
    root: str | Path,
    split: str | None = None,
    *,
    opt_bands: Sequence[int] | None = None,
    sar_bands: Sequence[int] | None = None,
) -> DatasetLayout:
    """Recognise the layout of `root` and list the samples of `split` (see the module docstring).

    `opt_bands` / `sar_bands`: 1-based bands to read (None: the layout's default, all bands for separate files).
    Raises `DatasetLayoutError` naming what is missing when no layout fits, and `DatasetError` for an unknown
    split or files that do not fit together.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder '{root}' does not exist or is not a folder.")
    kind, folders, names, split = _locate(root, split)
    key = prefix_key if kind == "hunan" else stem_key
    pairs = pair_files(folders, key)
    if names is not None:
        pairs = _select(pairs, names, split)
    if kind == "stacked":
        pairs = [(n, {"opt": p["image"], "sar": p["image"], "label": p["label"]}) for n, p in pairs]
    opt_sel, sar_sel = _published(kind, pairs[0][1]["opt"], opt_bands, sar_bands)
    samples, (opt_sel, sar_sel), (opt_names, sar_names) = _scan(pairs, opt_sel, sar_sel, kind)
    known = _known(kind, len(opt_names) + len(sar_names) if kind == "stacked" else None)
    # the published band names and normalisation describe the published bands only: a folder of that layout
    # with other band counts keeps its files' band names and computes its normalisation
    published = (
        opt_bands is None
        and sar_bands is None
        and known is not None
        and (len(opt_names), len(sar_names)) == (len(known[1]), len(known[2]))
    )
    classes_file = root / CLASSES_FILE
    if classes_file.is_file():
        classes = load_classes_json(classes_file)
    elif known is not None:
        classes = known[0]
    else:  # reads every label: only for datasets that do not name their classes
        classes = identity_scheme(set().union(*(distinct_values(s.label, "Label") for s in samples)))
    if published:
        opt_names, sar_names = known[1], known[2]
    return DatasetLayout(
        kind=kind,
        root=root,
        split=split,
        samples=tuple(samples),
        opt_bands=tuple(opt_sel),
        sar_bands=tuple(sar_sel),
        opt_band_names=tuple(opt_names),
        sar_band_names=tuple(sar_names),
        classes=classes,
        normalisation=known[3] if published else None,
    )


def _fit(folder: Path, kind: str) -> dict[str, Path] | None:
    """{role: folder} when `folder` holds every folder layout `kind` needs, else None."""
    found = {}
    for role, candidates in _LAYOUTS[kind].items():
        hit = next((folder / c for c in candidates if (folder / c).is_dir()), None)
        if hit is None:
            return None
        found[role] = hit
    return found


def _fit_any(folder: Path) -> tuple[str, dict[str, Path]] | None:
    for kind in _LAYOUTS:
        found = _fit(folder, kind)
        if found is not None:
            if kind == "stacked" and not raster_files(found["image"]):
                continue  # `cat/` holding split folders: the authors' form, handled by `_locate`
            return kind, found
    return None


def _locate(root: Path, split: str | None) -> tuple[str, dict[str, Path], list[str] | None, str | None]:
    """(layout kind, {role: folder}, sample names of a list-file split or None, split name)."""
    here = _fit_any(root)
    if split is None:
        if here is not None:
            return here[0], here[1], None, None
        split = "train"  # a dataset of split folders: its training split
    if (root / split).is_dir():
        sub = _fit_any(root / split)
        if sub is None:
            raise DatasetLayoutError(_no_layout_message(root / split))
        return sub[0], sub[1], None, split
    stacked = _stacked_split(root, split)
    if stacked is not None:
        return "stacked", stacked, None, split
    if here is None:
        raise DatasetLayoutError(_no_layout_message(root))
    candidates = [Path(split), root / split, root / f"{split}.txt"]
    list_file = next((p for p in candidates if p.is_file()), None)
    if list_file is None:
        hint = ""
        if split in ("train", "val", "test") and not any((root / f"{n}.txt").is_file() for n in ("train", "val")):
            hint = (
                f"; it has no splits of its own: `mdseg train --data {root.name}` draws one into its run folder, and "
                f"that run's list (runs/NAME/splits/{split}.txt) can be given as the split"
            )
        raise DatasetError(
            f"dataset '{root}' has no split '{split}': looked for the folder '{root / split}', the folders "
            f"'cat/{split}' + 'label/{split}', and a list of sample names in '{root / (split + '.txt')}'{hint}."
        )
    return here[0], here[1], read_list_file(list_file), split


def _stacked_split(root: Path, split: str) -> dict[str, Path] | None:
    """{image, label} folders of the authors' form `cat/<split>/` + `label/<split>/`, when present."""
    found = _fit(root, "stacked")
    if found is None or not (found["image"] / split).is_dir() or not (found["label"] / split).is_dir():
        return None
    return {role: folder / split for role, folder in found.items()}


def _no_layout_message(folder: Path) -> str:
    """Say which layout `folder` comes closest to and what it lacks, or list every expected layout."""
    best, best_present, best_missing = None, 0, []
    for kind, roles in _LAYOUTS.items():
        present = [r for r, cs in roles.items() if any((folder / c).is_dir() for c in cs)]
        if len(present) > best_present:
            missing = ["' or '".join(f"{c}/" for c in cs) for r, cs in roles.items() if r not in present]
            best, best_present, best_missing = kind, len(present), missing
    expected = (
        "opt/ sar/ label/ (generic); optical/ sar/ lab|lbl|label/ (WHU-OPT-SAR); s2/ s1/ lc/ (Hunan); "
        "cat|cat1/ label|lbl/ (stacked tiles); or one of these inside train/, val/, test/"
    )
    if best is not None and best_missing:
        return (
            f"dataset folder '{folder}' looks like the {best} layout but lacks the folder '"
            + "', '".join(best_missing)
            + f"'; expected {expected}."
        )
    return f"dataset folder '{folder}' fits no known layout; expected {expected}."


def read_list_file(path: Path) -> list[str]:
    """Sample names listed in a split file, one per line (extensions dropped, blank lines and # comments skipped)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(Path(line).stem)
    return names


def _select(pairs: list, names: list[str], split: str | None) -> list:
    """The pairs named in a split list; `DatasetError` listing names that have no files."""
    by_name = dict(pairs)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise DatasetError(f"split '{split}' lists {len(unknown)} sample(s) with no files: {shown}.")
    return [(n, by_name[n]) for n in dict.fromkeys(names)]


def _published(
    kind: str, first: Path, opt_bands: Sequence[int] | None, sar_bands: Sequence[int] | None
) -> tuple[list[int] | None, list[int] | None]:
    """Bands to read; for stacked tiles the optical / SAR split of the bands of one file."""
    if kind != "stacked":
        return (list(opt_bands) if opt_bands else None), (list(sar_bands) if sar_bands else None)
    with open_raster(first, "Stacked") as src:
        count = src.count
    if opt_bands is None and sar_bands is None:
        if count not in _STACKED_DEFAULTS:
            raise DatasetError(
                f"stacked tile '{first}' has {count} bands; say which are optical and which SAR with the optical / "
                "SAR band lists (5-band WHU and 15-band Hunan tiles are recognised)."
            )
        opt, sar = _STACKED_DEFAULTS[count]
        return list(opt), list(sar)
    everything = list(range(1, count + 1))
    opt = list(opt_bands) if opt_bands else [b for b in everything if b not in set(sar_bands or ())]
    sar = list(sar_bands) if sar_bands else [b for b in everything if b not in set(opt)]
    return opt, sar


def _scan(
    pairs: list, opt_sel: list[int] | None, sar_sel: list[int] | None, kind: str
) -> tuple[list[SampleFiles], tuple[list[int], list[int]], tuple[list[str], list[str]]]:
    """Open every sample's headers: sizes agree across its files and the bands exist in each.
    Returns the samples, the bands read (all where None was given) and their names."""
    samples: list[SampleFiles] = []
    names: tuple[list[str], list[str]] = ([], [])
    chosen: tuple[list[int], list[int]] = ([], [])
    for index, (name, files) in enumerate(pairs):
        with (
            open_raster(files["opt"], "Optical") as opt,
            open_raster(files["sar"], "SAR") as sar,
            open_raster(files["label"], "Label") as lab,
        ):
            opt_b = select_bands(opt, opt_sel, "Optical", None)
            sar_b = select_bands(sar, sar_sel, "SAR", None)
            if index > 0 and (len(opt_b), len(sar_b)) != (len(chosen[0]), len(chosen[1])):
                raise DatasetError(
                    f"sample '{name}' has {len(opt_b)} optical and {len(sar_b)} SAR band(s) but '{pairs[0][0]}' has "
                    f"{len(chosen[0])} and {len(chosen[1])}; every sample of a dataset needs the same bands (or choose "
                    "them with the optical / SAR band lists)."
                )
            shapes = {(s.height, s.width) for s in (opt, sar, lab)}
            if len(shapes) != 1:
                raise DatasetError(
                    f"sample '{name}' has rasters of different sizes (optical {opt.width}x{opt.height}, SAR "
                    f"{sar.width}x{sar.height}, label {lab.width}x{lab.height}); the dataset's files must be "
                    "co-registered tiles of one size each."
                )
            if index == 0:
                chosen = (opt_b, sar_b)
                names = (_band_names(opt, opt_b, "optical"), _band_names(sar, sar_b, "SAR"))
            samples.append(SampleFiles(name, files["opt"], files["sar"], files["label"], opt.height, opt.width))
    if kind == "stacked" and not names[1]:
        raise DatasetError("stacked tiles need at least one SAR band; give the SAR band list.")
    return samples, chosen, names


def _band_names(src: rasterio.DatasetReader, bands: list[int], role: str) -> list[str]:
    """The file's band descriptions where set, else "<role> <band number>"."""
    return [src.descriptions[b - 1] or f"{role} {b}" for b in bands]


def _known(kind: str, stacked_bands: int | None) -> tuple | None:
    """(classes, optical band names, SAR band names, normalisation) of a published dataset, else None."""
    whu = (catalog.WHU_SCHEME, catalog.WHU_OPT_BANDS, catalog.WHU_SAR_BANDS, catalog.WHU_NORMALISATION)
    if kind == "whu-opt-sar" or (kind == "stacked" and stacked_bands == 5):
        return whu
    hunan = (catalog.HUNAN_OPT_BANDS, catalog.HUNAN_SAR_BANDS, catalog.HUNAN_NORMALISATION)
    if kind == "hunan":
        return (catalog.HUNAN_RAW_SCHEME, *hunan)
    if kind == "stacked" and stacked_bands == 15:
        return (catalog.HUNAN_STACKED_SCHEME, *hunan)
    return None
