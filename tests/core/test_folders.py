"""WUDAPT / LCZ Generator training-area files as they are: a KML or KMZ with one folder per class, named the way
users write them, no attribute; 2-D or 3-D coordinates and multipart polygons; points and lines left out and said;
a folder naming no class, or empty, is one sentence naming it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from core.common.errors import UrbanMTLError
from core.finetuning.areas import class_names, folder_class, read_training_areas

SQUARE = "3.870,43.610{z} 3.872,43.610{z} 3.872,43.612{z} 3.870,43.612{z} 3.870,43.610{z}"


def polygon(z: str = "") -> str:
    return (f"<Placemark><Polygon><outerBoundaryIs><LinearRing><coordinates>{SQUARE.format(z=z)}</coordinates>"
            f"</LinearRing></outerBoundaryIs></Polygon></Placemark>")


def kml(folders: dict[str, str]) -> str:
    body = "".join(f"<Folder><name>{name}</name>{content}</Folder>" for name, content in folders.items())
    return f'<?xml version="1.0"?><kml xmlns="http://www.opengis.net/kml/2.2"><Document>{body}</Document></kml>'


def write_kmz(path: Path, folders: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("doc.kml", kml(folders))
    return path


@pytest.mark.parametrize("name,code", [("2", 2), ("LCZ 2", 2), ("2 Compact midrise", 2), ("A", 11), ("LCZ A", 11),
                                       ("11", 11), ("A Dense trees", 11), ("lcz_10", 10), ("G: water", 17),
                                       ("104", 14), ("LCZ-F bare soil", 16)])
def test_folder_names_as_users_write_them(name, code):
    assert folder_class(name) == code


@pytest.mark.parametrize("name", ["Buildings", "Area 2", "B2", "12x", "LCZ", "", "0", "18 High"])
def test_names_that_name_no_class(name):
    assert folder_class(name) is None


def test_a_kmz_reads_one_class_per_folder_with_3d_and_multipart_polygons(tmp_path):
    multipart = (f"<Placemark><MultiGeometry>{polygon(',0')[11:-12]}{polygon()[11:-12]}</MultiGeometry>"
                 f"</Placemark>")
    point = "<Placemark><Point><coordinates>3.87,43.61,0</coordinates></Point></Placemark>"
    line = "<Placemark><LineString><coordinates>3.87,43.61 3.88,43.62</coordinates></LineString></Placemark>"
    kmz = write_kmz(tmp_path / "areas.kmz", {"LCZ 2 Compact midrise": polygon(",0") + multipart + point,
                                             "A Dense trees": polygon() + line, "6": polygon(",12.5")})
    said = []
    areas = read_training_areas(kmz, None, "EPSG:32631", log=said.append)
    assert sorted((a.code, a.folder) for a in areas) == [(2, "LCZ 2 Compact midrise"), (2, "LCZ 2 Compact midrise"),
                                                          (6, "6"), (11, "A Dense trees")]
    assert all(len(p) == 2 for a in areas for ring in a.geometry["coordinates"]
               for p in (ring if a.geometry["type"] == "Polygon" else ring[0]))
    assert said == ["Left out 2 feature(s) of 'areas.kmz' that are not polygons (1 linestring, 1 point): training "
                    "areas are polygons."]
    assert class_names(areas) == {"2": "LCZ 2 Compact midrise", "6": "6", "A": "A Dense trees"}
    plain = tmp_path / "areas.kml"
    plain.write_text(kml({"LCZ 2": polygon(), "G": polygon()}))
    assert sorted(a.code for a in read_training_areas(plain, "", "EPSG:32631")) == [2, 17]


def test_a_folder_naming_no_class_or_holding_nothing_is_one_sentence(tmp_path):
    with pytest.raises(UrbanMTLError, match="The folder 'Buildings' of .* names no LCZ class"):
        read_training_areas(write_kmz(tmp_path / "a.kmz", {"2": polygon(), "Buildings": polygon()}), None,
                            "EPSG:32631")
    with pytest.raises(UrbanMTLError, match="The folder 'LCZ 9' of .* holds no polygon"):
        read_training_areas(write_kmz(tmp_path / "b.kmz", {"2": polygon(), "LCZ 9": ""}), None, "EPSG:32631")
