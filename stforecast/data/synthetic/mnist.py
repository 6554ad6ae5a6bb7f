"""Moving MNIST (Srivastava et al. 2015), regenerated: IDX files, the digit split, the generator.

The benchmark of the video-prediction papers. Its standard test file is not available here, so
it is regenerated from the MNIST digits with the standard generator, with a fixed seed for the
test set and an independent stream for training (see `moving_mnist_test` and
`split_mnist_digits` for why they cannot overlap).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from stforecast.data.synthetic.files import write_file
from stforecast.errors import ConfigError, InputError

# --------------------------------------------------------------------------------------------
# IDX files (the MNIST distribution format)
# --------------------------------------------------------------------------------------------

# Type code (third byte of the magic number) -> big-endian numpy dtype, as the IDX format defines.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not, told by its content) into a native-order array.

    The header is checked strictly (zero bytes, known type code, declared sizes against the bytes
    present) because a truncated download otherwise turns into silently wrong digits. Any problem
    raises `InputError` naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise InputError(f"{path}: corrupt or truncated gzip data ({err})") from None
    if len(raw) < 4:
        raise InputError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise InputError(f"{path}: not an IDX file (magic number 0x{raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    count = math.prod(shape)
    expected, present = count * dtype.itemsize, len(raw) - header
    if present != expected:
        what = "truncated" if present < expected else "corrupt"
        raise InputError(
            f"{path}: {what} IDX file: the header declares {'x'.join(map(str, shape))} values of "
            f"{dtype.name} ({expected} bytes) but {present} bytes follow"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def load_mnist_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read MNIST images `(N, 28, 28)` uint8 from an IDX file, refusing e.g. the labels file."""
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise InputError(
            f"{path}: expected MNIST images (N, 28, 28) uint8, got shape {images.shape} "
            f"{images.dtype.name} (a labels file?)"
        )
    return images


# --------------------------------------------------------------------------------------------
# Moving MNIST
# --------------------------------------------------------------------------------------------

# Speed of every digit: this fraction of the free range (canvas - digit) per frame, as in the
# standard generator (64 - 28 = 36 pixels, so 3.6 pixels per frame).
MOVING_MNIST_STEP = 0.1

# Seed of the regenerated test set: the arXiv number of Srivastava et al. 2015 (1502.04681).
MOVING_MNIST_TEST_SEED = 150204681

# Every `_TEST_STRIDE`-th digit of the MNIST test file (indices 0, 5, 10, ...) is reserved for the
# test set; the other 80 % feed the training stream.
_TEST_STRIDE = 5

# Sequences rendered at once: bounds the temporary index arrays to ~ 30 MB.
_RENDER_CHUNK = 256


