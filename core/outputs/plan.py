"""Planning a prediction's outputs: every output path checked before any work starts.

No output may be a file the input reads: plan_outputs checks the paths as given, check_outputs_apart every file
the opened input reads (core.inputs.scene's Scene.files: VRT sources, band files of a folder or SAFE product).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..common.errors import OutputError, UrbanMTLError
from ..common.spec import RASTER_SUFFIXES, STATS_SUFFIX


@dataclass
class OutputPlan:
    """The final paths of one prediction's outputs (None: not requested), and whether existing files may go."""

    hse: Path
    lcz: Path
    confidence: Optional[Path] = None
    stats: Optional[Path] = None
    overwrite: bool = False

    def items(self) -> list[tuple[str, Path]]:
        named = [("hse", self.hse), ("lcz", self.lcz), ("confidence", self.confidence), ("stats", self.stats)]
        return [(k, p) for k, p in named if p is not None]


def plan_outputs(hse_path: str, lcz_path: str, confidence_path: Optional[str] = None,
                 stats_path: Optional[str] = None, *, overwrite: bool = False,
                 inputs: Sequence[str] = ()) -> OutputPlan:
    """Check every output before any work starts; raise UrbanMTLError naming the first problem.

    Checks: a path is given for HSE and LCZ; raster outputs end in .tif/.tiff and the statistics in .csv; no
    two outputs share a path and none is an input; an existing file is only replaced with overwrite=True; the
    folder exists (or can be created) and can be written. `inputs` are the paths as given; once the input is
    open, check_outputs_apart checks against every file it reads (VRT sources, band files of a folder or SAFE).
    """
    if not hse_path or not lcz_path:
        raise UrbanMTLError("Both an HSE output and an LCZ output path are needed (e.g. --hse hse.tif --lcz lcz.tif).")
    plan = OutputPlan(
        hse=Path(hse_path).expanduser(), lcz=Path(lcz_path).expanduser(),
        confidence=Path(confidence_path).expanduser() if confidence_path else None,
        stats=Path(stats_path).expanduser() if stats_path else None,
        overwrite=bool(overwrite),
    )
    seen: dict[Path, str] = {}
    input_paths = {Path(p).expanduser().resolve() for p in inputs}
    for kind, path in plan.items():
        wanted = (STATS_SUFFIX,) if kind == "stats" else RASTER_SUFFIXES
        if path.suffix.lower() not in wanted:
            raise UrbanMTLError(
                f"The {kind} output '{path}' must end in {' or '.join(wanted)}. Choose a file name like "
                f"{'lcz_stats.csv' if kind == 'stats' else kind + '.tif'}."
            )
        resolved = path.resolve()
        if resolved in seen:
            raise UrbanMTLError(f"The {kind} and {seen[resolved]} outputs are the same file '{path}'. Give "
                                f"each output its own name.")
        seen[resolved] = kind
        if resolved in input_paths:
            raise UrbanMTLError(f"The {kind} output '{path}' is the input raster. Write the outputs elsewhere.")
        if path.is_dir():
            raise UrbanMTLError(f"The {kind} output '{path}' is a folder. Give a file name inside it.")
        if path.exists() and not overwrite:
            raise UrbanMTLError(
                f"The {kind} output '{path}' already exists. Choose another name, delete it, or allow "
                f"overwriting (--overwrite)."
            )
        _check_writable_folder(path, kind)
    return plan


def check_outputs_apart(plan: OutputPlan, input_files: Sequence[str]) -> None:
    """Raise OutputError when an output would replace a file the input reads (a VRT's source, a band file of a
    folder or SAFE product, the target of a symbolic link, the same file under another path)."""
    real = {os.path.realpath(p): p for p in input_files}
    ids: dict[tuple[int, int], str] = {}
    for p in input_files:
        try:
            st = os.stat(p)
            ids[(st.st_dev, st.st_ino)] = p
        except OSError:
            pass
    for kind, path in plan.items():
        hit = real.get(os.path.realpath(path))
        if hit is None:
            try:
                st = os.stat(path)
                hit = ids.get((st.st_dev, st.st_ino))
            except OSError:
                pass
        if hit is not None:
            raise OutputError(
                f"The {kind} output '{path}' is '{hit}', a file the input reads. An output may never replace a "
                f"file of the input (nor a source of a VRT, a band file of a folder or SAFE product, or the "
                f"target of a link to one). Write the outputs to other names or another folder."
            )


def _check_writable_folder(path: Path, kind: str) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UrbanMTLError(
            f"The {kind} output '{path}' cannot be created: '{probe}' is a file, not a folder. Choose another "
            f"output folder."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UrbanMTLError(
            f"The folder '{probe}' cannot be written (no permission or read-only), so the {kind} output "
            f"'{path}' cannot be saved. Choose a folder you can write to."
        )
    if probe == folder:
        # os.access trusts permission bits; a read-only mount or a full quota only shows when writing.
        name = folder / f".urbanmtl-probe-{secrets.token_hex(4)}"
        try:
            with open(name, "wb"):
                pass
            os.remove(name)
        except OSError as exc:
            raise UrbanMTLError(
                f"The folder '{folder}' cannot be written ({exc.strerror}), so the {kind} output '{path}' "
                f"cannot be saved. Choose a folder you can write to."
            ) from None
