"""The AugMix paper's layouts of a leaderboard (``rb-leaderboard --layout paper``).

Table 1 (CIFAR-10-C / CIFAR-100-C): rows networks, columns training methods, each cell the measured mean
corruption error with the paper's number beside it, and a mean row. Table 2 (ImageNet-C): rows methods,
columns the clean error, the 15 corruptions' CE and the mCE.

A result finds its cell through its model card: the network is the card's builder, the method the recipe's
(``[recipe] method`` of a card ``rb-train`` wrote, else the zoo recipe the card names). Several results in
one cell (seeds) are averaged and counted. The reported number of a cell is the zoo card of that
(network, method, dataset) (``zoo/cifar_baselines.grid.toml`` and the AugMix cards).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import Board

__all__ = ["PaperTable", "paper_table", "table_to_latex", "table_to_markdown", "table_to_rich"]

# The paper's row names for its networks (Table 1), and their order; other networks follow, by builder.
ARCH_ROWS = {"allconv": "AllConvNet", "densenet40_12": "DenseNet", "wrn40_2": "WideResNet",
             "resnext29_4x32d": "ResNeXt", "resnet50": "ResNet-50"}


@dataclass
class PaperTable:
    """One paper-style table. ``cells[(row, column)] = (measured, reported, n)``: the mean of the ``n``
    measured results in that cell (None: none), and the paper's number (None: not published)."""

    title: str
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], tuple[float | None, float | None, int]]
    mean_row: bool = True
    notes: list[str] = field(default_factory=list)
    protocol: str = ""

    def mean(self, column: str) -> tuple[float | None, float | None]:
        """The column's mean over its rows, measured and reported, each only when every row has one."""
        ms = [self.cells.get((r, column), (None, None, 0)) for r in self.rows]
        meas = [m for m, _, _ in ms if m is not None]
        rep = [p for _, p, _ in ms if p is not None]
        return (sum(meas) / len(meas) if meas and len(meas) == len(ms) else None,
                sum(rep) / len(rep) if rep and len(rep) == len(ms) else None)


def _card_of(doc: Mapping):
    """The model card of a result (the card file it used, else the zoo card of its id), or None."""
    from ..zoo import get_card

    model = doc["model"]
    for name in (model.get("card"), model["id"]):
        try:
            return get_card(str(name)) if name else None
        except ValueError:
            continue
    return None


def _method_of(card) -> tuple[str | None, str | None]:
    """``(network, method)`` of a card; the method None when the card names no recipe of ours."""
    from ..recipes import load_recipe, recipes

    if card is None:
        return None, None
    method = card.recipe.get("method")
    rid = card.recipe.get("recipe_id") or card.recipe.get("id")
    if method is None and rid in recipes():
        method = load_recipe(rid).method
    return card.builder.split(":", 1)[-1], method


def _reported_cell(arch: str, method: str, dataset: str, metric: str) -> float | None:
    from ..zoo import _cards

    card = _cards().get(f"{arch}_{method.replace('-', '_')}_{dataset}")
    return None if card is None else card.reported.get(metric)


def paper_table(board: Board, docs: Sequence[dict]) -> PaperTable:
    """The board's results laid out as the paper's Table 1 (a CIFAR or digits suite) or Table 2 (ImageNet-C).

    Only measured rows are placed (the board's reported rows are the cells' parenthesised numbers)."""
    from ..baselines import METHODS
    from ..corruptions import load_suite

    suite = load_suite(docs[0]["suite"]["id"])
    by_file = {d["_path"]: d for d in docs}
    placed: dict[tuple[str, str], list[dict]] = {}
    notes, t2, changed = [], [], []
    for r in board.rows:
        if r["source"] != "measured":
            continue
        card = _card_of(by_file[r["file"]])
        arch, method = _method_of(card)
        if suite.id == "imagenet-c":
            t2.append((r, card, method))
            continue
        if method is None:
            notes.append(f"{r['model']}: its card names no training method, so it has no cell "
                         "(train it with rb-train, or evaluate a zoo card of the grid)")
            continue
        placed.setdefault((arch, method), []).append(r)
        # a trained card whose recipe has a paper number but did not carry it: the recipe was changed
        if card is not None and card.recipe.get("card") and "reproduces" not in card.reported:
            changed.append(r["model"])
    if changed:
        notes.append(f"{', '.join(sorted(set(changed)))}: trained with a changed recipe or a --limit (its card.toml "
                     "says which), so the paper's number is for another run than this one")
    if suite.id == "imagenet-c":
        return dataclasses.replace(_table2(t2, suite), protocol=board.protocol)
    order = list(METHODS)
    methods = sorted({m for _, m in placed}, key=lambda m: order.index(m) if m in order else len(order))
    label = {m: METHODS[m].label if m in METHODS else m for m in methods}
    dataset = suite.dataset
    archs = sorted({a for a, _ in placed}, key=lambda a: (list(ARCH_ROWS).index(a) if a in ARCH_ROWS else 99, a))
    cells = {}
    for (arch, method), rs in placed.items():
        vals = [x["mean_corruption_error"] for x in rs if x["mean_corruption_error"] is not None]
        cells[(ARCH_ROWS.get(arch, arch), label[method])] = (
            sum(vals) / len(vals) if vals else None, _reported_cell(arch, method, dataset, "mean_corruption_error"),
            len(vals))
    return PaperTable(title=f"{suite.id}: mean corruption error (%), the layout of AugMix Table 1",
                      rows=[ARCH_ROWS.get(a, a) for a in archs], columns=[label[m] for m in methods], cells=cells,
                      notes=notes, protocol=board.protocol)


