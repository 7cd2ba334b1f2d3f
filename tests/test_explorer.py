"""The explorer's server side: its routes, the packed map, JSON replies, and which files it
shows. The page itself is driven in a browser by tests/test_explorer_page.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import httpx
import numpy as np
import pytest

from chroma_client import Client
from chroma_core.explorer.files import read_image
from chroma_wire.errors import InvalidInput, NotFound
from tests.conftest import Server
from tests.explorer_data import png

PNG = png((10, 20, 30), size=8)


def decode_map(body: bytes) -> dict:
    """The page's reading of a packed map (js/api.js fetchMap), in Python."""
    (length,) = struct.unpack_from("<I", body)
    assert (4 + length) % 4 == 0
    header = json.loads(body[4 : 4 + length])
    n, offset = header["count"], 4 + length
    out = dict(header)
    for name in ("x", "y", "priority"):
        out[name] = np.frombuffer(body, "<f4", n, offset)
        offset += 4 * n
    out["codes"] = {}
    for name in header["categories"]:
        out["codes"][name] = np.frombuffer(body, "<i4", n, offset)
        offset += 4 * n
    assert offset == len(body)
    return out


def make_images(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "cats").mkdir(parents=True)
    (allowed / "cats" / "a.png").write_bytes(PNG)
    (allowed / "with space.jpg").write_bytes(PNG)
    (allowed / "notes.txt").write_text("not an image")
    (allowed / "folder.png").mkdir()
    (tmp_path / "secret.png").write_bytes(b"confidential bytes")
    (tmp_path / "allowed-not").mkdir()
    (tmp_path / "allowed-not" / "b.png").write_bytes(b"secret")
    (allowed / "out.png").symlink_to(tmp_path / "secret.png")
    (allowed / "in.png").symlink_to(allowed / "cats" / "a.png")
    (tmp_path / "alias").symlink_to(allowed)
    return tmp_path


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path)


def test_images_under_an_allowed_directory_are_served(images):
    roots = (str(images / "allowed"),)
    assert read_image(str(images / "allowed/cats/a.png"), roots) == (PNG, "image/png")
    # a link that stays inside is followed; a file URI is read as a path
    assert read_image(str(images / "allowed/in.png"), roots)[0] == PNG
    uri = (images / "allowed" / "with space.jpg").as_uri()
    assert "%20" in uri
    assert read_image(uri, roots) == (PNG, "image/jpeg")
    # a root given through a link is the directory it names
    assert read_image(str(images / "allowed/cats/a.png"), (str(images / "alias"),))[0] == PNG


@pytest.mark.parametrize(
    "path",
    [
        "allowed/../secret.png",  # climbs out
        "allowed/cats/../../secret.png",
        "allowed/out.png",  # a link pointing out
        "allowed-not/b.png",  # shares the root's prefix, but is not under it
        "allowed/notes.txt",  # not an image
        "allowed/folder.png",  # not a file
        "allowed/missing.png",
        "secret.png",
    ],
)
def test_anything_else_is_refused_as_not_found(images, path):
    with pytest.raises(NotFound, match="CHROMA_EXPLORER_FILES"):
        read_image(str(images / path), (str(images / "allowed"),))


def test_a_directory_swapped_for_a_link_after_the_check_leads_nowhere(images, monkeypatch):
    """The check sees ``allowed/cats`` as a directory; by the open it is a link out. The
    open goes component by component from the listed directory and follows no link."""
    outside = images / "outside"
    outside.mkdir()
    (outside / "a.png").write_bytes(b"confidential bytes")
    cats = images / "allowed" / "cats"
    (cats / "a.png").unlink()
    cats.rmdir()
    cats.symlink_to(outside)
    # the state the check saw: the path resolving to itself, as before the swap
    real_resolve = Path.resolve
    target = images / "allowed" / "cats" / "a.png"
    monkeypatch.setattr(
        Path, "resolve", lambda self, strict=False: self if self == target else real_resolve(self)
    )
    with pytest.raises(NotFound, match="CHROMA_EXPLORER_FILES"):
        read_image(str(target), (str(images / "allowed"),))


