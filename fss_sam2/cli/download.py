"""`fss-sam2 download NAME [NAME ...] [--out DIR]`: the official weights and raw datasets, verified."""
from __future__ import annotations

import argparse
import sys

from .. import download as dl
from . import arguments as arg


def _download_command(a: argparse.Namespace) -> int:
    if a.list:
        print(dl.format_listing())
        return 0
    if not a.names:
        print("fss-sam2 download: error: give a NAME (or --list); known names: " + ", ".join(dl.REGISTRY),
              file=sys.stderr)
        return 2
    for name in a.names:  # every name is checked before anything is fetched
        try:
            dl.resolve(name)
        except dl.UnknownNameError as e:
            print(f"fss-sam2 download: error: {e}", file=sys.stderr)
            return 2
    for name in a.names:
        try:
            paths = dl.download(name, a.out, url_base=a.url_base, progress=not a.quiet, timeout=a.timeout,
                                retries=a.retries)
        except dl.DownloadError as e:
            print(f"fss-sam2 download: error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"fss-sam2 download: interrupted; run the same command again to resume {name}", file=sys.stderr)
            return 130
        hint = dl.NEXT_STEPS.get(name)
        if hint:
            print(f"{name}: {len(paths)} file(s) in {paths[0].parent}; next: {hint}")
    return 0


def _epilog() -> str:
    missing = dl.unverified_files()
    verified = [(b.name, f) for b in dl.REGISTRY.values() for f in b.files if f.verified]
    lines = ["names:"]
    lines += [f"  {b.name:<15} {b.description} ({', '.join(f.filename for f in b.files)})" for b in dl.REGISTRY.values()]
    lines.append("")
    lines.append("checked against a published checksum:")
    lines += [f"  {f.filename}: {f.checksum_algo} from {f.checksum_source}" for _, f in verified]
    lines.append("NO published checksum (the sha256 is computed after download, printed and written to "
                 "<file>.sha256, and checked on later runs):")
    lines += [f"  {fn}" for _, fn in missing]
    lines.append("")
    lines.append("Partial downloads are kept as <file>.part and resumed (HTTP Range) by the next run; size and "
                 "checksum are checked before the file gets its final name; a mismatch deletes the .part and "
                 "exits with status 1.")
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    """Register `fss-sam2 download` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "download",
        help="fetch the official SAM 2.0 / DINOv2 weights and the raw VOC / SBD / COCO archives, verified",
        description="Downloads the official files over plain HTTP(S) (urllib), with a progress bar, resume of "
                    "partial files, and size + checksum checks. Weights go to pretrained/ (the paths the configs "
                    "name), datasets to data/raw/, unless --out is given. Archives are not extracted.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="what to fetch (see below, or --list)")
    p.add_argument("--list", action="store_true", help="list the names, files, sizes, URLs and checksum sources")
    p.add_argument("--out", type=arg.output_folder, help="target folder (default: pretrained/ for weights, data/raw/ for datasets)")
    p.add_argument("--url-base", default=None,
                   help=f"a mirror: fetch <URL_BASE>/<file name> instead of the official URL "
                        f"(default: ${dl.ENV_URL_BASE} if set)")
    p.add_argument("--timeout", type=arg.positive_float, default=60.0, help="seconds without data before giving up (default 60)")
    p.add_argument("--retries", type=arg.nonnegative_int, default=3, help="automatic resumes after an interruption (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_download_command)
