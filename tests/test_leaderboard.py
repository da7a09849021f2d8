"""rb-leaderboard on result files that real rb-eval runs in this test produce."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from robustbench_augmix.cli.eval import main as eval_main
from robustbench_augmix.cli.leaderboard import main as board_main
from robustbench_augmix.report import MixedProtocols, leaderboard, load_results, to_csv, to_latex, to_markdown

CELLS = ["--corruptions", "gaussian_noise,contrast", "--severities", "2,4", "--no-progress", "--bootstrap", "20"]


@pytest.fixture
def results(tmp_path, cifar_root):
    from safetensors.torch import save_file

    from robustbench_augmix.models.cifar import wrn40_2

    root, _ = cifar_root
    out = tmp_path / "res"
    files = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        w = tmp_path / f"w{seed}.safetensors"
        save_file(wrn40_2().state_dict(), str(w))
        # A real zoo card id with our own (untrained) weights: measured vs reported deltas appear.
        assert eval_main(["--model", "wrn40_2_augmix_cifar10", "--weights", str(w), "--data", str(root),
                          "--out", str(out), "--name", f"wrn{seed}", *CELLS]) == 0
        files.append(out / f"wrn{seed}.json")
    assert eval_main(["--model", "wrn40_2_augmix_cifar10", "--weights", str(w), "--data", str(root), "--out",
                      str(out), "--name", "other", "--corruptions", "fog", "--severities", "1", "--no-progress"]) == 0
    # The same cells as the first two, but the corrupted 32-px images are upsampled to 40 px for the model.
    assert eval_main(["--model", "wrn40_2_augmix_cifar10", "--weights", str(w), "--data", str(root), "--out",
                      str(out), "--name", "resized", "--input-size", "40", *CELLS]) == 0
    return files, out / "other.json", out / "resized.json"


def test_ranking_formats_and_deltas(results, capsys):
    files, *_ = results
    docs = load_results(files)
    board = leaderboard(docs)
    mce = [d["aggregates"]["mean_corruption_error"] for d in docs]
    assert [r["model"] for r in board.rows] == ["wrn40_2_augmix_cifar10"] * 2
    assert [r["file"] for r in board.rows] == [str(f) for _, f in sorted(zip(mce, files, strict=True))]
    r = board.rows[0]
    assert r["params"] == 2_243_546 and "2.24" in to_markdown(board)  # WRN-40-2 (tests/test_models.py)
    assert r["reported_mean_corruption_error"] == 11.2
    assert r["delta_mean_corruption_error"] == pytest.approx(r["mean_corruption_error"] - 11.2, abs=0.01)
    rows = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert len(rows) == 2 and rows[0]["rank"] == "1" and set(board.corruptions) <= set(rows[0])
    md = to_markdown(board).splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len(table) == 2 + 2 and len({line.count("|") for line in table}) == 1
    per = [line for line in to_markdown(board, per_corruption=True).splitlines() if line.startswith("|")]
    assert per[0].split("|")[2].strip() == "gaussian_noise" and per[0].split("|")[-2].strip() == "mean"
    tex = to_latex(board)
    assert tex.count(r"\\") == 3 and r"wrn40\_2" in tex
    assert board_main([str(f) for f in files]) == 0
    assert "wrn40_2_augmix_cifar10" in capsys.readouterr().out


def test_mixed_protocols_are_refused(results, capsys, tmp_path):
    files, other, resized = results
    with pytest.raises(MixedProtocols, match="not comparable"):
        leaderboard(load_results([*files, other]))
    assert board_main([*map(str, files), str(other)]) == 2
    assert "--allow-mixed" in capsys.readouterr().err
    board = leaderboard(load_results([*files, other]), allow_mixed=True)
    assert board.mixed and len(board.rows) == 3
    # Same cells, different model input geometry: refused too, and the message says how they differ.
    with pytest.raises(MixedProtocols, match="resized to 40 px") as e:
        leaderboard(load_results([*files, resized]))
    assert str(e.value).count("cifar10-c") == 2
    assert not leaderboard(load_results(files)).mixed
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert board_main([str(bad)]) == 2


def test_html_report_parses_sorts_and_embeds_the_plots(results, tmp_path):
    from html.parser import HTMLParser

    files, *_ = results
    out = tmp_path / "report.html"
    assert board_main([*map(str, files), "--format", "html", "--out", str(out), "--plots", str(tmp_path / "p")]) == 0
    text = out.read_text()

    class Walk(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.open, self.imgs, self.tables, self.rows, self.refs = [], [], [], 0, [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.tags.append(tag)
            if tag not in ("meta", "img", "br"):
                self.open.append(tag)
            if tag == "img":
                self.imgs.append(a["src"])
            if tag == "table":
                self.tables += 1
            if tag == "tr":
                self.rows.append([])
            if tag == "td":
                self.rows[-1].append(a.get("data-v"))
            for k in ("src", "href"):
                if k in a and not a[k].startswith("data:"):
                    self.refs.append(a[k])
            if tag in ("script", "link") and ("src" in a or "href" in a):
                self.refs.append(a.get("src") or a.get("href"))

        def handle_endtag(self, tag):
            assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
            self.open.pop()

    w = Walk()
    w.feed(text)
    assert not w.open and w.tables == 2 and not w.refs          # well nested; nothing loaded from outside
    assert len(w.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in w.imgs)
    body = [r for r in w.rows if r]
    assert len(body) == 4                                        # 2 models x (leaderboard, per-corruption)
    ranks = [r[0] for r in body[:2]]
    assert ranks == ["1", "2"] and "th.addEventListener('click'" in text
    for name in ("error_vs_severity", "corruption_bars", "calibration_vs_severity", "reliability"):
        png = (tmp_path / "p" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert board_main([*map(str, files), "--format", "html"]) == 2  # no --out: a clear error, no file


def test_reliability_bins_in_the_results_reproduce_the_ece(results):
    files, *_ = results
    for d in load_results(files):
        for c in d["cells"]:
            r = c["reliability"]
            assert sum(r["count"]) == c["n"]
            ece = sum(n * abs(cf - ac) for n, cf, ac in zip(r["count"], r["confidence"], r["accuracy"], strict=True)
                      if n) / c["n"]
            assert ece == pytest.approx(c["ece"], abs=1e-9)
            acc = sum(n * ac for n, ac in zip(r["count"], r["accuracy"], strict=True) if n) / c["n"]
            assert acc == pytest.approx(1 - c["error"], abs=1e-9)


def test_reported_rows_join_the_ranking_marked_as_such(results, capsys):
    from pathlib import Path

    from robustbench_augmix.zoo import tomllib  # tomli on Python 3.10

    files, *_ = results
    board = leaderboard(load_results(files), reported=True)
    # Expected from the card files themselves: every cifar10 card reporting a mean corruption error,
    # except the one measured here.
    want = {}
    for f in (Path(__file__).parents[1] / "zoo").glob("*.toml"):
        card = tomllib.loads(f.read_text())
        if f.name.endswith(".grid.toml"):  # a paper's grid: one card per cell of its table
            for arch, row in card.get("mean_corruption_error", {}).get("cifar10", {}).items():
                if arch != "mean":
                    want.update({f"{arch}_{m}_cifar10": v for m, v in zip(card["methods"], row, strict=True)})
            continue
        if card["dataset"] == "cifar10" and "mean_corruption_error" in card["reported"] \
                and card["id"] != "wrn40_2_augmix_cifar10":
            want[card["id"]] = card["reported"]["mean_corruption_error"]
    rep = [r for r in board.rows if r["source"] == "reported"]
    assert {r["model"]: r["mean_corruption_error"] for r in rep} == want and len(want) >= 3
    assert all(r["source"] == "measured" for r in board.rows if r["model"] == "wrn40_2_augmix_cifar10")
    # Ranked together by the metric; the untrained measured models come last.
    errs = [r["mean_corruption_error"] for r in board.rows]
    assert errs == sorted(errs) and [r["rank"] for r in board.rows] == list(range(1, len(errs) + 1))
    assert board.notes and "not measured here" in board.notes[0]
    rows = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert [r["source"] for r in rows].count("reported") == len(want)
    per = [line for line in to_markdown(board, per_corruption=True).splitlines() if line.startswith("| ")]
    assert len(per) == 1 + 2  # header + the two measured rows: the cards have no per-corruption numbers
    assert board_main([*map(str, files), "--reported", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| reported |" in out and "Note:" in out
    plain = csv.DictReader(io.StringIO(to_csv(leaderboard(load_results(files)))))
    assert [r["source"] for r in plain] == ["measured", "measured"]


def test_html_report_shows_intervals_and_seeds_and_no_empty_column(results, tmp_path):
    """The 95 % intervals of the result files under their numbers, the corruption seed of every row, and no
    column that is empty in every row (a CIFAR board has no mCE, relative mCE or reported value)."""
    from html.parser import HTMLParser

    files, *_ = results
    docs = load_results(files)
    out = tmp_path / "report.html"
    assert board_main([*map(str, files), "--format", "html", "--out", str(out), "--plots", str(tmp_path / "p")]) == 0
    text = out.read_text()

    class Heads(HTMLParser):
        def __init__(self):
            super().__init__()
            self.heads, self.cis, self._in, self._ci = [[]], [], None, False

        def handle_starttag(self, tag, attrs):
            if tag == "table" and self.heads[-1]:
                self.heads.append([])
            self._in = tag if tag == "th" else self._in
            self._ci = tag == "span" and ("class", "ci") in attrs

        def handle_endtag(self, tag):
            self._in = None if tag == "th" else self._in
            self._ci = False

        def handle_data(self, data):
            if self._in == "th":
                self.heads[-1].append(data)
            if self._ci:
                self.cis.append(data)

    p = Heads()
    p.feed(text)
    board_heads = p.heads[0]
    assert "clean err" in board_heads and "corr. err" in board_heads
    assert not {"mCE", "rel. mCE"} & set(board_heads)           # CIFAR-10-C has no AlexNet baseline
    for d in docs:
        for key in ("clean_error", "mean_corruption_error"):
            lo, hi = (100 * v for v in d["intervals"][key])
            assert f"{lo:.2f}\u2013{hi:.2f}" in p.cis, (key, lo, hi)
    assert "corruption seed 0" in text and "20 replicates" in text and "1 corruption seed on this board" in text


def test_reliability_diagram_keeps_the_clean_curve_in_the_model_colour(results, monkeypatch, tmp_path):
    """A clean set of a few images must still draw (its bins merged up to the minimum), in the same colour as
    the model's lines in the other plots; the corrupted curve is the same colour, dashed."""
    from robustbench_augmix.report import plots

    files, *_ = results
    docs = load_results(files)
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or path)
    plots.reliability(docs, tmp_path / "r.png")
    plots.error_vs_severity(docs, tmp_path / "e.png")
    rel, err = figs
    model_colour = [line.get_color() for line in err.axes[0].get_lines()]   # a line per model, in order
    assert len(set(model_colour)) == len(docs) == 2
    for ax, colour in zip(rel.axes, model_colour, strict=True):
        lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines() if "images" in line.get_label()}
        assert set(lines) == {"clean", "corrupted"}
        assert len(lines["clean"].get_xdata()) >= 1             # 12 clean images: every bin below 10 before
        assert lines["clean"].get_color() == lines["corrupted"].get_color() == colour
        assert lines["clean"].get_linestyle() == "-" and lines["corrupted"].get_linestyle() == "--"


def test_small_reliability_bins_merge_with_their_neighbours():
    from robustbench_augmix.report.plots import merge_small_bins

    # bins of 4, 0, 7, 12 and 3 images, minimum 10: (4 + 7), 12, and the remainder 3 joins the last
    conf, acc, cnt = [0.1, 0.2, 0.3, 0.5, 0.9], [0.0, 0.0, 1.0, 0.5, 1.0], [4, 0, 7, 12, 3]
    got = merge_small_bins(conf, acc, cnt, 10)
    want = [((4 * 0.1 + 7 * 0.3) / 11, 7 / 11, 11), ((12 * 0.5 + 3 * 0.9) / 15, (6 + 3) / 15, 15)]
    assert [g[2] for g in got] == [11, 15]
    assert [v for g in got for v in g] == pytest.approx([v for w in want for v in w])
    one = merge_small_bins(conf, acc, cnt, 100)
    assert list(one[0]) == pytest.approx([sum(c * n for c, n in zip(conf, cnt, strict=True)) / 26, 16 / 26, 26])
    assert len(one) == 1
