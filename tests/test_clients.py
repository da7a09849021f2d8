"""What users and real clients hit (issue #20): the reference package's call convention, listings that
print every name, and a one-line error for a GPU that is not there."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import photo

import robustbench_augmix as rba


def test_rb_corrupt_list_prints_the_extra_corruptions(capsys):
    from robustbench_augmix.cli.corrupt import main

    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "[speckle_noise]" in out and "[saturate]" in out and ", , ," not in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    from robustbench_augmix.cli.bench import main as bench_main
    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.cli.eval import main as eval_main
    from robustbench_augmix.cli.train import main as train_main

    assert eval_main(["--arch", "cifar:smallcnn", "--checkpoint", "x.pt", "--device", "cuda"]) == 2
    assert train_main(["--recipe", "digits-smallcnn-standard", "--out", str(tmp_path / "t"), "--device", "cuda"]) == 2
    assert corrupt_main(["--suite", "cifar10-c", "--data", ".", "--out", str(tmp_path / "c"), "--device", "cuda"]) == 2
    assert bench_main(["corruptions", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("no CUDA device is visible here") == 4 and "Traceback" not in err
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


def test_shards_are_counted_from_zero(capsys):
    from robustbench_augmix.cli.corrupt import main

    assert main(["--suite", "cifar10-c", "--data", ".", "--out", "x", "--shard", "4/4"]) == 2
    assert "counted from 0" in capsys.readouterr().err


def test_different_protocols_never_share_a_result_file(tmp_path, capsys):
    """The README's first two rb-eval lines (on the fly, then from files) in one --out: two results, no
    refusal; and a refusal for other weights under one name says so without the factory-seeding hint."""
    import json
    import textwrap

    from conftest import write_cifar

    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.cli.eval import main as eval_main

    imgs = np.stack([photo(i % 5, 32) for i in range(10)])
    root = write_cifar(tmp_path / "cifar", imgs, list(range(10)))
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import torch
        def build():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    """))
    assert corrupt_main(["--suite", "cifar10-c", "--data", str(root), "--out", str(tmp_path / "C"),
                         "--corruptions", "fog"]) == 0
    common = ["--model", f"{tmp_path / 'm.py'}:build", "--suite", "cifar10-c", "--corruptions", "fog",
              "--out", str(tmp_path / "results"), "--no-progress", "--bootstrap", "0"]
    assert eval_main([*common, "--data", str(root)]) == 0
    assert eval_main([*common, "--source", "official", "--data", str(tmp_path / "C"), "--clean-data", str(root)]) == 0
    assert eval_main([*common, "--data", str(root), "--seed", "3", "--limit", "5"]) == 0
    names = sorted(p.name for p in (tmp_path / "results").glob("*.json"))
    assert names == ["m.build__cifar10-c.json", "m.build__cifar10-c__official.json",
                     "m.build__cifar10-c__seed3__first5.json"]
    assert json.loads((tmp_path / "results" / names[1]).read_text())["data"]["source"] == "official"
    capsys.readouterr()
    torch.manual_seed(1)
    ck = tmp_path / "w.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)).state_dict(), ck)
    base = ["--corruptions", "fog", "--data", str(root), "--out", str(tmp_path / "results"), "--name", "same",
            "--no-progress", "--bootstrap", "0"]
    assert eval_main(["--model", f"{tmp_path / 'm.py'}:build", *base]) == 0
    assert eval_main(["--model", f"{tmp_path / 'm.py'}:build", "--checkpoint", str(ck), *base]) == 2
    err = capsys.readouterr().err
    assert "another checkpoint or card" in err and "must seed them" not in err


