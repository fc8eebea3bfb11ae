"""The UI in a real browser (Playwright driving Debian's headless Chromium) against a live
`tunelab ui`: fill the form, see tunelab's config error, start a run, watch its curve grow,
read the final metric, classify with the trained run; restart the UI while a run trains."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import toy_sentiment_files
from playwright.sync_api import Page, expect, sync_playwright
from ui_fixtures import free_port, live_ui, runs_dir  # noqa: F401  (a fixture)

CHROMIUM = "/usr/bin/chromium"


def toy_data(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return toy_sentiment_files(root)


def non_blank(png: Path, min_colours: int = 8) -> None:
    """A screenshot that shows something: many colours, not one flat fill."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) >= min_colours, png
    assert max(n for n, _ in colours) < 0.98 * image.width * image.height, png


def points(page: Page, canvas: str) -> int:
    return int(page.get_attribute(canvas, "data-points") or 0)


def fill_form(page: Page, model: Path, data: dict[str, Path], name: str, steps: int) -> None:
    page.fill("#f-name", name)
    page.select_option("#f-task", "classification")
    page.fill("#f-model", str(model))
    page.fill("#f-train", str(data["train"]))
    page.fill("#f-dev", str(data["dev"]))
    page.select_option("#f-method", "lora")
    page.fill("#f-method-options", "r=4\nalpha=8\ntargets=[query,value]")
    page.fill("#f-max-steps", str(steps))
    page.fill("[data-opt=batch_size]", "8")
    page.fill("[data-opt=log_every]", "2")
    page.fill("[data-opt=eval_every]", "10")
    page.fill("#f-overrides", "data.columns.text=sentence\nmodel.max_length=32")


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


def test_new_run_curve_final_metric_and_answer(tmp_path, runs_dir, tiny_model_dir,  # noqa: F811
                                               browser):
    data = toy_data(tmp_path / "data")
    shots = tmp_path / "shots"
    shots.mkdir()
    with live_ui(runs_dir, free_port()) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        fill_form(page, tiny_model_dir, data, "r1", 200)
        page.fill("#f-lr", "fast")  # a bad value: tunelab's own message, live
        expect(page.locator("#config-error")).to_contain_text("train.lr: input should be a "
                                                              "valid number", timeout=15000)
        expect(page.locator("#start-btn")).to_be_disabled()
        page.screenshot(path=shots / "1-error.png")
        page.fill("#f-lr", "5e-3")
        expect(page.locator("#config-error")).to_be_hidden(timeout=15000)
        expect(page.locator("#yaml")).to_contain_text("max_steps: 200")
        page.click("#preview-btn")
        expect(page.locator("#preview")).to_contain_text("train: 96 examples", timeout=30000)

        page.click("#start-btn")
        expect(page.locator("#tab-runs")).to_be_visible()
        seen: list[int] = []
        deadline = time.time() + 120
        while time.time() < deadline:
            n = points(page, "#curve-loss")
            if not seen or n != seen[-1]:
                seen.append(n)
            if page.locator("#detail-state").text_content() == "finished" and page.locator(
                    ".final-value").count():
                break
            time.sleep(0.25)
        page.screenshot(path=shots / "2-finished.png")
        run = runs_dir / "r1"
        records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if "train_loss" in r]
        summary = json.loads((run / "summary.json").read_text())
        page.wait_for_function("n => document.querySelector('#curve-loss').dataset.points == n",
                               arg=str(len(train)), timeout=10000)
        assert len(train) == 100 and summary["steps"] == 200
        assert len([n for n in seen if 0 < n < len(train)]) >= 1  # watched it grow
        accuracy = page.locator(".final-value[data-key=accuracy]").text_content()
        assert accuracy == f"{summary['final_dev']['accuracy']:.4f}"
        assert page.locator("#detail-progress").evaluate("e => e.value") == 1
        page.locator("#curve-loss").screenshot(path=shots / "3-curve.png")

        page.click(".tab[data-tab=try]")
        page.wait_for_selector("#try-run option[value=r1]", state="attached")
        page.select_option("#try-run", "r1")
        text = "the movie was wonderful and the acting superb"
        page.fill("#try-text", text)
        page.click("#try-btn")
        expect(page.locator("#answer-label")).to_be_visible(timeout=60000)
        page.screenshot(path=shots / "4-answer.png")
        from tunelab.runs.trained import load_trained
        from tunelab.tasks.inference import classify

        model, tokenizer, info = load_trained(run)
        label, _, probs = classify(model, tokenizer, info, [text])[0]
        assert page.locator("#answer-label").text_content() == label
        shown = [float(t) for t in page.locator("#answer .prob").all_text_contents()]
        assert shown == [round(p, 4) for p in sorted(probs.values(), reverse=True)]
        # a second, shorter run, then the two side by side in the Compare tab
        page.click(".tab[data-tab=new]")
        fill_form(page, tiny_model_dir, data, "r2", 20)
        expect(page.locator("#config-error")).to_be_hidden(timeout=15000)
        page.click("#start-btn")
        deadline = time.time() + 120
        while time.time() < deadline and not (runs_dir / "r2" / "summary.json").is_file():
            time.sleep(0.5)
        page.click(".tab[data-tab=compare]")
        for name in ("r1", "r2"):
            page.check(f"#compare-list input[value={name}]")
        page.click("#compare-btn")
        frame = page.frame_locator("#compare-frame")
        expect(frame.locator("body")).to_contain_text("r2", timeout=60000)
        page.screenshot(path=shots / "5-compare.png")
    for png in sorted(shots.glob("*.png")):
        non_blank(png, 3 if png.name.startswith("3-") else 8)
    assert len(list(shots.glob("*.png"))) == 5
    keep = os.environ.get("TUNELAB_UI_SHOTS")  # README's pictures come from this test
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(keep) / f"ui-{png.name}")


