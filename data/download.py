"""Download the movie-poster dataset into data/posters (train.csv + Images/ + samples/).

    python data/download.py [--dest data/posters] [--url URL] [--keep-zip]

It fetches the public archive of https://github.com/laxmimerit/Movies-Poster_Dataset (about
7,900 posters), resumes an interrupted download, unpacks it refusing any member that could
land outside the destination, and checks the result. Standard library only, plus tqdm for the
progress bar.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import stat
import sys
import zipfile
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from tqdm import tqdm

DEFAULT_URL = "https://github.com/laxmimerit/Movies-Poster_Dataset/archive/refs/heads/master.zip"
DEFAULT_DEST = Path(__file__).resolve().parent / "posters"
# The real archive unpacks to a few hundred MB; anything claiming more than this is refused as a
# zip bomb before a byte is written.
MAX_UNPACKED_BYTES = 20 * 2**30


class DownloadError(Exception):
    """A problem the user can act on; the command line prints it as one line."""


def _check_url(url: str) -> None:
    # Plain HTTP only to this machine (the tests' local server); the real download is HTTPS.
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return
    raise DownloadError(f"{url}: only https:// URLs are allowed (http:// only for 127.0.0.1)")


def download(url: str, dest_file, progress: bool = True, timeout: float = 60) -> Path:
    """Stream url into dest_file. The bytes go to dest_file + ".part" first; if that exists
    from an interrupted run, ask the server for the rest (an HTTP Range request) and append,
    or start over when the server sends the whole file instead. Returns dest_file."""
    _check_url(url)
    dest_file = Path(dest_file)
    part = dest_file.with_name(dest_file.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"User-Agent": "nn-posters-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urlopen(request, timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and have:   # the .part is not a prefix the server knows: start over
            part.unlink()
            return download(url, dest_file, progress, timeout)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (URLError, OSError) as e:
        raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)})") from None

    with response:
        _check_url(response.geturl())   # also after redirects
        resuming = have and response.status == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        if not resuming:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resuming else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest_file.name,
                     disable=not progress) as bar:
            try:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            except OSError as e:
                raise DownloadError(f"{url}: connection lost ({e}); run again to resume") from None
    if total is not None and part.stat().st_size != total:
        got = part.stat().st_size
        raise DownloadError(f"{url}: got {got} of {total} bytes; run again to resume")
    os.replace(part, dest_file)
    return dest_file


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The path components of a member, refusing anything that could escape the destination."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise DownloadError(f"refusing archive member with an absolute path: {name!r}")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise DownloadError(f"refusing archive member with '..' in its path: {name!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DownloadError(f"refusing archive member that is a symbolic link: {name!r}")
    return parts


def safe_extract(zip_path, dest) -> Path:
    """Unpack zip_path into dest (which must not exist yet), dropping the archive's single
    top-level folder. Every member is checked before anything is written: absolute paths,
    drive letters, '..' components and symbolic links are refused (DownloadError)."""
    dest = Path(dest)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{zip_path}: not a zip archive ({e}); delete it, run again") from None
    with archive:
        members = [(info, _member_parts(info)) for info in archive.infolist()]
        if sum(info.file_size for info, _ in members) > MAX_UNPACKED_BYTES:
            raise DownloadError(f"{zip_path}: refusing to unpack over {MAX_UNPACKED_BYTES} bytes")
        tops = {parts[0] for _, parts in members if parts}
        strip = 1 if len(tops) == 1 and all(len(p) > 1 or i.is_dir() for i, p in members) else 0
        # Unpack beside dest and rename at the end, so dest is either complete or absent.
        staging = dest.with_name(dest.name + ".unpacking")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for info, parts in members:
            target = staging.joinpath(*parts[strip:])
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    os.replace(staging, dest)
    return dest


def check_layout(root) -> dict:
    """Check an unpacked dataset: train.csv with Id and Genre columns, and Images/*.jpg.
    Returns counts {rows, posters, rows_without_poster}; raises DownloadError otherwise."""
    root = Path(root)
    csv_path, images = root / "train.csv", root / "Images"
    if not csv_path.is_file() or not images.is_dir():
        raise DownloadError(f"{root}: expected train.csv and Images/ after unpacking")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if header[:2] != ["Id", "Genre"]:
            raise DownloadError(f"{csv_path}: header starts {header[:2]}, expected ['Id', 'Genre']")
        ids = [row[0] for row in reader if row]
    posters = {p.stem for p in images.glob("*.jpg")}
    if not posters:
        raise DownloadError(f"{images}: no .jpg posters")
    return {"rows": len(ids), "posters": len(posters),
            "rows_without_poster": sum(i not in posters for i in ids)}


def _move_samples(root: Path) -> None:
    # Upstream keeps three unlabelled posters (endgame, fast, saaho) at its top level; they go
    # to samples/, where the shared copy of the dataset keeps them.
    loose = list(root.glob("*.jpg"))
    if loose:
        (root / "samples").mkdir(exist_ok=True)
        for f in loose:
            os.replace(f, root / "samples" / f.name)


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, like every other error of this script
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> int:
    parser = _Parser(prog="download.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                        help=f"folder to create (default: {DEFAULT_DEST})")
    parser.add_argument("--url", default=DEFAULT_URL,
                        help="archive to fetch (default: %(default)s)")
    parser.add_argument("--keep-zip", action="store_true", help="keep the archive after unpacking")
    args = parser.parse_args(argv)
    dest = args.dest
    try:
        if dest.exists() and any(dest.iterdir()):
            try:
                counts = check_layout(dest)
            except DownloadError as e:
                raise DownloadError(f"{dest} exists but is not the dataset ({e}); move it away "
                                    f"or choose another --dest") from None
            print(f"{dest} already holds the dataset: {_describe(counts)}")
            return 0
        zip_file = dest.with_name(dest.name + ".zip")
        dest.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {args.url}")
        download(args.url, zip_file)
        if dest.exists():
            dest.rmdir()   # empty: safe_extract wants to create it
        safe_extract(zip_file, dest)
        _move_samples(dest)
        counts = check_layout(dest)
        if not args.keep_zip:
            zip_file.unlink()
    except (DownloadError, OSError) as e:
        print(f"download.py: error: {e}", file=sys.stderr)
        return 2
    print(f"unpacked into {dest}: {_describe(counts)}")
    print(f"use it with --data {dest} or POSTERS_DIR={dest} (data/posters is found by default)")
    return 0


def _describe(counts: dict) -> str:
    return (f"train.csv has {counts['rows']} rows, Images/ has {counts['posters']} posters, "
            f"{counts['rows_without_poster']} rows have no poster")


if __name__ == "__main__":
    sys.exit(main())