def test_imagefolder_cells_mirror_every_class_folder_and_limits_round_trip(tmp_path, capsys):
    """An empty source class and --limit: every cell still has every class folder (as the released
    ImageNet-C has all 1,000), the manifest lists the classes, and rb-eval --source official --limit reads
    the tree back with the right labels."""
    import json
    import textwrap

    from PIL import Image

    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.cli.eval import main as eval_main

    src = tmp_path / "val"
    for ci, cls in enumerate(["n01", "n02", "n03", "n04"]):
        (src / cls).mkdir(parents=True)
        if cls != "n03":  # an empty class
            for k in range(2):
                Image.fromarray(photo(ci + k, 64)).save(src / cls / f"{cls}_{k}.JPEG")
    out = tmp_path / "C"
    assert corrupt_main(["--suite", "tinyimagenet-c", "--data", str(src), "--out", str(out), "--corruptions",
                         "contrast", "--severities", "1", "--limit", "3"]) == 0
    assert sorted(p.name for p in (out / "contrast" / "1").iterdir()) == ["n01", "n02", "n03", "n04"]
    assert json.loads((out / "manifest.json").read_text())["classes"] == ["n01", "n02", "n03", "n04"]
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import torch
        def build():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 4))
    """))
    common = ["--model", f"{tmp_path / 'm.py'}:build", "--suite", "tinyimagenet-c", "--corruptions", "contrast",
              "--severities", "1", "--out", str(tmp_path / "r"), "--no-progress", "--bootstrap", "0"]
    assert eval_main([*common, "--source", "official", "--data", str(out), "--clean-data", str(src)]) == 2
    assert "pass --limit 3" in capsys.readouterr().err
    assert eval_main([*common, "--source", "official", "--data", str(out), "--clean-data", str(src),
                      "--limit", "3"]) == 0
    assert eval_main([*common, "--data", str(src), "--limit", "3"]) == 0
    a, b = (json.loads(p.read_text()) for p in sorted((tmp_path / "r").glob("*.json")))
    assert a["data"]["n_images"] == b["data"]["n_images"] == 3
    assert [c["correct"] for c in a["cells"]] == [c["correct"] for c in b["cells"]]


def test_two_sources_with_one_stem_are_refused_before_writing(tmp_path, capsys):
    from PIL import Image

    from robustbench_augmix.cli.corrupt import main as corrupt_main

    src = tmp_path / "val" / "n01"
    src.mkdir(parents=True)
    Image.fromarray(photo(0, 64)).save(src / "x.png")
    Image.fromarray(photo(1, 64)).save(src / "x.jpg")
    Image.fromarray(photo(2, 64)).save(src / "y.png")
    assert corrupt_main(["--suite", "tinyimagenet-c", "--data", str(tmp_path / "val"), "--out", str(tmp_path / "C"),
                         "--corruptions", "contrast", "--severities", "1"]) == 2
    err = capsys.readouterr().err
    assert "n01/x.jpg and n01/x.png" in err and "same file" in err
    assert not (tmp_path / "C").exists()


def test_reported_numbers_join_only_a_board_of_their_dataset(tmp_path):
    """The digits demo models are scored with the CIFAR-10-C tables but are digits models: the CIFAR-10
    papers' numbers do not join their board; a CIFAR-10 result's board gets them."""
    from conftest import card_toml

    from robustbench_augmix.data.sources import ArraySource
    from robustbench_augmix.report import leaderboard, load_results

    card = tmp_path / "card.toml"
    card.write_text(card_toml("digits-run", dataset="digits"))
    imgs = np.stack([photo(i % 5, 32) for i in range(8)])
    data = ArraySource(imgs, np.arange(8) % 10)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
    kw = dict(corruptions=["fog"], severities=[1], progress=False, n_boot=0, out=str(tmp_path / "r"))
    rba.evaluate(net, "cifar10-c", data, model_info={"id": "digits-run", "card": str(card)}, name="d", **kw)
    rba.evaluate(net, "cifar10-c", data, model_info={"id": "mine"}, name="c", **kw)
    board = leaderboard(load_results([tmp_path / "r" / "d.json"]), reported=True)
    assert [r["source"] for r in board.rows] == ["measured"]
    assert any("digits models" in n for n in board.notes)
    board = leaderboard(load_results([tmp_path / "r" / "c.json"]), reported=True)
    assert "reported" in [r["source"] for r in board.rows]


def test_terminal_tables_stay_readable_at_80_columns(tmp_path):
    """rb-leaderboard at 80 columns (a pipe's width): every clean and corruption error is printed whole on
    its row; rb-zoo list keeps whole ids."""
    import io

    from rich.console import Console

    from robustbench_augmix.cli.zoo import main as zoo_main
    from robustbench_augmix.data.sources import ArraySource
    from robustbench_augmix.report import leaderboard, load_results, to_rich

    imgs = np.stack([photo(i % 5, 32) for i in range(8)])
    data = ArraySource(imgs, np.arange(8) % 10)
    paths = []
    for k in range(3):
        torch.manual_seed(k)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10))
        name = f"a-rather-long-model-name-number-{k}-augmix-seed{k}"
        res = rba.evaluate(net, "cifar10-c", data, model_info={"id": name, "builder": "timm:resnet18"},
                           progress=False, n_boot=0, out=str(tmp_path / "r"), name=name)
        paths.append(res.path)
    board = leaderboard(load_results(paths))
    buf = io.StringIO()
    con = Console(file=buf, width=80, color_system=None)
    con.print(to_rich(board, width=80))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for r in board.rows:
        for key in ("clean_error", "mean_corruption_error"):
            assert f"{r[key]:.2f}" in text, (key, r[key])
    assert "mCE" not in text.split("\n", 3)[2], "an always-empty mCE column on a CIFAR board"
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        assert zoo_main(["list"]) == 0
    from robustbench_augmix.zoo import cards

    listing = out.getvalue()
    assert "…" not in listing and max(len(line) for line in listing.splitlines()) <= 80
    assert all(c.id in listing for c in cards())


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "/x/th"}, {"XDG_CACHE_HOME": "/x/xdg"}])
def test_the_hub_folder_is_found_as_torch_finds_it(monkeypatch, env):
    """rb-zoo list works out the torch hub folder without importing torch; it must be torch's own."""
    import torch.hub

    from robustbench_augmix.zoo import _hub_dir_from_environment

    for k in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert str(_hub_dir_from_environment()) == torch.hub.get_dir()


_LISTINGS = [("corrupt", ["--list"]), ("zoo", ["list"]), ("zoo", ["show", "resnet50"]), ("train", ["--list"])] + [
    (cli, ["--help"]) for cli in ("corrupt", "eval", "zoo", "train", "bench", "demo", "leaderboard")]


@pytest.mark.parametrize(("cli", "argv"), _LISTINGS, ids=[f"rb-{c} {' '.join(a)}" for c, a in _LISTINGS])
def test_listings_and_help_do_not_import_torch(cli, argv):
    """#22 item 3: listings and help answer from the tables and cards alone (torch takes seconds to import)."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io\n"
            f"from robustbench_augmix.cli.{cli} import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n"
            f"        rc = main({argv!r})\n"
            "    except SystemExit as e:\n"
            "        rc = e.code\n"
            "heavy = sorted(m for m in ('torch', 'scipy', 'PIL', 'numpy', 'timm', 'torchvision') if m in sys.modules)\n"
            "print(rc or 0, len(out.getvalue()), ','.join(heavy) or '-')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    rc, printed, heavy = r.stdout.split()
    assert (rc, heavy) == ("0", "-"), f"rb-{cli} {' '.join(argv)} exited {rc} having imported {heavy}"
    assert int(printed) > 100


def test_rms_calibration_error_does_not_depend_on_input_order_under_ties():
    """Ties in confidence (float32 1.0 for a quarter of the samples): the value is the same for every
    permutation of the samples, with and without the reference's quirk; the reference's own depends on it."""
    from robustbench_augmix import metrics

    rng = np.random.default_rng(0)
    n = 10_000
    conf = rng.uniform(0.3, 1.0, n).astype(np.float32)
    conf[: n // 4] = 1.0                  # over-confident ties: one in ten of them is wrong
    conf[n // 4 : n // 4 + 150] = 0.55    # a tie that straddles two bins
    correct = rng.random(n) < np.where(conf == 1.0, 0.9, conf)
    for quirk in (False, True):
        base = metrics.rms_calibration_error(conf, correct, reference_quirk=quirk)
        for seed in range(3):
            p = np.random.default_rng(seed).permutation(n)
            assert metrics.rms_calibration_error(conf[p], correct[p], reference_quirk=quirk) == base


def test_the_gallery_says_which_out_of_order_tiles_are_faithful(tmp_path, capsys):
    """ImageNet-C's elastic severity 2 looks harsher than 3 and 4 because its table makes it so: the published
    AlexNet errors (Hendrycks & Dietterich, table of CE weights) are 70.1 % at s2 against 55.7 % and 64.1 %.
    The gallery's caption and rb-corrupt say so; suites without those errors get no caption."""
    from PIL import Image

    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.corruptions import load_suite
    from robustbench_augmix.gallery import harsher_earlier

    notes = harsher_earlier(load_suite("imagenet-c"))
    elastic = [n for n in notes if n.startswith("elastic_transform:")]
    assert len(elastic) == 1 and "severity 2 is harsher than 3, 4" in elastic[0] and "70.1" in elastic[0]
    assert harsher_earlier(load_suite("cifar10-c")) == []
    out = tmp_path / "g.png"
    assert corrupt_main(["--gallery", str(out), "--suite", "imagenet-c", "--image", str(_photo_file(tmp_path))]) == 0
    printed = "".join(capsys.readouterr())
    assert "faithful:" in printed and "elastic_transform: severity 2" in printed
    small = tmp_path / "c.png"
    assert corrupt_main(["--gallery", str(small), "--suite", "cifar10-c"]) == 0
    n_in, n_c = len(load_suite("imagenet-c").names(extra=True)), len(load_suite("cifar10-c").names(extra=True))
    # rows of (tile + 4 px) under a 20-px header; ImageNet-C adds a 14-px caption line per note, plus 6 px
    h_in, h_c = Image.open(out).size[1], Image.open(small).size[1]
    assert h_c == 20 + n_c * 132 + 6 and h_in == 20 + n_in * 228 + 14 * len(notes) + 6


def _photo_file(tmp_path):
    from PIL import Image

    p = tmp_path / "photo.png"
    Image.fromarray(photo(0, 224)).save(p)
    return p


def test_rb_bench_tables_stay_readable_at_80_columns():
    """rb-bench's three tables rendered at 80 columns (a pipe's width): every corruption id and every number
    printed whole on one line, nothing cut to an ellipsis."""
    import io

    from rich.console import Console

    from robustbench_augmix.bench import STARTUP_COMMANDS
    from robustbench_augmix.cli.bench import _contention_table, _eval_table, _startup_table, _table, _train_table

    names = rba.corruption_names(extra=True)
    rows = [{"corruption": n, "size": s, "extra": n not in rba.corruption_names(), "reference_ms": 12.3456 * (k + 1),
             "ours_ms": 1.2345 * (k + 1)} for k, n in enumerate(names) for s in (224, 32)]
    ev = {"rows": [{"corruption": n, "inference_ms": 101.234, "on_the_fly_ms": 123.456, "overhead": 0.2195,
                    "corrupt_ms": 22.222} for n in names],
          "inference_ms": 101.234, "on_the_fly_ms": 123.456, "overhead": 0.2195, "corrupt_ms": 22.222,
          "corrupt_share": 0.2195, "model": "torchvision:resnet50", "suite": "imagenet-c", "device": "cpu",
          "batch": 128, "severity": 3}
    tr = {"per_image_ms": 1.234, "batched_host_ms": 0.123, "batched_device_ms": 0.456, "batched_ms": 0.579,
          "step_ms": 12.345, "speedup": 2.1, "aug_share_of_step": 0.037, "aug_share_of_step_with_host": 0.047,
          "arch": "cifar:wrn40_2", "size": 32, "batch": 128, "severity": 3, "device": "cpu", "threads": 2}
    co = [{"corruption": n, "size": 224, "extra": n not in rba.corruption_names(), "busy": 2, "threads": 2,
           "ours_quiet_ms": 10.123, "ours_busy_ms": 20.246, "ours_slowdown": 2.0, "reference_quiet_ms": 300.5,
           "reference_busy_ms": 901.5, "reference_slowdown": 3.0} for n in names]
    st = [{"command": f"rb-{c} {a}", "runs": 5, "wall_s": 0.2345, "wall_max_s": 0.3456, "imports_torch": False}
          for c, a in STARTUP_COMMANDS]
    for table, must in ((_startup_table(st, md=False), [*(r["command"] for r in st), "0.234", "0.346", "5 runs"]),
                        (_contention_table(co, md=False), [*names, "10.12", "20.25", "2.0x", "300.5", "901.5", "3.0x",
                                                           "4508", "13522"]),
                        (_table(rows, md=False), [*names, "12.346", "1.234", "10.0x", "1481.47", "148.14"]),
                        (_eval_table(ev, md=False), [*names, "101.234", "123.456", "+22%", " 22% │", "batch 128"]),
                        (_train_table(tr, md=False), ["1.234", "12.345", "cifar:wrn40_2 (3 views)"])):
        buf = io.StringIO()
        Console(file=buf, width=80, color_system=None).print(table, crop=False)   # a wider table shows as such
        lines = buf.getvalue().splitlines()
        assert max(map(len, lines)) <= 80 and "…" not in buf.getvalue()
        for m in must:
            assert any(m in line for line in lines), m


def _robustbench_data():
    """RobustBench's own loaders (``pip install robustbench``; an optional client, not a dependency)."""
    try:
        import robustbench.data as rbd
    except Exception as e:  # noqa: BLE001 - any import failure means the client is not usable here
        pytest.skip(f"robustbench is not installed (pip install robustbench==1.1.1 to run this client test): {e}")
    return rbd


def test_robustbench_load_cifar10c_reads_what_rb_corrupt_writes(tmp_path):
    """RobustBench 1.1.1's load_cifar10c on rb-corrupt's CIFAR-10-C files: the labels of the source and, at each
    severity, the images our kernel gives (it slices 10,000 images per severity, so the source has 10,000)."""
    rbd = _robustbench_data()
    from robustbench_augmix.cli.corrupt import main as corrupt_main
    from robustbench_augmix.data.sources import write_cifar

    rng = np.random.default_rng(0)
    imgs = np.stack([photo(i % 5, 32) for i in range(10_000)])
    imgs = np.clip(imgs.astype(np.int16) + rng.integers(-8, 9, imgs.shape), 0, 255).astype(np.uint8)
    labels = rng.integers(0, 10, 10_000)
    write_cifar(tmp_path / "src", imgs, labels)
    assert corrupt_main(["--suite", "cifar10-c", "--data", str(tmp_path / "src"), "--out",
                         str(tmp_path / "data" / "CIFAR-10-C"), "--corruptions", "brightness"]) == 0
    pick = [0, 1, 4_321, 9_999]
    for sev in range(1, 6):
        x, y = rbd.load_cifar10c(10_000, sev, str(tmp_path / "data"), corruptions=["brightness"])
        assert y.tolist() == labels.tolist()
        want = np.stack([rba.corrupt(imgs[i], "brightness", sev, suite="cifar10-c") for i in pick])
        assert np.array_equal((x[pick] * 255).round().byte().permute(0, 2, 3, 1).numpy(), want), sev


def test_robustbench_load_imagenetc_reads_what_rb_corrupt_writes(tmp_path):
    """RobustBench 1.1.1's load_imagenetc on an rb-corrupt ImageNet-C cell made from a source tree of its own
    5,000-image list (997 classes) and 3 classes that list lacks, with images for the first 8 entries only:
    the labels it reads are the source's (sorted folder index), because every class folder is mirrored."""
    rbd = _robustbench_data()
    from importlib.resources import files

    from PIL import Image

    from robustbench_augmix.cli.corrupt import main as corrupt_main

    listed = files("robustbench").joinpath("helper_files/imagenet_test_image_ids.txt").read_text().split()
    wnids = sorted({p.split("/")[0] for p in listed} | {"n00000001", "n00000002", "n99999999"})
    src = tmp_path / "val"
    for w in wnids:
        (src / w).mkdir(parents=True)
    for k, rel in enumerate(listed[:8]):
        Image.fromarray(photo(k, 256)).save(src / rel, quality=95)
    out = tmp_path / "data" / "ImageNet-C"
    assert corrupt_main(["--suite", "imagenet-c", "--data", str(src), "--out", str(out), "--corruptions", "contrast",
                         "--severities", "3"]) == 0
    x, y = rbd.load_imagenetc(8, 3, str(tmp_path / "data"), corruptions=["contrast"])
    assert y.tolist() == [wnids.index(rel.split("/")[0]) for rel in listed[:8]]
    for k, rel in enumerate(listed[:8]):
        mine = np.asarray(Image.open(out / "contrast" / "3" / rel).convert("RGB"))
        assert np.array_equal((x[k] * 255).round().byte().permute(1, 2, 0).numpy(), mine)