def test_restart_ui_while_training(tmp_path, runs_dir, tiny_model_dir, browser):  # noqa: F811
    data = toy_data(tmp_path / "data")
    with live_ui(runs_dir, free_port()) as url:
        page = browser.new_page()
        page.goto(url)
        fill_form(page, tiny_model_dir, data, "long", 100000)
        page.fill("[data-opt=checkpoint_every]", "1000000")
        expect(page.locator("#start-btn")).to_be_enabled(timeout=15000)
        page.click("#start-btn")
        page.wait_for_function("document.querySelector('#curve-loss').dataset.points > 0",
                               timeout=90000)
        page.close()
    state = json.loads((runs_dir / ".ui" / "long.json").read_text())
    assert Path(f"/proc/{state['pid']}").is_dir()  # the UI is gone, the run is not
    with live_ui(runs_dir, free_port()) as url:
        page = browser.new_page()
        page.goto(url)
        page.click(".tab[data-tab=runs]")
        row = page.locator("tr[data-run=long]")
        expect(row.locator("td.status-running")).to_be_visible(timeout=15000)
        row.click()
        page.wait_for_function("document.querySelector('#curve-loss').dataset.points > 0")
        first = points(page, "#curve-loss")
        page.wait_for_function(f"document.querySelector('#curve-loss').dataset.points > {first}",
                               timeout=30000)
        # stop: SIGTERM, a checkpoint, interrupted; resume continues from it
        page.click("button[data-stop=long]")
        expect(row.locator("td.status-interrupted")).to_be_visible(timeout=60000)
        (ckpt,) = (runs_dir / "long" / "checkpoints").glob("step-*")
        stopped_at = int(ckpt.name.split("-")[1])
        assert stopped_at > 0
        page.click("button[data-resume=long]")
        expect(row.locator("td.status-running")).to_be_visible(timeout=15000)
        deadline = time.time() + 90
        while time.time() < deadline:
            steps = [json.loads(ln)["step"] for ln in
                     (runs_dir / "long" / "metrics.jsonl").read_text().splitlines()]
            if steps[-1] > stopped_at:
                break
            time.sleep(0.5)
        assert steps[-1] > stopped_at and max(steps[:-1]) <= steps[-1]
        page.screenshot(path=tmp_path / "restart.png")
    non_blank(tmp_path / "restart.png")
