"""rb-leaderboard: one comparison table from many rb-eval result files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

EXAMPLES = """examples:
  rb-leaderboard results/*.json
  rb-leaderboard results/*.json --format markdown --per-corruption
  rb-leaderboard results/*.json --reported                              # + the zoo's papers' numbers
  rb-leaderboard results/*.json --layout paper                          # AugMix Table 1 (CIFAR) / Table 2 (ImageNet)
  rb-leaderboard results/*.json --format csv > board.csv
  rb-leaderboard results/*.json --format html --out report.html       # one offline file, plots embedded
  rb-leaderboard results/*.json --plots report/                         # PNG plots into report/
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rb-leaderboard", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="result JSON files written by rb-eval")
    ap.add_argument("--format", choices=["terminal", "markdown", "csv", "latex", "html"], default="terminal")
    ap.add_argument("--layout", choices=["board", "paper"], default="board",
                    help="board: one row per result, ranked; paper: the AugMix paper's layout (CIFAR: networks x "
                         "training methods, each cell measured (reported, delta), a mean row; ImageNet-C: methods x "
                         "corruptions with clean error and mCE)")
    ap.add_argument("--per-corruption", action="store_true", help="the paper-style table: one column per corruption")
    ap.add_argument("--wide", action="store_true",
                    help="terminal format: every column, however narrow the terminal (default: below 110 columns "
                         "the architecture, parameters and source columns are left out; use --format csv for all)")
    ap.add_argument("--allow-mixed", action="store_true", help="rank results of different protocols together")
    ap.add_argument("--reported", action="store_true",
                    help="add the zoo cards of this dataset that were not measured, with their papers' numbers "
                         "(marked 'reported')")
    ap.add_argument("--out", help="write to this file instead of stdout (needed for --format html)")
    ap.add_argument("--plots", help="also write the plots as PNG files into this folder")
    ap.add_argument("--title", default="Robustness report", help="HTML report title")
    args = ap.parse_args(argv)
    err = Console(stderr=True, soft_wrap=True)
    from .._common import InputError, RBAError, storage_errors
    from ..report import leaderboard, load_results

    try:
        docs = load_results(args.results)
        board = leaderboard(docs, allow_mixed=args.allow_mixed, reported=args.reported)
        if args.format == "html" and not args.out:
            raise InputError("--format html writes a file: pass --out report.html")
    except RBAError as e:
        err.print(f"[bold red]rb-leaderboard:[/] {e}")
        return 2
    try:
        with storage_errors(args.out or args.plots, lambda: None):
            return _write(args, board, docs, err)
    except RBAError as e:
        err.print(f"[bold red]rb-leaderboard:[/] {e}")
        return 2


def _write(args, board, docs, err) -> int:
    from ..report import to_csv, to_latex, to_markdown, to_rich

    if args.layout == "paper":
        return _write_paper(args, board, docs, err)
    plots = None
    if args.plots:
        from ..report.html import ordered
        from ..report.plots import write_plots

        plots = write_plots(ordered(board, docs), args.plots)
        err.print(f"plots: {', '.join(str(p) for p in plots.values())}")
    if args.format == "html":
        from ..report.html import write_html

        err.print(f"wrote {write_html(board, docs, args.out, plots, args.title)}")
        return 0
    if args.format == "terminal":
        console = Console(file=open(args.out, "w") if args.out else None)
        console.print(to_rich(board, width=console.width, wide=args.wide))
        return 0
    text = {"markdown": lambda: to_markdown(board, args.per_corruption), "csv": lambda: to_csv(board),
            "latex": lambda: to_latex(board)}[args.format]()
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


def _write_paper(args, board, docs, err) -> int:
    import csv
    import io

    from ..report import paper

    table = paper.paper_table(board, docs)
    if args.format == "html":
        from ..report.html import write_html

        err.print(f"wrote {write_html(board, docs, args.out, None, args.title, [paper.table_section(table)])}")
        return 0
    if args.format == "terminal":
        console = Console(file=open(args.out, "w") if args.out else None)
        console.print(paper.table_to_rich(table))
        return 0
    if args.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["row", "column", "measured", "reported", "n"])
        for (r, c), (m, p, n) in table.cells.items():
            w.writerow([r, c, m, p, n])
        text = buf.getvalue().rstrip("\n")
    else:
        text = {"markdown": paper.table_to_markdown, "latex": paper.table_to_latex}[args.format](table)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