def test_files_are_off_unless_directories_are_listed_and_paths_must_be_absolute(images):
    with pytest.raises(NotFound, match="lists no directory"):
        read_image(str(images / "allowed/cats/a.png"), ())
    roots = (str(images / "allowed"),)
    for bad in ("cats/a.png", "", "file://elsewhere/etc/a.png", f"{images}/allowed/a\0.png"):
        with pytest.raises(InvalidInput):
            read_image(bad, roots)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server showing files under ``allowed``, with a small scored space ``pets``."""
    directory = make_images(tmp_path_factory.mktemp("explorer"))
    server = Server(directory / "data", env={"CHROMA_EXPLORER_FILES": str(directory / "allowed")})
    client = Client(server.url)
    space = client.space("pets")
    rng = np.random.default_rng(1)
    space.add(
        rng.normal(0, 1, (60, 6)).astype(np.float32),
        dataset="train",
        labels=["cat"] * 30 + ["dog"] * 30,
        input_uris=[f"s3://pets/{i}.png" for i in range(60)],
    )
    ids = space.add(rng.normal(1, 1, (20, 6)).astype(np.float32), dataset="prod", context="triage")
    space.compute_priorities(k=5)
    yield server, space, ids, directory
    client.close()
    server.stop()


def test_the_page_and_its_files_are_served(served):
    server = served[0]
    http = httpx.Client(base_url=server.url)
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Chroma explorer" in page.text and 'src="explorer/js/main.js"' in page.text
    for path, kind in (
        ("/explorer/js/main.js", "javascript"),
        ("/explorer/js/map.js", "javascript"),
        ("/explorer/explorer.css", "text/css"),
    ):
        response = http.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"], path
    assert http.get("/explorer/../pyproject.toml").status_code == 404
    overview = http.get("/api/v1/explorer").json()
    assert overview["files"] is True
    # every installed map: PCA, and UMAP where umap-learn is installed (./dev test does)
    assert [m["name"] for m in overview["maps"]] == ["projection", "projection_umap"]


def test_the_map_carries_the_projection_with_priorities_and_catalogue(served):
    server, space, _, _ = served
    url = f"{server.url}/api/v1/explorer/spaces/pets/map"
    response = httpx.get(url, params={"sample": "50", "seed": "3"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.chroma.map"
    found = decode_map(response.content)
    table = space.run("projection", sample=50, seed=3)
    # the route ran the same algorithm with the same parameters
    assert table.attrs["meta"]["cached"] is True
    assert found["count"] == len(table) == 50
    assert found["ids"] == table["id"].tolist()
    assert np.array_equal(found["x"], table["x"].to_numpy())
    assert np.array_equal(found["y"], table["y"].to_numpy())
    for name, codes in found["codes"].items():
        values = found["categories"][name]
        decoded = [None if c < 0 else values[c] for c in codes]
        assert decoded == [None if v is None or v != v else v for v in table[name]], name
    assert found["input_uris"] == [None if v is None or v != v else v for v in table["input_uri"]]
    scored = space.priorities(n=None)
    priority = dict(zip(scored["id"], scored["priority"], strict=True))
    for id_, p, context in zip(found["ids"], found["priority"], table["context"], strict=True):
        if id_ in priority:
            assert p == pytest.approx(priority[id_], rel=1e-6)
        else:
            assert np.isnan(p) and context == "training"
    assert found["meta"]["method"] == "pca" and found["meta"]["sampled"] == 50
    summary = json.loads(response.content[4 : 4 + struct.unpack_from("<I", response.content)[0]])
    assert summary["priority"]["scored"] == int(np.sum(~np.isnan(found["priority"])))


def test_the_map_route_runs_maps_only_and_names_bad_parameters(served):
    http = httpx.Client(base_url=served[0].url)
    for params, named in (
        ({"algorithm": "priority"}, "not a map"),
        ({"sample": "many"}, "sample"),
        ({"seed": "-1"}, "seed"),
        ({"sample": "0"}, "sample"),
    ):
        response = http.get("/api/v1/explorer/spaces/pets/map", params=params)
        assert response.status_code == 400, params
        assert response.json()["error"] == "InvalidInput" and named in response.json()["detail"]
    Client(served[0].url).space("empty")
    empty = decode_map(http.get("/api/v1/explorer/spaces/empty/map").content)
    assert empty["count"] == 0 and empty["ids"] == [] and empty["meta"]["rows"] == 0
    missing = http.get("/api/v1/explorer/spaces/nope/map")
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"


def test_operations_answer_json_when_a_browser_asks(served):
    server, _, ids, _ = served
    http = httpx.Client(base_url=server.url)
    reply = http.post(
        "/api/v1/spaces/pets/priorities",
        json={"n": 3, "where": {"dataset": "prod"}},
        headers={"Accept": "application/json"},
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    rows = reply.json()["rows"]
    assert len(rows) == 3 and {r["id"] for r in rows} <= set(ids)
    assert rows[0]["priority"] >= rows[1]["priority"] >= rows[2]["priority"]
    # the components of rows sent without outputs hold no margin: null, never NaN
    assert json.loads(rows[0]["components"])["margin"] is None
    neighbors = http.post(
        "/api/v1/spaces/pets/nearest_neighbors",
        json={"ids": [ids[0]], "k": 4, "where": {"context": "training"}},
        headers={"Accept": "application/json"},
    ).json()["rows"]
    assert [n["rank"] for n in neighbors] == [0, 1, 2, 3]
    assert {n["label"] for n in neighbors} <= {"cat", "dog"}
    # without asking, the same operation answers Arrow, as the client expects
    arrow = http.post("/api/v1/spaces/pets/priorities", json={"n": 3})
    assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"


def test_the_file_route_serves_allowed_images_only(served):
    server, _, _, images = served
    http = httpx.Client(base_url=server.url)
    ok = http.get("/api/v1/explorer/file", params={"path": str(images / "allowed/cats/a.png")})
    assert ok.status_code == 200 and ok.content == PNG
    assert ok.headers["content-type"] == "image/png"
    assert ok.headers["x-content-type-options"] == "nosniff"
    for path in (str(images / "allowed/../secret.png"), str(images / "allowed/out.png")):
        refused = http.get("/api/v1/explorer/file", params={"path": path})
        assert refused.status_code == 404 and refused.json()["error"] == "NotFound"
        assert b"confidential" not in refused.content
    relative = http.get("/api/v1/explorer/file", params={"path": "cats/a.png"})
    assert relative.status_code == 400


def test_with_tokens_the_page_is_open_and_its_data_is_not(tmp_path, images):
    env = {"CHROMA_AUTH_TOKENS": "letmein", "CHROMA_EXPLORER_FILES": str(images / "allowed")}
    server = Server(tmp_path / "data", env=env)
    try:
        http = httpx.Client(base_url=server.url)
        assert http.get("/").status_code == 200
        assert http.get("/explorer/js/main.js").status_code == 200
        guarded = [
            "/api/v1/explorer",
            "/api/v1/explorer/spaces/pets/map",
            f"/api/v1/explorer/file?path={images / 'allowed/cats/a.png'}",
        ]
        for path in guarded:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = http.get(path, headers=headers)
                assert refused.status_code == 401, path
                assert refused.json()["error"] == "Unauthorized"
        token = {"Authorization": "Bearer letmein"}
        assert http.get(guarded[0], headers=token).status_code == 200
        assert http.get(guarded[2], headers=token).content == PNG
    finally:
        server.stop()


def test_the_map_and_its_cache_work_on_every_store(client, space_name):
    space = client.space(space_name)
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (120, 5)).astype(np.float32) * np.array([5, 3, 1, 1, 1], np.float32)
    ids = space.add(x, dataset="train", labels=["a", "b"] * 60)
    first = space.run("projection", sample=100, seed=1)
    assert len(first) == 100 and first["id"].is_unique
    assert set(first["id"]) <= set(ids)
    assert space.run("projection", sample=100, seed=1).attrs["meta"]["cached"] is True
    full = space.run("projection")
    centred = x - x.mean(axis=0)
    order = {id_: i for i, id_ in enumerate(ids)}
    expected = centred[[order[i] for i in full["id"]]]
    # the first axis is the direction of largest spread: the first coordinate, up to sign
    assert abs(np.corrcoef(full["x"], expected[:, 0])[0, 1]) > 0.99
    space.delete(ids=ids[:10])
    after = space.run("projection")
    assert after.attrs["meta"]["cached"] is False and len(after) == 110
    space.add(x[:3] + 10, dataset="late", context="triage")
    grown = space.run("projection")
    assert grown.attrs["meta"]["cached"] is False and len(grown) == 113


def test_a_json_request_carries_its_table_as_rows(served):
    server, space, ids, _ = served
    http = httpx.Client(base_url=server.url, headers={"Accept": "application/json"})
    url = f"/api/v1/spaces/{space.name}/update"
    sent = http.post(url, json={"rows": [{"id": ids[0], "label": "fox"}]})
    assert sent.status_code == 200, sent.text
    assert sent.json()["count"] == 1 and sent.json()["rows"] == [{"id": ids[0]}]
    assert space.get(ids=[ids[0]])["label"].tolist() == ["fox"]
    for rows in ("nope", [1, 2], [{"id": ids[0], "label": {"a": [1]}}, {"id": 3}]):
        refused = http.post(url, json={"rows": rows})
        assert refused.status_code == 400 and refused.json()["error"] == "MalformedPayload", rows
    missing = http.post(url, json={"rows": [{"id": "nope", "label": "x"}]})
    assert missing.status_code == 404 and "nothing was updated" in missing.json()["detail"]
