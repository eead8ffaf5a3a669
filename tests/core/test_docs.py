"""The documents a new maintainer reads: the README is a user guide (at most 15 KB, the install and QGIS mapping steps
in its first 60 lines, nothing about ../shared, which users do not have), and the README or docs/architecture.md
names every module of core/ and ui/."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
USER_PAGES = ("cli.md", "finetuning.md", "tiling.md", "dask.md", "failures.md", "benchmarks.md")


def test_the_readme_is_a_short_user_guide_with_install_and_mapping_first():
    assert len(README.encode("utf-8")) <= 15_000
    first = "\n".join(README.splitlines()[:60])
    for needed in ("## Install", "Install from ZIP", "Install engine", "Windows", "macOS", "make demo", "make test",
                   "## Map a scene in QGIS", "Map settlement density and local climate zones"):
        assert needed in first, needed


def test_nothing_for_users_mentions_the_shared_folder():
    for text in [README] + [(REPO / "docs" / page).read_text(encoding="utf-8") for page in USER_PAGES]:
        assert "../shared" not in text and "shared/data" not in text


def test_every_module_of_core_and_ui_is_named():
    text = README + (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(p for p in [*REPO.glob("core/**/*.py"), *REPO.glob("ui/**/*.py")] if p.name != "__init__.py")
    unnamed = []
    for path in modules:
        relative = path.relative_to(REPO).as_posix()
        inside_core = path.relative_to(REPO / "core").as_posix() if relative.startswith("core/") else None
        if not any(f"`{name}`" in text for name in (relative, inside_core) if name):
            unnamed.append(relative)
    assert unnamed == []
