"""`python -m stforecast ...` runs the command line (also what `torchrun -m stforecast` uses)."""

from stforecast.cli.app import main

if __name__ == "__main__":
    main()
