"""The explorer page as a person uses it: headless Chromium against a real server.

``./dev test`` installs Debian's Chromium when it is missing (as root); playwright drives
it and never downloads a browser. Screenshots go to the test's temporary folder; with
``CHROMA_EXPLORER_SCREENSHOT=1`` the one of the whole page also replaces docs/explorer.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from chroma_client import Client
from tests.conftest import Server
from tests.explorer_data import seed

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = Path(__file__).resolve().parent.parent / "docs"
BIG = 100_000
VIEWPORT = {"width": 1440, "height": 1000}


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed; ./dev test installs Debian's chromium as root")
    with sync_playwright() as playwright:
        # the sandbox cannot start as root, which is how CI runs
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    """A server showing the image files of a seeded space, and a client of it."""
    directory = tmp_path_factory.mktemp("explorer-page")
    server = Server(directory / "data", env={"CHROMA_EXPLORER_FILES": str(directory / "images")})
    client = Client(server.url)
    seeded = seed(client, directory / "images")
    yield server, client, seeded
    client.close()
    server.stop()


def open_page(browser, url: str) -> tuple[Page, list]:
    page = browser.new_page(viewport=VIEWPORT)
    errors: list = []
    page.on("pageerror", lambda error: errors.append(error))
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    return page, errors


def position(page: Page, point_id: str) -> dict:
    return page.evaluate(
        "id => { const e = window.chromaExplorer;"
        " return e.map.screenPosition(e.state.index.get(id)); }",
        point_id,
    )


def loneliest(client: Client, space: str, among: list[str]) -> str:
    """Of the ids ``among``, the one farthest on the map from any other point, so that
    pointing at it can only mean it."""
    frame = client.space(space).run("projection")
    xy = frame[["x", "y"]].to_numpy()
    candidates = np.flatnonzero(frame["id"].isin(among).to_numpy())
    gaps = [np.sort(np.linalg.norm(xy - xy[i], axis=1))[1] for i in candidates]
    return str(frame["id"].iloc[candidates[int(np.argmax(gaps))]])


def test_the_map_draws_every_point_with_a_legend_per_colouring(browser, explorer):
    server, _, seeded = explorer
    page, errors = open_page(browser, f"{server.url}/#space={seeded['space']}")
    points = page.locator("#points")
    assert points.get_attribute("data-points") == str(seeded["total"])
    assert points.get_attribute("data-drawn") == str(seeded["total"])
    legend = page.locator("#legend")
    expect(legend.locator(".row", has_text="training")).to_contain_text("1,600")
    expect(legend.locator(".row", has_text="triage")).to_contain_text("500")
    page.select_option("#colour-by", "label")
    for label in ("cat", "dog", "bird", "fox"):
        expect(legend.locator(".row", has_text=label)).to_contain_text("400")
    expect(legend.locator(".row", has_text="(none)")).to_contain_text("500")
    page.select_option("#colour-by", "priority")
    expect(legend.locator(".ramp")).to_be_visible()
    expect(legend.locator(".row", has_text="unscored")).to_contain_text("1,600")
    # zooming in leaves points out of view, and Fit brings them all back
    for _ in range(4):
        page.click("#zoom-in")
    page.wait_for_function("Number(document.querySelector('#points').dataset.drawn) < 2100")
    page.click("#zoom-fit")
    page.wait_for_function("document.querySelector('#points').dataset.drawn === '2100'")
    assert not errors


def test_hover_shows_the_input_its_catalogue_and_its_thumbnail(browser, explorer):
    server, client, seeded = explorer
    page, errors = open_page(browser, f"{server.url}/#space={seeded['space']}")
    target = loneliest(client, seeded["space"], seeded["triage"]["prod-2026-12"])
    row = client.space(seeded["space"]).get(ids=[target]).iloc[0]
    at = position(page, target)
    page.mouse.move(at["x"], at["y"])
    tooltip = page.locator("#tooltip")
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text(target)
    expect(tooltip).to_contain_text(row["input_uri"])
    expect(tooltip).to_contain_text("prod-2026-12")
    expect(tooltip).to_contain_text(row["inference"])
    # the image file behind input_uri, served because its directory is allowed
    thumbnail = tooltip.locator("img")
    expect(thumbnail).to_be_visible()
    page.wait_for_function(
        "document.querySelector('#tooltip img')?.naturalWidth === 48", timeout=10_000
    )
    page.mouse.move(5, 5)
    expect(tooltip).to_be_hidden()
    assert not errors


def test_clicking_a_point_lists_its_neighbors_and_priority_components(browser, explorer):
    server, client, seeded = explorer
    page, errors = open_page(browser, f"{server.url}/#space={seeded['space']}")
    target = loneliest(client, seeded["space"], seeded["triage"]["prod-2026-11"])
    at = position(page, target)
    page.mouse.click(at["x"], at["y"])
    details = page.locator("#details-fields")
    expect(details).to_contain_text(target)
    rows = page.locator("#neighbors tbody tr")
    expect(rows).to_have_count(10)
    why = client.space(seeded["space"]).explain(target, k=10)
    shown = page.evaluate("[...document.querySelectorAll('#neighbors tbody tr')].map(r => r.title)")
    assert shown == why.neighbors["id"].tolist()
    priority = page.locator("#details-priority")
    expect(priority).to_contain_text(f"{why.priority:.3f}")
    for name in ("disagreement", "distance_pct", "mahalanobis_pct", "margin", "entropy"):
        expect(priority).to_contain_text(name)
    expect(page.locator("#details-image")).to_be_visible()
    # a neighbour's row leads to that neighbour
    rows.first.click()
    expect(details).to_contain_text(why.neighbors["id"].iloc[0])
    expect(page.locator("#details-priority")).to_contain_text("Training inputs are not scored")
    assert not errors


def test_triggers_fire_for_the_filtered_top_and_for_a_selection(browser, explorer, tmp_path):
    server, client, seeded = explorer
    space = client.space(seeded["space"])
    page, errors = open_page(browser, f"{server.url}/#space={seeded['space']}")
    page.select_option("#filter-dataset", "prod-2026-12")
    page.fill("#top-n", "5")
    page.locator("#top-n").dispatch_event("change")
    table = page.locator("#priority-table tbody tr")
    expect(table).to_have_count(5)
    for cell in table.locator("td:nth-child(3)").all():
        expect(cell).to_have_text("prod-2026-12")
    page.fill("#trigger-note", "five from December")
    page.click("#trigger-button")
    triggers = page.locator("#trigger-table tbody tr")
    expect(triggers).to_have_count(1)
    expect(triggers.first).to_contain_text("five from December")
    newest = client.triggers(seeded["space"])["trigger"].iloc[0]
    assert newest.count == 5 and newest.note == "five from December"
    expected = space.priorities(n=5, where={"dataset": "prod-2026-12"})["id"].tolist()
    assert client.trigger_items(newest.id)["id"].tolist() == expected

    # shift-drag a box around the densest part of the map
    box = page.locator("#points").bounding_box()
    centre = page.evaluate(
        "() => { const m = window.chromaExplorer.map; let best = [0, 0], most = -1;"
        " for (let i = 0; i < m.n; i += 7) { const [x, y] = m.toScreen(i); let c = 0;"
        " for (let j = 0; j < m.n; j++) { const [a, b] = m.toScreen(j);"
        " if (Math.abs(a - x) < 30 && Math.abs(b - y) < 30) c++; }"
        " if (c > most) { most = c; best = [x, y]; } } return best; }"
    )
    x, y = box["x"] + centre[0], box["y"] + centre[1]
    page.keyboard.down("Shift")
    page.mouse.move(x - 40, y - 40)
    page.mouse.down()
    page.mouse.move(x, y, steps=4)
    page.mouse.move(x + 40, y + 40, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    selected = page.evaluate(
        "() => { const s = window.chromaExplorer.state;"
        " return s.data.ids.filter((_, i) => s.selection[i]); }"
    )
    assert len(selected) > 20
    expect(page.locator("#selection-summary")).to_contain_text(f"{len(selected):,} points selected")
    page.click("#trigger-button")
    expect(triggers).to_have_count(2)
    newest = client.triggers(seeded["space"])["trigger"].iloc[0]
    scored = set(space.priorities(n=None)["id"])
    held = client.trigger_items(newest.id)["id"].tolist()
    assert sorted(held) == sorted(set(selected) & scored) and held
    expect(page.locator("#status")).to_contain_text(f"Trigger #{newest.id} holds {len(held)}")
    page.keyboard.press("Escape")
    expect(page.locator("#selection-summary")).to_contain_text("No points selected")
    assert not errors


def test_trigger_rules_are_added_listed_and_removed_on_the_page(browser, explorer):
    server, client, seeded = explorer
    space = client.space(seeded["space"])
    page, errors = open_page(browser, f"{server.url}/#space={seeded['space']}")
    rules = page.locator("#rule-table tbody tr")
    expect(page.locator("#rule-empty")).to_be_visible()
    page.fill("#rule-name", "daily-sample")
    page.select_option("#rule-when", "schedule")
    expect(page.locator("#rule-value")).to_have_attribute("placeholder", "hours, e.g. 24")
    page.fill("#rule-value", "24")
    page.fill("#rule-n", "3")
    page.click("#rule-button")
    expect(rules).to_have_count(1)
    expect(rules.first).to_contain_text("every 24 h")
    (made,) = space.trigger_rules().to_dict("records")
    assert (made["name"], made["when"], made["every"], made["n"]) == ("daily-sample", "schedule",
                                                                        86_400, 3)  # fmt: skip
    # a refused rule says why, in the status line
    page.fill("#rule-name", "daily-sample")
    page.fill("#rule-value", "24")
    page.click("#rule-button")
    expect(page.locator("#status")).to_contain_text("already holds a trigger rule")
    rules.first.get_by_role("button", name="Remove").click()
    expect(rules).to_have_count(0)
    assert space.trigger_rules().empty
    assert not errors


def test_a_screenshot_of_the_page_in_use(browser, explorer, tmp_path):
    server, client, seeded = explorer
    page, errors = open_page(browser, f"{server.url}/#space={seeded['space']}")
    page.select_option("#colour-by", "label")
    target = loneliest(client, seeded["space"], seeded["triage"]["prod-2026-12"])
    at = position(page, target)
    page.mouse.click(at["x"], at["y"])
    expect(page.locator("#neighbors tbody tr")).to_have_count(10)
    expect(page.locator("#details-image")).to_be_visible()
    # the tooltip of the point shown in the details
    page.mouse.move(at["x"] - 20, at["y"] - 20)
    page.mouse.move(at["x"], at["y"])
    page.wait_for_function(
        "document.querySelector('#tooltip img')?.naturalWidth === 48", timeout=10_000
    )
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    if os.environ.get("CHROMA_EXPLORER_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS / "explorer.png")
    assert not errors


def test_a_hundred_thousand_points_are_all_drawn(browser, tmp_path):
    # no k-NN index is built for these rows: nothing here searches them
    server = Server(tmp_path / "data", env={"CHROMA_SIMILARITY_BUILD": "lazy"})
    client = Client(server.url)
    space = client.space("big")
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 4, (8, 16))
    which = rng.integers(0, 8, BIG)
    space.add(
        (centres[which] + rng.normal(0, 1, (BIG, 16))).astype(np.float32),
        dataset=[f"shard-{i % 4}" for i in range(BIG)],
        labels=[f"class-{c}" for c in which],
    )
    page, errors = open_page(browser, f"{server.url}/#space=big")
    points = page.locator("#points")
    assert points.get_attribute("data-points") == str(BIG)
    assert points.get_attribute("data-drawn") == str(BIG)
    expect(page.locator("#map-summary")).to_contain_text("100,000 points")
    page.screenshot(path=str(tmp_path / "explorer-100k.png"))
    assert not errors
    client.close()
    server.stop()


def test_the_page_asks_for_a_token_when_the_server_wants_one(browser, tmp_path):
    server = Server(tmp_path / "data", env={"CHROMA_AUTH_TOKENS": "open-sesame"})
    try:
        with Client(server.url, token="open-sesame") as client:
            client.space("guarded").add(np.eye(4, dtype=np.float32), dataset="d")
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(server.url + "/")
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#token-title")).to_have_text("This server wants a token")
        # a wrong token is told apart from none
        page.fill("#token-input", "wrong")
        page.click("#token-form button")
        expect(dialog).to_be_visible()
        expect(page.locator("#token-title")).to_have_text("This server does not accept that token")
        expect(page.locator("#status")).to_contain_text("not accepted")
        page.fill("#token-input", "open-sesame")
        page.click("#token-form button")
        page.wait_for_selector("body[data-state=ready]")
        expect(dialog).to_be_hidden()
        assert page.locator("#points").get_attribute("data-drawn") == "4"
        # a token in the address is kept for the tab and taken out of the address
        fresh = browser.new_page(viewport=VIEWPORT)
        fresh.goto(server.url + "/?token=open-sesame")
        fresh.wait_for_selector("body[data-state=ready]")
        assert "token" not in fresh.url
        assert fresh.locator("#points").get_attribute("data-drawn") == "4"
    finally:
        server.stop()


def test_no_space_shows_a_message_and_no_legend(browser, tmp_path):
    server = Server(tmp_path / "data")
    try:
        page, errors = open_page(browser, server.url + "/")
        expect(page.locator("#map-message")).to_contain_text("No space yet")
        expect(page.locator("#legend")).to_be_hidden()
        assert not errors
    finally:
        server.stop()


def test_priorities_are_computed_from_the_page_and_triggers_move_along(browser, tmp_path):
    server = Server(tmp_path / "data")
    client = Client(server.url)
    try:
        space = client.space("fresh")
        rng = np.random.default_rng(2)
        space.add(rng.normal(size=(60, 8)).astype(np.float32), dataset="train",
                  labels=["a", "b"] * 30)  # fmt: skip
        triage = space.add(rng.normal(size=(12, 8)).astype(np.float32), dataset="prod",
                           context="triage", inferences="a")  # fmt: skip
        page, errors = open_page(browser, f"{server.url}/#space=fresh")
        # nothing scored: nothing to trigger, and the page says how to score
        expect(page.locator("#priority-empty")).to_contain_text("Compute priorities")
        expect(page.locator("#trigger-button")).to_be_disabled()
        page.click("#compute-button")
        expect(page.locator("#status")).to_contain_text("Priorities computed: 12 inputs scored")
        expect(page.locator("#priority-table tbody tr")).to_have_count(12)
        expect(page.locator("#trigger-button")).to_be_enabled()
        assert space.priority_status()["scored"] == 12
        page.fill("#top-n", "3")
        page.locator("#top-n").dispatch_event("change")
        expect(page.locator("#priority-table tbody tr")).to_have_count(3)
        page.fill("#trigger-note", "a note long enough to need more than one line in the table")
        page.click("#trigger-button")
        row = page.locator("#trigger-table tbody tr").first
        expect(row).to_contain_text("0/3")
        note = row.locator("td.note")
        expect(note).to_have_text("a note long enough to need more than one line in the table")
        # the whole note is shown, not cut
        assert note.evaluate("e => e.scrollWidth <= e.clientWidth")
        # labels come back: the labelled count follows; the status moves from the page
        made = client.triggers("fresh")["trigger"].iloc[0]
        held = client.trigger_items(made.id)["id"].tolist()
        space.update(held[:2], labels="b")
        page.reload()
        page.wait_for_selector("body[data-state=ready]")
        row = page.locator("#trigger-table tbody tr").first
        expect(row).to_contain_text("2/3")
        row.locator("select").select_option("acknowledged")
        expect(page.locator("#status")).to_contain_text(f"Trigger #{made.id} is acknowledged")
        assert client.triggers("fresh")["status"].tolist() == ["acknowledged"]
        # its inputs, labelled from the page: the last one, into training
        page.locator("#trigger-table tbody tr").first.locator("td").first.click()
        expect(page.locator("#items-title")).to_have_text(
            f"Trigger #{made.id}: 2 of 3 inputs labelled"
        )
        inputs = page.locator("#items-table input")
        expect(inputs).to_have_count(3)
        rest = [i for i in range(3) if inputs.nth(i).input_value() == ""]
        assert len(rest) == 1
        inputs.nth(rest[0]).fill("a")
        page.check("#items-into-training")
        page.click("#items-save")
        expect(page.locator("#status")).to_contain_text("1 labels saved, moved into training")
        expect(page.locator("#items-title")).to_have_text(
            f"Trigger #{made.id}: 3 of 3 inputs labelled"
        )
        last = client.space("fresh").get(ids=[held[2]])
        assert last["label"].tolist() == ["a"] and last["context"].tolist() == ["training"]
        # every input labelled: the trigger is done
        assert client.triggers("fresh")["status"].tolist() == ["done"]
        assert set(held) <= set(triage) and not errors
    finally:
        client.close()
        server.stop()


def test_points_are_coloured_by_whether_the_model_was_right(browser, tmp_path):
    server = Server(tmp_path / "data")
    client = Client(server.url)
    try:
        space = client.space("verdict")
        rng = np.random.default_rng(3)
        space.add(rng.normal(size=(10, 4)).astype(np.float32), dataset="d", labels="a")
        space.add(rng.normal(size=(5, 4)).astype(np.float32), dataset="p", context="triage",
                  inferences="a", labels=["a", "a", "a", "b", "b"])  # fmt: skip
        space.add(rng.normal(size=(4, 4)).astype(np.float32), dataset="p", context="triage",
                  inferences="b")  # fmt: skip
        page, errors = open_page(browser, f"{server.url}/#space=verdict")
        page.select_option("#colour-by", "model")
        legend = page.locator("#legend")
        expect(legend.locator(".row", has_text="wrong")).to_contain_text("2")
        expect(legend.locator(".row", has_text="right")).to_contain_text("3")
        expect(legend.locator(".row", has_text="unknown")).to_contain_text("14")
        # the wrong ones are drawn last, over the others
        last = page.evaluate(
            "() => { const e = window.chromaExplorer; const d = e.state.data;"
            " const order = e.map.order; const tail = [...order].slice(-2);"
            " return tail.map(i => d.categories.label[d.codes.label[i]]); }"
        )
        assert last == ["b", "b"]
        assert not errors
    finally:
        client.close()
        server.stop()


def test_the_page_lists_every_installed_map_and_draws_the_umap(browser, explorer):
    server, _, seeded = explorer
    page, errors = open_page(browser, f"{server.url}/#space={seeded['space']}")
    options = page.locator("#map-algorithm option").all_text_contents()
    assert options == ["projection", "projection_umap"]
    before = page.evaluate("() => Array.from(window.chromaExplorer.state.data.x.slice(0, 5))")
    page.select_option("#map-algorithm", "projection_umap")
    page.wait_for_selector("body[data-state=ready]", timeout=120_000)
    page.wait_for_function(
        f"document.querySelector('#points').dataset.drawn === '{seeded['total']}'"
    )
    after = page.evaluate("() => Array.from(window.chromaExplorer.state.data.x.slice(0, 5))")
    assert after != before
    expect(page.locator("#map-summary")).to_contain_text("UMAP")
    assert not errors
