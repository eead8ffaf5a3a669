"""Installing the engine for QGIS's own Python (ui.install, ui.engine_python): QGIS's Python found on fake Windows
(OSGeo4W and the standalone installer), macOS and Linux layouts; what pip is asked for; its failures as one sentence
each; the download size; the folder swapped only when the new engine imports, the previous one kept otherwise."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis


def touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return str(path)


# --- QGIS's own Python, per platform ---


def test_osgeo4w_and_the_standalone_installer_give_apps_python_with_its_home(plugin_dir, tmp_path):
    from urbanmtl.ui.engine_python import windows_python

    for root in (tmp_path / "OSGeo4W", tmp_path / "Program Files" / "QGIS 3.22.16"):
        qgis = touch(root / "bin" / "qgis-ltr-bin.exe")
        python = touch(root / "apps" / "Python39" / "python.exe")
        touch(root / "apps" / "Python37" / "python.exe")                 # an older one left behind
        found = windows_python(qgis, str(root / "apps" / "Python39"))
        assert found.path == python and found.env == {"PYTHONHOME": str(root / "apps" / "Python39")}
        # sys.prefix not telling (embedded elsewhere): the newest apps/Python3* is taken
        found = windows_python(qgis, "")
        assert found.path == python and found.env["PYTHONHOME"] == str(root / "apps" / "Python39")
    bare = tmp_path / "bare"
    qgis = touch(bare / "bin" / "qgis-bin.exe")
    python = touch(bare / "bin" / "python3.exe")
    assert windows_python(qgis, str(bare / "apps" / "Python312")).path == python
    assert windows_python(touch(tmp_path / "nothing" / "bin" / "qgis-bin.exe"), "") is None


def test_the_macos_bundle_gives_its_own_python(plugin_dir, tmp_path):
    from urbanmtl.ui.engine_python import macos_python

    app = tmp_path / "QGIS-LTR.app" / "Contents"
    qgis = touch(app / "MacOS" / "QGIS")
    python = touch(app / "MacOS" / "bin" / "python3")
    assert macos_python(qgis, str(app / "Frameworks" / "Python.framework" / "Versions" / "3.9")).path == python
    other = tmp_path / "Other.app" / "Contents"
    framework = other / "Frameworks" / "Python.framework" / "Versions" / "3.11"
    python = touch(framework / "bin" / "python3")
    found = macos_python(touch(other / "MacOS" / "QGIS"), str(framework))
    assert found.path == python and found.env == {}


def test_linux_takes_the_prefix_python_then_usr_bin(plugin_dir, tmp_path):
    from urbanmtl.ui.engine_python import linux_python, qgis_python

    conda = tmp_path / "conda"
    python = touch(conda / "bin" / "python3")
    assert linux_python(str(conda / "bin" / "qgis"), str(conda)).path == python
    assert linux_python("/usr/bin/qgis", str(tmp_path / "empty")).path == "/usr/bin/python3"
    assert qgis_python("Linux", "/usr/bin/qgis", "/usr").path.startswith("/usr/bin/python3")


def test_the_engine_folder_is_per_profile_and_python_version(plugin_dir, tmp_path):
    from urbanmtl.ui.engine_python import engine_folder

    assert engine_folder(str(tmp_path), "3.11.2") == tmp_path / "urbanmtl" / "engine-py3.11"
    assert engine_folder(str(tmp_path), "3.12.10").name == "engine-py3.12"


# --- what pip is asked, and what its failures say ---


def test_requirements_per_platform(plugin_dir):
    from urbanmtl.ui.install import requirements

    assert requirements(False, "Windows") == ["ai-edge-litert==2.3.0", "rasterio", "numpy"]
    linux = requirements(True, "Linux")
    assert "tensorflow-cpu==2.19.0" in linux and "scikit-learn==1.6.1" in linux and "keras==3.15.1" in linux
    assert "tensorflow==2.19.0" in requirements(True, "Darwin")


@pytest.mark.parametrize("output,expected", [
    ("ERROR: Could not find a version that satisfies the requirement ai-edge-litert==2.3.0 (from versions: none)\n"
     "ERROR: No matching distribution found for ai-edge-litert==2.3.0", "ai-edge-litert==2.3.0 publishes no wheel"),
    ("WARNING: Retrying ... Failed to establish a new connection: [Errno 101] Network is unreachable",
     "package index cannot be reached"),
    ("ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device", "disk is full"),
    ("/usr/bin/python3: No module named pip", "has no pip"),
    ("ERROR: ResolutionImpossible: for help visit ...", "conflict with the versions QGIS's Python"),
    ("ERROR: something odd happened", "something odd happened"),
])
def test_each_pip_failure_is_one_sentence(plugin_dir, output, expected):
    from urbanmtl.ui.install import pip_failure

    message = pip_failure(output, "the engine")
    assert expected in message and "\n" not in message and "Traceback" not in message


def test_download_size_adds_the_files_and_says_when_it_cannot_tell(plugin_dir, tmp_path):
    from urbanmtl.ui.install import download_size

    wheel = tmp_path / "a.whl"
    wheel.write_bytes(b"x" * 1234)

    class Response:
        headers = {"Content-Length": "1000000"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    entries = [{"url": wheel.as_uri()}, {"url": "https://files.example/b.whl"}]
    assert download_size(entries, opener=lambda request, timeout: Response()) == 1001234

    def offline(request, timeout):
        raise OSError("no network")

    assert download_size(entries, opener=offline) is None


def test_a_failed_verification_keeps_the_previous_engine(plugin_dir, tmp_path):
    """A stage whose packages do not import (here: a numpy that is not numpy) is refused in one sentence, and the
    folder in place is not touched."""
    from urbanmtl.ui.install import MAPPING_CHECK, replace_folder, verify
    from urbanmtl.ui.interpreter import EngineError

    stage = tmp_path / "engine-py3.11.new"
    (stage / "numpy").mkdir(parents=True)
    (stage / "numpy" / "__init__.py").write_text("raise ImportError('a broken numpy')")
    folder = tmp_path / "engine-py3.11"
    (folder / "kept").mkdir(parents=True)
    with pytest.raises(EngineError, match="does not import with them .*a broken numpy.*previous state was kept"):
        verify(sys.executable, stage, MAPPING_CHECK, None)
    assert (folder / "kept").is_dir()
    (stage / "numpy" / "__init__.py").unlink()
    (stage / "numpy").rmdir()
    (stage / "new").mkdir()
    replace_folder(stage, folder)
    assert (folder / "new").is_dir() and not (folder / "kept").exists() and not stage.exists()
    assert not folder.with_name(folder.name + ".old").exists()


def test_a_numpy_other_than_the_pythons_own_is_refused(plugin_dir, tmp_path):
    from urbanmtl.ui.install import verify
    from urbanmtl.ui.interpreter import EngineError

    stage = tmp_path / "stage"
    stage.mkdir()
    with pytest.raises(EngineError, match="numpy .* beside QGIS's numpy 0.1"):
        verify(sys.executable, stage, "import numpy", "0.1")


def test_no_network_leaves_the_previous_engine_and_says_so(plugin_dir, tmp_path):
    """pip pointed at an index nobody serves (a closed port on this machine): the resolution fails, one sentence,
    and the engine folder in place is kept as it was."""
    from urbanmtl.ui.install import install_engine
    from urbanmtl.ui.interpreter import EngineError

    folder = tmp_path / "profile" / "urbanmtl" / "engine-py3.11"
    (folder / "ai_edge_litert").mkdir(parents=True)
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
           "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2",
           "PIP_CONFIG_FILE": os.devnull}
    lines = []
    with pytest.raises(EngineError) as raised:
        install_engine("/usr/bin/python3", folder, False, lines.append, managed=True, env_base=env)
    assert "cannot be reached" in str(raised.value) or "publishes no wheel" in str(raised.value), str(raised.value)
    assert (folder / "ai_edge_litert").is_dir() and sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
