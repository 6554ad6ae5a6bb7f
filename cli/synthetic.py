"""`stforecast synthetic`: write the built-in data sets (rain cells, Moving MNIST) to files.

The engine is imported inside each command so that `stforecast --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stforecast.cli.errors import fail
from stforecast.errors import StforecastError

synthetic = typer.Typer(
    help="Write synthetic data sets: an advected rain-cell archive (CF NetCDF, the default data "
    "set) or regenerated Moving MNIST sequences (.npy).",
    no_args_is_help=True,
)


@synthetic.command("rain-cells")
def rain_cells(
    out: Annotated[Path, typer.Option("--out", help="NetCDF file to write.")],
    frames: Annotated[int, typer.Option(help="Number of frames.")] = 288,
    size: Annotated[int, typer.Option(help="Grid size in pixels (square, 1 km each).")] = 64,
    step_minutes: Annotated[int, typer.Option(help="Minutes between frames.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same archive).")] = 0,
    coverage_radius_km: Annotated[
        float | None,
        typer.Option(help="Mark pixels beyond this distance from the centre as no coverage (NaN)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Write an archive of advected rain cells (rain rate in mm/h, CF-1.10 NetCDF).

    Example: stforecast synthetic rain-cells --out data/rain_cells.nc --frames 288 --seed 0
    """
    from stforecast.data.synthetic import write_rain_cells

    try:
        path = write_rain_cells(
            out,
            overwrite=overwrite,
            frames=frames,
            size=size,
            step_minutes=step_minutes,
            seed=seed,
            coverage_radius_km=coverage_radius_km,
        )
    except StforecastError as err:
        raise fail(str(err), err.exit_code) from None
    typer.echo(f"wrote {path}: {frames} frames of {size}x{size} km every {step_minutes} min")


@synthetic.command("moving-mnist")
def moving_mnist(
    mnist: Annotated[
        Path, typer.Option("--mnist", help="MNIST images IDX file (t10k-images-idx3-ubyte.gz).")
    ],
    out: Annotated[Path, typer.Option("--out", help=".npy file to write.")],
    sequences: Annotated[int, typer.Option(help="Number of sequences.")] = 10000,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed (default: the documented test-set seed, 150204681)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Write the regenerated Moving MNIST test set as uint8 (N, 20, 64, 64) .npy.

    Uses only the test pool of the digits (every fifth), never those of the training stream.

    10,000 sequences take 820 MB.

    Example: stforecast synthetic moving-mnist --mnist t10k-images-idx3-ubyte.gz --out mm.npy
    """
    from stforecast.data.synthetic import (
        MOVING_MNIST_TEST_SEED,
        load_mnist_images,
        moving_mnist_test,
        write_npy,
    )

    try:
        if out.exists() and not overwrite:  # fail before generating, not after
            raise fail(f"{out}: already exists (--overwrite replaces it)", 2)
        digits = load_mnist_images(mnist)
        frames = moving_mnist_test(
            digits, sequences, seed=MOVING_MNIST_TEST_SEED if seed is None else seed
        )
        path = write_npy(out, frames, overwrite=overwrite)
    except StforecastError as err:
        raise fail(str(err), err.exit_code) from None
    typer.echo(f"wrote {path}: {frames.shape[0]} sequences of {frames.shape[1]} frames, uint8")
