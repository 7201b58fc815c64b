"""Does this interpreter have every package of a requirements file (default requirements.txt) at an admissible version? Exit 0 if so, else
1 with one line per missing or out-of-range package. Standard library only, so any Python can run it:

    python3 scripts/check_env.py [requirements.txt | requirements-test.txt]
"""
import os
import re
import sys
from importlib import metadata

OPS = {">=": lambda v, b: v >= b, "<=": lambda v, b: v <= b, ">": lambda v, b: v > b, "<": lambda v, b: v < b,
       "==": lambda v, b: v == b, "!=": lambda v, b: v != b}


def release(text):
    """'2.11.0+cu130' -> (2, 11, 0); pre-release and local parts are ignored (ranges here are on releases)."""
    return tuple(int(p) for p in re.match(r"\d+(\.\d+)*", text).group(0).split("."))


def admissible(version, spec):
    v = release(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, bound = re.match(r"(>=|<=|==|!=|>|<)\s*(.+)", clause).groups()
        b = release(bound)
        width = max(len(v), len(b))
        if not OPS[op](v + (0,) * (width - len(v)), b + (0,) * (width - len(b))):
            return False
    return True


def problems(path):
    out = []
    for line in open(path):
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("-r "):  # an included file, relative to this one
            out += problems(os.path.join(os.path.dirname(path), line[3:].strip()))
            continue
        name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", line).groups()
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(f"{name}: not installed")
            continue
        if spec and not admissible(version, spec):
            out.append(f"{name}: {version} is outside {spec}")
    return out


if __name__ == "__main__":
    found = problems(sys.argv[1] if len(sys.argv) > 1 else "requirements.txt")
    for line in found:
        print(line)
    sys.exit(1 if found else 0)
