"""The ``spear`` command line: ``spear demo``, ``spear attack`` and ``spear audit``.

Options are generated from the settings dataclasses (:mod:`spear.settings`): defaults,
choices and help are declared once, on the fields.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__

#: Errors that are the user's input, printed as one line (anything else is a bug: traceback).
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, PermissionError)


def _add_output_args(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument("--out", default=None, help=f"output folder (default: a new {prefix}-<time> folder)")
    p.add_argument("--overwrite", action="store_true", help="empty a non-empty --out folder first")


def build_parser() -> argparse.ArgumentParser:
    from .audit import AuditConfig
    from .experiment import DEMO, AttackConfig
    from .settings import add_arguments

    parser = argparse.ArgumentParser(
        prog="spear", description="Exact gradient inversion audit of a federated client (SPEAR).")
    parser.add_argument("--version", action="version", version=f"spear {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="attack a simulated client on built-in digits (no files)")
    add_arguments(demo, AttackConfig, only=("batch_size", "seed", "device"), overrides=DEMO)
    _add_output_args(demo, "spear-demo")
    attack = sub.add_parser("attack", help="simulate a client on a dataset, attack K batches, write reports")
    add_arguments(attack, AttackConfig)
    _add_output_args(attack, "spear-out")
    audit = sub.add_parser("audit", help="attack your own model's captured client updates, write reports")
    add_arguments(audit, AuditConfig)
    _add_output_args(audit, "spear-audit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Progress bars only on a terminal: redirected output gets no escape codes.
    progress = sys.stderr.isatty()
    try:
        if args.command == "audit":
            from .audit import AuditConfig, run_audit
            from .settings import from_args

            return run_audit(from_args(AuditConfig, args), args.out, overwrite=args.overwrite, progress=progress)
        from .experiment import DEMO, AttackConfig
        from .settings import from_args

        if args.command == "demo":
            return _run(from_args(AttackConfig, args, base=DEMO),
                        args.out, prefix="spear-demo", overwrite=args.overwrite, progress=False)
        return _run(from_args(AttackConfig, args), args.out, prefix="spear-out", overwrite=args.overwrite,
                    progress=progress)
    except USER_ERRORS as e:
        print(f"spear: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def _run(config, out: str | None, *, prefix: str, overwrite: bool, progress: bool) -> int:
    from tqdm.auto import tqdm

    from . import outdir, report
    from .experiment import Experiment, batch_row, summarize
    from .attack_report import attack_html, what_was_attacked

    if config.batches < 1:
        raise ValueError(f"--batches must be >= 1, got {config.batches}")
    t0 = time.perf_counter()
    exp = Experiment(config)
    out_dir = outdir.prepare(out, prefix, overwrite=overwrite)
    rows, results = [], []
    bar = tqdm(range(config.batches), desc=f"{config.method} on {config.dataset} b={config.batch_size}",
               unit="batch", disable=not progress)
    for i in bar:
        r = exp.run_batch(i, progress=progress)
        rows.append(batch_row(r))
        bar.set_postfix(recovered=f"{rows[-1]['recovered_fraction']:.2f}", certified=str(rows[-1]["certified"]))
        picture = _pictures(exp, r, rows[-1], out_dir)
        results.append((r, rows[-1], picture))
    backend = rows[0]["backend"] if rows else None
    ds = exp.dataset
    summary = summarize(config, rows, {
        "attacked": what_was_attacked(exp),
        "version": __version__, "backend": backend, "device": backend,
        "device_name": _device_name(backend),
        "python": platform.python_version(), "machine": platform.machine(),
        "image_shape": list(ds.sample_shape) if ds.kind == "image" else None,
        "seconds_total": round(time.perf_counter() - t0, 3),
    })
    report.write_json(summary, out_dir / "summary.json")
    report.write_csv(rows, out_dir / "batches.csv")
    attack_html(exp, summary, results, out_dir / "report.html")
    _print_summary(summary, out_dir)
    return 0


def _pictures(exp, r, row, out_dir: Path) -> Path | None:
    from . import metrics, report
    from .attack_report import grid_title

    ds = exp.dataset
    if r.truth_view is not None and ds.kind == "image":
        order = r.scores.get("permutation")
        return report.image_grid(r.recon_view, r.truth_view, out_dir / f"batch_{r.index:03d}.png",
                                 order=order, title=grid_title(exp, r, row))
    if r.truth_view is not None and ds.kind == "tabular":
        report.write_table(r.recon_view, r.truth_view, out_dir / f"batch_{r.index:03d}_rows.csv")
    elif r.reconstruction is not None and r.reconstruction.inputs is not None:   # deeper layer: features, matched, as numbers
        perm = metrics.match(r.reconstruction.inputs, r.truth)
        np_rows = [{"input": i, "matched": int(j), "rel_err": float(e)}
                   for i, (j, e) in enumerate(zip(perm, r.scores.get("rel_err", [])))]
        report.write_csv(np_rows, out_dir / f"batch_{r.index:03d}_features.csv")
    return None


def _device_name(backend: str | None) -> str:
    if backend == "cuda":
        from . import _core

        return _core.cuda_device_name(0)
    return platform.processor() or platform.machine()


def _print_summary(s: dict, out_dir: Path) -> None:
    c = s["config"]
    psnr = "n/a" if s["psnr_mean"] is None else f"{s['psnr_mean']:.1f} dB"
    cnn = c["model"] == "vgg"
    print(f"attacked          {s['attacked']}")
    print(f"method            {c['method']} ({c['model']})")
    print(f"batch size        {s['batch_size']}")
    print(f"batches           {s['batches']}")
    print(f"recovered         {100 * (s['recovered_fraction'] or 0):.1f}% of inputs (median over batches)")
    print(f"mean PSNR         {psnr}" + (" (images by feature inversion: not exact)" if cnn else ""))
    print(f"certified         {100 * s['certified_fraction']:.0f}% of batches"
          + (" (the features, i.e. the head's input; not the images)" if cnn else ""))
    print(f"time per batch    {s['seconds_per_batch']:.2f} s ({s['backend']})")
    print(f"reports           {out_dir}/ (report.html)")


if __name__ == "__main__":
    raise SystemExit(main())
