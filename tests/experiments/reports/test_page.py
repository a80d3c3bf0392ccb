"""The demo page as a reader sees it: every link resolves, no NaN, every section opens with its
sentence, models that did not learn are flagged and kept out of the comparison, files are named by
their settings; and the sentences and cells that build it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from experiments.reports import sentences
from experiments.reports.page import Section, cell, render
from experiments.sweeps.store import status_rows


class Page(HTMLParser):
    """Sections of a page: title, summary sentence, flags, image and link targets, visible text."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.links, self.text, self._tag, self._class = [], [], [], None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag, self._class = tag, attrs.get("class")
        if tag == "h2":
            self.sections.append({"title": "", "summary": "", "flags": [], "body": ""})
        for key in ("src", "href"):
            if attrs.get(key):
                self.links.append(attrs[key])

    def handle_endtag(self, tag):
        self._tag = self._class = None

    def handle_data(self, data):
        if self._tag == "style":
            return
        self.text.append(data)
        if not self.sections:
            return
        s = self.sections[-1]
        if self._tag == "h2":
            s["title"] += data
        elif self._tag == "p" and self._class == "summary":
            s["summary"] += data
        elif self._tag == "p" and self._class == "flag":
            s["flags"].append(data)
        s["body"] += data + " "


@pytest.fixture(scope="module")
def page(demo):
    return Page((demo / "index.html").read_text())


def test_every_image_and_link_on_the_page_resolves(demo, page):
    assert len(page.links) > 20
    for link in page.links:
        assert (demo / link).is_file(), link


def test_no_cell_or_sentence_says_nan(page):
    words = re.findall(r"[A-Za-z]+", " ".join(page.text))
    assert "NaN" not in words and "nan" not in words and "None" not in words


def test_every_section_opens_with_a_sentence_computed_from_its_numbers(page):
    assert len(page.sections) >= 8
    for s in page.sections:
        assert len(s["summary"].strip()) > 20 and s["summary"].strip().endswith((".", ")")), s["title"]
    checks = next(s for s in page.sections if s["title"].startswith("Constructions checked"))
    assert re.search(r"All \d+ constructions pass their checks", checks["summary"])
    assert re.search(r"the largest error is \w+'s, [\d.]+e-\d+ against a bound", checks["summary"])


def test_models_that_did_not_learn_are_flagged_and_kept_out_of_the_comparison(demo, page):
    status = pd.DataFrame(status_rows(demo / "sweep"))
    bad = status[[not sentences.learned(v) for v in status.eval_nmse]]
    assert len(bad) == len(status) == 2  # the tiny demo trains for 12 steps: nothing learns
    trained = next(s for s in page.sections if s["title"] == "Trained models")
    assert len(trained["flags"]) == len(bad)
    for flag, nmse in zip(trained["flags"], bad.eval_nmse):
        assert flag.startswith("Did not learn: ") and f"{nmse:.2f}" in flag
    compared = next(s for s in page.sections if "(ttb compare)" in s["title"])
    assert compared["summary"] == "No trained model learned, so none is compared."
    assert "seed 0" not in compared["body"]


def test_runs_and_figures_are_named_by_their_settings_not_by_hash(demo, page):
    names = [p.stem for p in (demo / "figures").glob("*.png")]
    assert "errors_linear-1-layer-example-tokens-seed-0" in names
    assert not [n for n in names if re.search(r"[0-9a-f]{12}", n)]
    trained = next(s for s in page.sections if s["title"] == "Trained models")
    assert "softmax, 2 layers, example tokens, seed 0" in trained["body"]


def test_a_model_is_drawn_only_at_the_context_size_it_was_trained_on(demo):
    data = pd.read_csv(demo / "figures" / "errors_linear-1-layer-example-tokens-seed-0.csv")
    model = data[data.algorithm == "model"]
    assert sorted(model.n_examples.unique()) == [7]  # 8 points: 7 examples and the query
    assert model.curve.iloc[0].endswith("(trained at n = 7 only)")
    assert sorted(data[data.algorithm == "ols"].n_examples.unique()) == list(range(1, 8))


# ----------------------------------------------------------------------------------------------
# The pieces


@pytest.mark.parametrize("value, text", [(float("nan"), "—"), (None, "—"), (True, "yes"), (0.0, "0"),
                                         (0.12345, "0.123"), (2.5e-15, "2.50e-15"), (12345678.0, "1.23e+07"),
                                         ("gd", "gd"), (3, "3")])