def _table2(placed: list[tuple[dict, object, str | None]], suite) -> PaperTable:
    """Rows one per result (named by its method when its card names one, else by the model), columns the
    clean error, the corruptions' CE and the mCE; the reported numbers are the card's paper ones (Table 2's
    ``paper_*`` when the card keeps them apart from its own source's)."""
    from ..baselines import METHODS

    corr = suite.names()
    cols = ["clean err", *corr, "mCE"]
    rows, cells = [], {}
    for r, card, method in placed:
        row = METHODS[method].label if method in METHODS else r["model"]
        row = row if row not in rows else f"{row} ({r['model']})"
        rows.append(row)
        rep = {} if card is None else card.reported
        for col, key in (("clean err", "clean_error"), ("mCE", "mce")):
            cells[(row, col)] = (r[key], rep.get(f"paper_{key}", rep.get(key)), 1)
        paper_ce = rep.get("paper_ce", {})  # Table 2's row, per corruption
        for c in corr:
            cells[(row, c)] = (r["per_corruption"].get(c), paper_ce.get(c), 1)
    return PaperTable(title="imagenet-c: CE (%, AlexNet-normalised) per corruption, the layout of AugMix Table 2",
                      rows=rows, columns=cols, cells=cells, mean_row=False)


def _cell_text(measured: float | None, reported: float | None, n: int) -> str:
    """``11.42 (11.2, +0.22)``: measured, then the paper's number and the difference; ``- (11.2)`` when only
    the paper has it; ``x3`` marks a mean over three results."""
    if measured is None and reported is None:
        return ""
    m = "-" if measured is None else f"{measured:.2f}" + (f" x{n}" if n > 1 else "")
    if reported is None:
        return m
    d = "" if measured is None else f", {measured - reported:+.2f}"
    return f"{m} ({reported:g}{d})"


def _grid(t: PaperTable, sep: str = " ") -> tuple[list[str], list[list[str]]]:
    """Head and rows of text; ``sep`` goes between the measured number and the parenthesis (a newline in
    the terminal keeps cells narrow)."""
    head = ["", *t.columns]
    body = [[r, *(_cell_text(*t.cells.get((r, c), (None, None, 0))).replace(" (", sep + "(") for c in t.columns)]
            for r in t.rows]
    if t.mean_row and len(t.rows) > 1:
        means = [t.mean(c) for c in t.columns]
        body.append(["Mean", *(_cell_text(m, p, 1).replace(" (", sep + "(") if m is not None or p is not None
                               else "" for m, p in means)])
    return head, body


def table_to_markdown(t: PaperTable) -> str:
    head, body = _grid(t)
    lines = [f"**{t.title}**; each cell: measured (reported, measured - reported)", "",
             f"Protocol: {t.protocol}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c or " " for c in row) + " |" for row in body]
    lines += [f"Note: {n}" for n in t.notes]
    return "\n".join(lines)


def table_to_latex(t: PaperTable) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    head, body = _grid(t)
    out = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
           " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    for i, row in enumerate(body):
        if t.mean_row and row[0] == "Mean" and i == len(body) - 1:
            out.append(r"\midrule")
        out.append(" & ".join(esc(c) for c in row) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out)


def table_to_rich(t: PaperTable):
    from rich.markup import escape
    from rich.table import Table

    head, body = _grid(t, "\n")
    tab = Table(title=escape(t.title), caption="cell: measured (reported, measured - reported); xN: mean of N runs"
                + f"\nprotocol: {escape(t.protocol)}" + "".join(f"\nnote: {escape(n)}" for n in t.notes))
    for i, h in enumerate(head):
        tab.add_column(escape(h), justify="left" if i == 0 else "right", overflow="fold")
    for row in body:
        tab.add_row(*map(escape, row), end_section=False)
    return tab


def table_section(t: PaperTable) -> tuple[str, str, list[str], list[list[str]]]:
    """The table as a section of the HTML report (:func:`~robustbench_augmix.report.html.render`)."""
    head, body = _grid(t)
    return (t.title, "Each cell: measured (reported, measured - reported); xN: the mean of N results. "
            f"Protocol: {t.protocol}. " + " ".join(t.notes), head, body)

