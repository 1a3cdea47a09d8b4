"""How much of `src/` one command executes in its main process: the files and functions called.

`python -m benchmarks.trace_spine [--out counts.json] -- train.py model=mesonet trainer.max_epochs=1` runs the
entry point in this interpreter under a profile hook (`sys.setprofile`, threads included) and counts the
distinct files of `src/` and the distinct functions (file, first line, name) whose code ran; also the files
whose functions ran (not only their module body, as an import runs it). Worker processes (DataLoader
workers, cache-build pools) are not counted: the main process is what a reader traces.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- <script.py> [overrides]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    src = str(ROOT / "src") + "/"
    functions: set[tuple[str, int, str]] = set()

    def hook(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename.startswith(src):
                functions.add((code.co_filename[len(str(ROOT)) + 1 :], code.co_firstlineno, code.co_name))

    sys.argv = [str(ROOT / command[0]), *command[1:]]
    sys.path.insert(0, str(ROOT))
    threading.setprofile(hook)
    sys.setprofile(hook)
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    files = sorted({f for f, _, _ in functions})
    bodies = {
        (f, line, n) for f, line, n in functions if not n.startswith("<")
    }  # no modules, lambdas, comprehensions
    # files whose functions ran, not only their module body (an import): what a reader steps through
    stepped = sorted({f for f, _, _ in bodies})
    result = {
        "command": " ".join(command),
        "exit_code": code,
        "files": len(files),
        "files_with_functions": len(stepped),
        "functions": len(bodies),
        "file_list": files,
        "stepped_file_list": stepped,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "file_list"}), file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
