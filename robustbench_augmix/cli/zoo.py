"""rb-zoo: the model cards: list them, show one, fetch and verify weights ahead of an offline run."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

EXAMPLES = """examples:
  rb-zoo list                      # every card
  rb-zoo list 'resnet*'            # shell-style pattern
  rb-zoo list --dataset cifar10
  rb-zoo show resnet50_augmix      # the whole card
  rb-zoo download resnet50_augmix  # into the torch hub cache, sha256-checked
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rb-zoo", description=__doc__, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["list", "show", "download"])
    ap.add_argument("name", nargs="?", default=None, help="card id (list: a pattern)")
    ap.add_argument("--dataset", help="list: only cards of this dataset")
    args = ap.parse_args(argv)
    out, err = Console(), Console(stderr=True, soft_wrap=True)
    from .._common import RBAError
    from ..zoo import cards, get_card, resolve_weights, torch_hub_dir

    if args.what == "list":
        # Below 110 columns (pipes count as 80) the architecture and parameter count are left out, so that
        # ids and numbers stay whole; rb-zoo show has everything.
        narrow = out.width < 110
        heads = [h for h in ("id", "dataset", "architecture", "params", "clean err", "corr. err / mCE", "weights")
                 if not (narrow and h in ("architecture", "params"))]
        short = {"clean err": "clean", "corr. err / mCE": "corr/mCE"} if narrow else {}
        from rich import box

        t = Table(title="model cards (reported numbers in %, from the card's citation)",
                  box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD, pad_edge=not narrow,
                  collapse_padding=narrow)
        for h in heads:
            numeric = h in ("params", "clean err", "corr. err / mCE")
            t.add_column(short.get(h, h), justify="right" if numeric else "left", no_wrap=h != "architecture",
                         overflow="fold")
        for c in cards(args.name or "*", args.dataset):
            r = c.reported
            ce = r.get("mce", r.get("mean_corruption_error"))
            file = c.weights.get("file")
            if c.has_weights:
                state = "cached" if file and (torch_hub_dir() / file).is_file() else "downloadable"
            else:
                w = c.weights
                state = "rb-train" if w.get("train_recipe") else "by hand" if w.get("manual_url") else "none"
            row = {"id": c.id, "dataset": c.dataset, "architecture": c.builder, "params": f"{c.params / 1e6:.1f}M",
                   "clean err": "-" if r.get("clean_error") is None else f"{r['clean_error']:.1f}",
                   "corr. err / mCE": "-" if ce is None else f"{ce:.1f}" + (" mCE" if "mce" in r else ""),
                   "weights": state}
            t.add_row(*(row[h] for h in heads))
        out.print(t)
        return 0
    if not args.name:
        err.print(f"[red]rb-zoo:[/] {args.what} needs a card id (rb-zoo list shows them)")
        return 2
    try:
        card = get_card(args.name)
    except RBAError as e:
        err.print(f"[red]rb-zoo:[/] {e}")
        return 2
    if args.what == "show":
        out.print(f"[bold]{card.id}[/]: {card.name}  ({card.path})")
        for key in ("dataset", "num_classes", "builder", "params", "note"):
            out.print(f"  {key}: {getattr(card, key)}")
        for sec in ("weights", "preprocess", "recipe", "reported"):
            out.print(f"  [{sec}]", markup=False, highlight=False)
            for k, v in getattr(card, sec).items():
                out.print(f"    {k}: {v}", markup=False)
        if card.train_command:
            out.print(f"  to produce the weights: {card.train_command}", markup=False)
        return 0
    try:
        path = resolve_weights(card)
    except RBAError as e:
        err.print(f"[red]rb-zoo:[/] {e}")
        return 2
    out.print(f"{card.id}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