def split_mnist_digits(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the MNIST test digits into (training, test) pools, disjoint by construction.

    Every fifth digit (indices 0, 5, 10, ...) goes to the test pool (2,000 of 10,000), the rest to
    training. A stride rather than a block because the MNIST test file is ordered by writer group
    (its first 5,000 digits come from the cleaner NIST writers), and both pools should see both.
    """
    digits = np.asarray(digits)
    mask = np.zeros(len(digits), dtype=bool)
    mask[::_TEST_STRIDE] = True
    if mask.all() or not mask.any():
        raise ConfigError(f"need at least {_TEST_STRIDE} digits to split, got {len(digits)}")
    return digits[~mask], digits[mask]


def _check_digits(digits: np.ndarray, size: int) -> np.ndarray:
    digits = np.asarray(digits)
    if digits.ndim != 3 or digits.shape[0] == 0:
        raise ConfigError(f"digits must be an array (N, h, w) with N >= 1, got {digits.shape}")
    if digits.dtype != np.uint8:
        raise ConfigError(f"digits must be uint8 (0..255) as read from MNIST, got {digits.dtype}")
    if max(digits.shape[1:]) > size:
        raise ConfigError(f"canvas size {size} is smaller than the digits {digits.shape[1:]}")
    return digits


def _check_counts(n_sequences: int, seq_len: int, n_digits: int) -> None:
    for name, value in (("n_sequences", n_sequences), ("seq_len", seq_len), ("n_digits", n_digits)):
        if int(value) != value or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _trajectories(
    rng: np.random.Generator, n: int, n_digits: int, seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in [0, 1] of the free range, (n, seq_len, n_digits) each for rows and columns.

    Start uniform in the unit square, direction uniform on the circle, constant speed
    `MOVING_MNIST_STEP`. A digit that reaches an edge stops there for that frame and its velocity
    component across the edge changes sign: the bounce of the standard generator. The first frame
    is already one step from the drawn start, also as there.
    """
    pos = rng.random((2, n, n_digits))
    angle = rng.random((n, n_digits)) * (2.0 * np.pi)
    vel = np.stack([np.sin(angle), np.cos(angle)]) * MOVING_MNIST_STEP
    out = np.empty((seq_len, 2, n, n_digits))
    for t in range(seq_len):
        pos = pos + vel
        hit = (pos <= 0.0) | (pos >= 1.0)
        pos = np.clip(pos, 0.0, 1.0)
        vel = np.where(hit, -vel, vel)
        out[t] = pos
    return out[:, 0].transpose(1, 0, 2), out[:, 1].transpose(1, 0, 2)


def _generate(
    digits: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    seq_len: int,
    size: int,
    n_digits: int,
) -> np.ndarray:
    """Sequences (n, seq_len, size, size) uint8 from a generator: trajectories, digits, render."""
    dh, dw = digits.shape[1:]
    rows, cols = _trajectories(rng, n, n_digits, seq_len)
    top = (rows * (size - dh)).astype(np.intp)  # truncation, as the standard generator
    left = (cols * (size - dw)).astype(np.intp)
    choice = rng.integers(0, len(digits), size=(n, n_digits))
    out = np.zeros((n, seq_len, size, size), dtype=np.uint8)
    di = np.arange(dh)[:, None]
    dj = np.arange(dw)[None, :]
    for lo in range(0, n, _RENDER_CHUNK):
        hi = min(n, lo + _RENDER_CHUNK)
        seq = np.arange(lo, hi)[:, None, None, None]
        step = np.arange(seq_len)[None, :, None, None]
        for k in range(n_digits):
            # Within one digit slot no two pastes share a (sequence, frame), so a gathered
            # read-max-write is exact; slots are applied one after another: pixel-wise maximum.
            r = top[lo:hi, :, k, None, None] + di
            c = left[lo:hi, :, k, None, None] + dj
            patch = digits[choice[lo:hi, k]][:, None]
            out[seq, step, r, c] = np.maximum(out[seq, step, r, c], patch)
    return out


def moving_mnist(
    digits: np.ndarray,
    n_sequences: int,
    *,
    seq_len: int = 20,
    size: int = 64,
    n_digits: int = 2,
    seed: int,
) -> np.ndarray:
    """Moving MNIST sequences `(N, T, size, size)` uint8 with the standard generator.

    Each sequence draws `n_digits` digits from `digits` (uniformly, with replacement), a start in
    the free range and a direction; every digit moves at `MOVING_MNIST_STEP` of the free range per
    frame, bounces off the edges and the digits are combined by pixel-wise maximum. The result is a
    pure function of the arguments (numpy's PCG64 seeded with `seed`). Divide by 255 for [0, 1].
    """
    _check_counts(n_sequences, seq_len, n_digits)
    digits = _check_digits(digits, size)
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    return _generate(digits, n_sequences, rng, seq_len=seq_len, size=size, n_digits=n_digits)


def moving_mnist_test(
    digits: np.ndarray,
    n: int = 10000,
    *,
    seed: int = MOVING_MNIST_TEST_SEED,
    seq_len: int = 20,
    size: int = 64,
    n_digits: int = 2,
) -> np.ndarray:
    """The regenerated Moving MNIST test set `(n, T, 64, 64)` uint8: "Moving MNIST (regenerated)".

    `digits` is the whole MNIST test file (10,000 digits; the 60,000 training digits are not
    available here). Only its test pool (`split_mnist_digits`: every fifth digit) is used, with
    `seed` = `MOVING_MNIST_TEST_SEED`, so the test set is fixed and shares no digit with the
    training stream. Unlike the original `mnist_test_seq.npy`, which is `(T, N, 64, 64)`, the
    sequence axis comes first.
    """
    _, test_digits = split_mnist_digits(digits)
    return moving_mnist(test_digits, n, seq_len=seq_len, size=size, n_digits=n_digits, seed=seed)


def write_npy(path: str | os.PathLike[str], array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Save an array as `.npy` atomically (the name is used as given, no suffix is added)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)

    return write_file(path, write, overwrite)