def test_cells_show_missing_values_as_a_dash_and_numbers_at_readable_precision(value, text):
    assert cell(value) == text


def test_render_escapes_text_and_shows_flags_before_the_table(tmp_path):
    table = pd.DataFrame({"model": ["<b>"], "error": [float("nan")]})
    out = render("t", ["intro"], [Section("S", ["One & two."], table, flags=["Watch out."])], tmp_path)
    assert "One &amp; two." in out and "&lt;b&gt;" in out and "NaN" not in out and "—" in out
    assert out.index("Watch out.") < out.index("<table>")


def test_checks_sentence_names_failures_and_the_closest_exact_error():
    table = pd.DataFrame({"name": ["a", "b", "c"], "exactness": ["exact", "exact", "rate"],
                          "error": [1e-16, 3e-15, 0.2], "bound": [1e-10, 1e-10, 0.1], "passed": [True, True, False]})
    text = sentences.checks(table)
    assert text.startswith("2 of 3 constructions pass their checks; failing: c.")
    assert "b's, 3.0e-15 against a bound of 1e-10" in text


def test_sweep_sentences_count_what_learned_against_the_stated_threshold():
    status = pd.DataFrame({"model": ["m1", "m2", "m3"], "eval_nmse": [0.1, 0.7, float("nan")]})
    text = " ".join(sentences.sweep(status, 12.0))
    assert "3 models trained in 12 s" in text and "1 learned in context" in text and "2 did not" in text
    assert sentences.not_learned(status) == ["Did not learn: m2 (normalised error 0.70 at the full context).",
                                             "Did not learn: m3 (no error measured: the run did not finish)."]


def test_model_sentence_puts_the_growth_of_the_best_iteration_in_words():
    summary = {"model": "linear, 3 layers, seed 1", "closest_algorithm": "gd[eta=0.5]", "closest_iteration": 14,
               "prediction_difference": 0.01, "model_cosine": 0.99, "nmse": 0.05,
               "algorithms": {"gd": {"best_iteration_per_layer": [0, 1, 4, 14], "log_iterations_per_layer": 1.32},
                              "newton": {"best_iteration_per_layer": [0, 1, 2, 3], "iterations_per_layer": 1.0}}}
    text = sentences.model(summary)
    assert text.startswith("linear, 3 layers, seed 1: closest to gd[eta=0.5] step 14")
    assert "layers 1, 2 and 3 match GD steps 1, 4 and 14 (about x3.7 per layer: exponential" in text
    assert "Newton iterations 1, 2 and 3 (about +1.0 per layer: linear" in text

    assert "carried by a few prompts" not in text  # no median given: nothing to say


def test_model_sentence_says_when_a_few_prompts_carry_the_mean_error():
    """A 3-layer linear model answered one prompt in 1024 with an error of 1.4e4 and the rest near
    1e-4: the mean (14) alone would contradict the table of trained models."""
    summary = {"model": "linear, 3 layers, seed 1", "closest_algorithm": "ols", "closest_iteration": None,
               "prediction_difference": 19.0, "model_cosine": 0.99, "nmse": 13.9, "median_nmse": 1.1e-4,
               "algorithms": {}}
    assert "a mean carried by a few prompts: the median prompt's is 0.00011" in sentences.model(summary)
    assert "carried" not in sentences.model({**summary, "nmse": 9e-4})  # under ten times the median


@pytest.mark.slow
def test_headless_chromium_shows_the_demo_page_with_its_figures(demo, tmp_path):
    """The page in a real browser: the screenshot is not blank and the figures drew (a broken image
    leaves the figure boxes white, so a page of text alone has far fewer distinct colours)."""
    from experiments.reports.screenshot import find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("no chromium (apt install chromium)")
    np = pytest.importorskip("numpy")
    image = pytest.importorskip("matplotlib.image")
    pixels = image.imread(screenshot(demo / "index.html", tmp_path / "page.png", height=6000))
    assert pixels.shape[:2] == (6000, 1280)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 2000  # measured: 7189 with the figures, 730 with the images removed


def test_screenshot_says_what_is_missing(tmp_path, capsys):
    from experiments.reports import screenshot

    assert screenshot.main([str(tmp_path / "none.html")]) == 1
    assert capsys.readouterr().err.startswith("error: ")
