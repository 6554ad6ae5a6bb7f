#!/usr/bin/env bash
# Run `stforecast forecast` on the newest frame files of a directory, for cron and systemd timers.
#
# Usage: forecast-latest.sh [options] DIR [--] [stforecast forecast options...]
#   -n, --count N       newest N files (default 12; at least the model's input frames, a few
#                       more give slack: the forecast takes the last T_in at the model's step)
#   --by name|mtime     newest by file name (default: names that sort by time, e.g.
#                       66_20201031_120000.prcp-c10.nc) or by modification time
#   --glob PATTERN      only files matching PATTERN (default: *.nc, *.nc4, *.tif, *.tiff)
#   --min-age SECONDS   skip files modified less than SECONDS ago (still being written)
#   --until NAME        only files whose name sorts before or equal to NAME (replays, tests)
#   --dry-run           print the files and the command instead of running it
# Everything after DIR (or after --) goes to `stforecast forecast` (--model, --hours, --out,
# --log-json, ...); $STFORECAST_MODEL gives the model, $STFORECAST the command (default:
# stforecast). Only the directory listing is read, never the old files themselves, so a
# directory holding a month of frames costs no more than one holding an hour.
#
# Exit code: that of `stforecast forecast` (0 written, 1 bug, 2 usage, 3 input data, 4 input does
# not fit the model, 5 another run holds the lock, 124 a server job over its time limit, 130/143
# stopped by SIGINT/SIGTERM: the command is exec'd, so signals reach it); this script's own
# errors: 2 bad usage, 3 no such directory or no matching file. Needs GNU find, sort and tail
# (Linux).
#
# Example (cron, every 10 minutes):
#   forecast-latest.sh --count 12 --min-age 30 /data/radar -- --hours 2 --out /data/nowcasts/ --log-json
set -euo pipefail

die() { # one line on stderr, like stforecast itself
    echo "error: $2" >&2
    exit "$1"
}

count=12 by=name glob="" min_age=0 until="" dry_run=0 dir=""
while (($#)); do
    case "$1" in
        -n | --count) count="${2:-}"; shift 2 || die 2 "$1 needs a value" ;;
        --by) by="${2:-}"; shift 2 || die 2 "--by needs a value" ;;
        --glob) glob="${2:-}"; shift 2 || die 2 "--glob needs a value" ;;
        --min-age) min_age="${2:-}"; shift 2 || die 2 "--min-age needs a value" ;;
        --until) until="${2:-}"; shift 2 || die 2 "--until needs a value" ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) [[ -z "$dir" ]] && die 2 "unknown option $1 (options for stforecast go after DIR)"
            break ;;
        *) if [[ -z "$dir" ]]; then dir="$1"; shift; else break; fi ;;
    esac
done
if [[ -z "$dir" && $# -gt 0 ]]; then # DIR given after --
    dir="$1"
    shift
fi
[[ -n "$dir" ]] || die 2 "no directory given (usage: forecast-latest.sh [options] DIR [-- forecast options])"
[[ "$count" =~ ^[1-9][0-9]*$ ]] || die 2 "--count must be a positive integer, got '$count'"
[[ "$min_age" =~ ^[0-9]+$ ]] || die 2 "--min-age must be a number of seconds, got '$min_age'"
[[ "$by" == name || "$by" == mtime ]] || die 2 "--by must be name or mtime, got '$by'"
[[ -d "$dir" ]] || die 3 "$dir: no such directory (the frames to forecast from)"

# Which files: the listing only (find prints names, NUL-separated; nothing is opened)
if [[ -n "$glob" ]]; then
    match=(-name "$glob")
else
    match=(\( -name '*.nc' -o -name '*.nc4' -o -name '*.tif' -o -name '*.tiff' \))
fi
age=()
if ((min_age > 0)); then
    age=(! -newermt "@$(($(date +%s) - min_age))")
fi
# Byte order for names (sort and the --until comparison), whatever the locale; the caller's
# locale is restored for stforecast.
restore_locale=(env -u LC_ALL)
[[ -n "${LC_ALL+set}" ]] && restore_locale=(env "LC_ALL=$LC_ALL")
export LC_ALL=C
if [[ "$by" == mtime ]]; then
    mapfile -d '' -t listed < <(
        find "$dir" -mindepth 1 -maxdepth 1 \( -type f -o -type l \) "${match[@]}" "${age[@]}" \
            -printf '%T@ %p\0' | sort -z -n
    )
    listed=("${listed[@]#* }") # drop the time: "EPOCH PATH" -> "PATH"
else
    mapfile -d '' -t listed < <(
        find "$dir" -mindepth 1 -maxdepth 1 \( -type f -o -type l \) "${match[@]}" "${age[@]}" \
            -printf '%p\0' | sort -z
    )
fi

files=()
for path in "${listed[@]}"; do
    if [[ -n "$until" ]]; then
        name="${path##*/}"
        [[ "$name" < "$until" || "$name" == "$until" ]] || continue
    fi
    files+=("$path")
done
((${#files[@]})) || die 3 "no files matching ${glob:-*.nc/*.tif} in $dir${until:+ up to $until}"
start=$((${#files[@]} > count ? ${#files[@]} - count : 0))
files=("${files[@]:start}")

read -r -a stf <<<"${STFORECAST:-stforecast}" # e.g. STFORECAST="python -m stforecast"
if ((dry_run)); then
    printf '%s\n' "${files[@]}"
    printf 'would run:'
    printf ' %q' "${stf[@]}" forecast "${files[@]}" "$@"
    printf '\n'
    exit 0
fi
exec "${restore_locale[@]}" "${stf[@]}" forecast "${files[@]}" "$@"
